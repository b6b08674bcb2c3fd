"""NCF / NeuMF (He et al., WWW 2017): a GMF tower and an MLP tower fused by a linear layer, plus an item bias.

``s(u, i) = w_g · (p_u ⊙ q_i) + w_m · MLP([p'_u, q'_i]) + b + b_i`` with separate embeddings for the two
towers. No user bias, as in BPR (``models.bpr``): under the BPR loss it has a zero gradient and it changes no
ranking. The MLP has ReLU after every layer (the paper's setting: 128 → 64 → 64 → 64 → 64).

Initialisation: embedding and bias tables N(0, 0.01²) as the reference code; the linear layers keep PyTorch's
default (Kaiming-uniform weights, uniform biases), because N(0, 0.01²) weights in a four-layer tower shrink its
output to a near-constant at the start of pre-training. No dropout, so scoring is deterministic.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from melonbench.models.base import Recommender, normal_embedding


def score_all_budget(device: torch.device) -> int:
    """Most elements of one ``[B, items, hidden]`` intermediate in :meth:`NCF.score_all`.

    On CPU a 2 MiB intermediate stays in cache: B = 256 over 1,433 items took about 55 ms on a 2-core CPU,
    against about 600 ms in one 128 MiB chunk. On an accelerator, large chunks keep kernel launches few.
    """
    return 1 << 19 if device.type == "cpu" else 1 << 26


class NCF(Recommender):
    """Neural collaborative filtering with GMF and MLP towers.

    Parameters
    ----------
    n_users, n_items, dim :
        As :class:`~melonbench.models.base.Recommender`; ``dim`` is the size of each of the four embeddings.
    layers : tuple[int, ...]
        Output sizes of the MLP layers; the first takes ``2 * dim`` inputs.
    """

    name = "ncf"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: tuple[int, ...] = (64, 64, 64, 64)) -> None:
        super().__init__(n_users, n_items, dim)
        if not layers:
            raise ValueError("NCF needs at least one MLP layer")
        self.layers = tuple(layers)
        self.user_gmf = normal_embedding(n_users, dim)
        self.item_gmf = normal_embedding(n_items, dim)
        self.user_mlp = normal_embedding(n_users, dim)
        self.item_mlp = normal_embedding(n_items, dim)
        self.item_bias = normal_embedding(n_items, 1)
        sizes = (2 * dim, *self.layers)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.fusion = nn.Linear(dim + self.layers[-1], 1)

    def _first_layer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first MLP layer split as ``W [p', q'] + b = W_u p' + W_i q' + b``."""
        first = self.mlp[0]
        return first.weight[:, : self.dim], first.weight[:, self.dim :], first.bias

    def _tower(self, h: torch.Tensor, gmf_part: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """From the first layer's pre-activation ``h [..., H1]`` to the fused score, adding ``gmf_part [...]``.

        ``inplace`` applies ReLU in place (safe for autograd: neither the sum nor ``addmm`` before it needs its
        output for the backward pass); it saves a memory pass per layer in :meth:`score_all`.
        """
        relu = torch.relu_ if inplace else torch.relu
        h = relu(h)
        for layer in self.mlp[1:]:
            h = relu(layer(h))
        w_mlp = self.fusion.weight[0, self.dim :]  # [H]
        return gmf_part + h @ w_mlp + self.fusion.bias

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        w_u, w_i, b = self._first_layer()
        w_gmf = self.fusion.weight[0, : self.dim]  # [D]
        gmf = ((self.user_gmf(users) * w_gmf).unsqueeze(1) * self.item_gmf(items)).sum(-1)  # [B, C]
        h = (self.user_mlp(users) @ w_u.T + b).unsqueeze(1) + self.item_mlp(items) @ w_i.T  # [B, C, H1]
        out = self._tower(h, gmf)
        return out + self.item_bias(items).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Score every item; the item half of the first MLP layer is computed once for the whole catalogue.

        Items are processed in chunks so that one ``[B, chunk, H]`` intermediate stays within
        :func:`score_all_budget` elements: the cost is ``B × n_items`` rows through the MLP, not more memory.
        """
        w_u, w_i, b = self._first_layer()
        w_gmf = self.fusion.weight[0, : self.dim]
        gmf = (self.user_gmf(users) * w_gmf) @ self.item_gmf.weight.T  # [B, N]
        user_part = (self.user_mlp(users) @ w_u.T + b).unsqueeze(1)  # [B, 1, H1]
        item_part = self.item_mlp.weight @ w_i.T  # [N, H1]
        chunk = max(1, score_all_budget(users.device) // max(1, users.shape[0] * w_u.shape[0]))
        out = torch.cat(
            [
                self._tower(user_part + item_part[start : start + chunk], gmf[:, start : start + chunk], inplace=True)
                for start in range(0, self.n_items, chunk)
            ],
            dim=1,
        )
        return out + self.item_bias.weight.T

    def user_tables(self) -> dict[str, nn.Embedding]:
        return {"user_gmf": self.user_gmf, "user_mlp": self.user_mlp}

    def item_tables(self) -> dict[str, nn.Embedding]:
        return {"item_gmf": self.item_gmf, "item_mlp": self.item_mlp, "item_bias": self.item_bias}

    def dense_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if n.startswith(("mlp.", "fusion."))}

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "layers": list(self.layers)}
