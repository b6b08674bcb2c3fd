"""BPR-MF (Rendle et al., UAI 2009): a user·item dot product plus an item bias.

No user bias: under the BPR loss a user's bias cancels in ``s(u, j) − s(u, i)`` (its gradient is exactly zero, so it
never moves from its initialisation), and it adds the same constant to every candidate of a user, so it changes no
ranking either. The item bias (a popularity term, absent from the MeLON paper's plain dot product) is kept.
"""

from __future__ import annotations

import torch
from torch import nn

from melonbench.models.base import Recommender, normal_embedding


class BPR(Recommender):
    """Matrix factorisation scored as ``s(u, i) = e_u · e_i + b_i``.

    Every table is initialised N(0, 0.01²). See :class:`~melonbench.models.base.Recommender` for the contract.
    """

    name = "bpr"

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__(n_users, n_items, dim)
        self.user_emb = normal_embedding(n_users, dim)
        self.item_emb = normal_embedding(n_items, dim)
        self.item_bias = normal_embedding(n_items, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        e_u = self.user_emb(users)  # [B, D]
        e_i = self.item_emb(items)  # [B, C, D]
        dot = (e_i * e_u.unsqueeze(1)).sum(-1)  # [B, C]
        return dot + self.item_bias(items).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        dot = self.user_emb(users) @ self.item_emb.weight.T  # [B, N]
        return dot + self.item_bias.weight.T

    def user_tables(self) -> dict[str, nn.Embedding]:
        return {"user_emb": self.user_emb}

    def item_tables(self) -> dict[str, nn.Embedding]:
        return {"item_emb": self.item_emb, "item_bias": self.item_bias}

    def dense_parameters(self) -> dict[str, nn.Parameter]:
        return {}
