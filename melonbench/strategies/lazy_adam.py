"""Adam restricted to the embedding rows a batch touches ("lazy" Adam), plus plain Adam for dense weights.

With ``torch.optim.Adam`` and weight decay, every row of an embedding table moves at every step (the decay
term is a gradient on all rows). Lazy Adam keeps per-row moments and a per-row step count, and updates only the
rows it is given, so rows a batch does not touch stay exactly unchanged. The L2 term is added to the touched rows'
gradients, as ``torch.optim.Adam`` does for all of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LazyAdam:
    """Row-wise Adam over embedding tables and ordinary Adam over the remaining parameters.

    Parameters
    ----------
    user_tables, item_tables : dict[str, nn.Embedding]
        Tables indexed by user id and by item id.
    dense : dict[str, nn.Parameter]
        Other parameters (updated densely every step).
    lr, weight_decay : float
        As in ``torch.optim.Adam``.
    betas : tuple[float, float]
    eps : float
    """

    def __init__(
        self,
        user_tables: dict[str, nn.Embedding],
        item_tables: dict[str, nn.Embedding],
        dense: dict[str, nn.Parameter],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.tables = {
            **{f"user.{k}": (v.weight, "user") for k, v in user_tables.items()},
            **{f"item.{k}": (v.weight, "item") for k, v in item_tables.items()},
        }
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = {k: torch.zeros_like(w) for k, (w, _) in self.tables.items()}
        self.v = {k: torch.zeros_like(w) for k, (w, _) in self.tables.items()}
        self.steps = {
            k: torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device) for k, (w, _) in self.tables.items()
        }
        params = list(dense.values())
        self.dense = (
            torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, fused=True)
            if params
            else None
        )

    def zero_grad(self) -> None:
        for w, _ in self.tables.values():
            w.grad = None
        if self.dense is not None:
            self.dense.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        """Apply one Adam step to the given (unique) user and item rows and to every dense parameter."""
        b1, b2 = self.betas
        for key, (w, kind) in self.tables.items():
            if w.grad is None:
                continue
            rows = user_rows if kind == "user" else item_rows
            g = w.grad[rows] + self.weight_decay * w[rows]
            m = self.m[key][rows].mul_(b1).add_(g, alpha=1 - b1)
            v = self.v[key][rows].mul_(b2).addcmul_(g, g, value=1 - b2)
            t = self.steps[key][rows] + 1
            self.m[key][rows], self.v[key][rows], self.steps[key][rows] = m, v, t
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            w[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)
        if self.dense is not None:
            self.dense.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "v": self.v,
            "steps": self.steps,
            "dense": self.dense.state_dict() if self.dense is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self.m:
            self.m[key].copy_(state["m"][key])
            self.v[key].copy_(state["v"][key])
            self.steps[key].copy_(state["steps"][key])
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])
