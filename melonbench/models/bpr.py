"""BPR-MF (Rendle et al., UAI 2009): a user·item dot product plus user and item biases."""

from __future__ import annotations

import torch
from torch import nn

from melonbench.models.base import Recommender, normal_embedding


class BPR(Recommender):
    """Matrix factorisation scored as ``s(u, i) = e_u · e_i + b_u + b_i``.

    Every table is initialised N(0, 0.01²). See :class:`~melonbench.models.base.Recommender` for the contract.
    """

    name = "bpr"

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__(n_users, n_items, dim)
        self.user_emb = normal_embedding(n_users, dim)
        self.item_emb = normal_embedding(n_items, dim)
        self.user_bias = normal_embedding(n_users, 1)
        self.item_bias = normal_embedding(n_items, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        e_u = self.user_emb(users)  # [B, D]
        e_i = self.item_emb(items)  # [B, C, D]
        dot = (e_i * e_u.unsqueeze(1)).sum(-1)  # [B, C]
        return dot + self.user_bias(users) + self.item_bias(items).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        dot = self.user_emb(users) @ self.item_emb.weight.T  # [B, N]
        return dot + self.user_bias(users) + self.item_bias.weight.T

    def user_tables(self) -> dict[str, nn.Embedding]:
        return {"user_emb": self.user_emb, "user_bias": self.user_bias}

    def item_tables(self) -> dict[str, nn.Embedding]:
        return {"item_emb": self.item_emb, "item_bias": self.item_bias}

    def dense_parameters(self) -> dict[str, nn.Parameter]:
        return {}
