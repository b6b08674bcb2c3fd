"""MeLON's per-sample gradients and row-column layout: what a set of interactions touches, and each gradient.

Layout of the touched parameters of an interaction x = (u, i, j) (u user, i positive, j sampled negative):

- **row columns** ``C``: for every user table of the recommender (in ``user_tables()`` order) its row of u, then
  for every item table (in ``item_tables()`` order) its row of i then its row of j; the coordinates of each row
  in order. BPR: ``user_emb[u] (64) | item_emb[i] (64) | item_emb[j] (64) | item_bias[i] | item_bias[j]`` = 194
  columns.
- **dense columns** ``P``: every dense parameter (``dense_parameters()`` order) flattened. NCF: 20,865.

Never a Python loop over interactions: BPR-MF in closed form, any other recommender with ``torch.func``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from melonbench.models.base import Recommender


@dataclasses.dataclass(frozen=True)
class TableSlots:
    """Where one recommender table sits in the row columns.

    ``slots`` is 1 for a user table (the user) and 2 for an item table (positive, negative); the table occupies
    columns ``start : start + slots * dim`` laid out as (slot, coordinate).
    """

    name: str
    table: nn.Embedding
    user: bool
    start: int
    dim: int

    @property
    def slots(self) -> int:
        return 1 if self.user else 2

    @property
    def width(self) -> int:
        return self.slots * self.dim

    def ids(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Row ids the table's slots use: ``Long[n, slots]``."""
        return users[:, None] if self.user else torch.stack((pos, neg), dim=1)


def table_slots(model: Recommender) -> list[TableSlots]:
    """The row-column layout of ``model`` (see the module docstring)."""
    out, start = [], 0
    for user, tables in ((True, model.user_tables()), (False, model.item_tables())):
        for name, table in tables.items():
            entry = TableSlots(name, table, user, start, table.weight.shape[1])
            out.append(entry)
            start += entry.width
    return out


def side_columns(layout: list[TableSlots], device) -> list[tuple[list[TableSlots], torch.Tensor]]:
    """The user tables, then the item tables, each with their row columns ordered (slot, table, coordinate), so
    that one side's tables are handled side by side as one ``[rows, Σ dim]`` table."""
    out = []
    for user in (True, False):
        group = [t for t in layout if t.user == user]
        if group:
            cols = [t.start + s * t.dim + k for s in range(group[0].slots) for t in group for k in range(t.dim)]
            out.append((group, torch.tensor(cols, device=device)))
    return out


def split_side(group: list[TableSlots], side: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{table name: its columns}`` of a side's tables placed side by side (``[rows, Σ dim]``)."""
    return dict(zip([t.name for t in group], side.split([t.dim for t in group], 1)))


def row_mask(t: TableSlots, users, items, negatives) -> torch.Tensor:
    """``Bool[rows]``: the rows of table ``t`` that the interactions use."""
    mask = torch.zeros(t.table.weight.shape[0], dtype=torch.bool, device=users.device)
    mask[t.ids(users, items, negatives).reshape(-1)] = True
    return mask


@dataclasses.dataclass(frozen=True)
class Touched:
    """The parameters a set of interactions touches, their values and per-interaction gradients.

    Attributes
    ----------
    losses : Float[n]
        Per-interaction BPR losses at the current parameters.
    theta : Float[n, C]
        Row-column values (each interaction's own rows).
    grads : Float[n, C]
        ``∂ℓ_x/∂θ`` for those row columns.
    ids : list[Long[n, slots]]
        Row ids per table (same order as :func:`table_slots`).
    dense_theta : Float[P]
        Dense parameters flattened (empty for BPR).
    dense_grads : Float[n, P]
        Per-interaction gradients of the dense parameters.
    """

    losses: torch.Tensor
    theta: torch.Tensor
    grads: torch.Tensor
    ids: list[torch.Tensor]
    dense_theta: torch.Tensor
    dense_grads: torch.Tensor


def gather_rows(layout: list[TableSlots], users, pos, neg) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Row-column values ``Float[n, C]`` (detached) and the row ids of each table."""
    ids = [t.ids(users, pos, neg) for t in layout]
    theta = torch.cat([t.table.weight.detach()[i].flatten(1) for t, i in zip(layout, ids)], dim=1)
    return theta, ids


def flat_dense(model: Recommender) -> torch.Tensor:
    """Dense parameters flattened into ``Float[P]`` (detached)."""
    params = [p.detach().reshape(-1) for p in model.dense_parameters().values()]
    if not params:
        return torch.zeros(0, device=next(model.parameters()).device)
    return torch.cat(params)


def unflatten_dense(model: Recommender, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flat_dense`: ``{name: tensor of the parameter's shape}`` (keeps autograd)."""
    out, start = {}, 0
    for name, p in model.dense_parameters().items():
        out[name] = flat[start : start + p.numel()].view_as(p)
        start += p.numel()
    return out


def bpr_closed_form(theta: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BPR-MF losses and per-interaction gradients in closed form, on the row columns of :func:`table_slots`.

    With Δ = s_j − s_i and ℓ = softplus(Δ), dℓ/dΔ = σ(Δ): ∂ℓ/∂e_u = σ(Δ)(e_j − e_i), ∂ℓ/∂e_i = −σ(Δ) e_u,
    ∂ℓ/∂e_j = σ(Δ) e_u, ∂ℓ/∂b_i = −σ(Δ), ∂ℓ/∂b_j = σ(Δ).
    """
    d = dim
    e_u, e_i, e_j = theta[:, :d], theta[:, d : 2 * d], theta[:, 2 * d : 3 * d]
    b_i, b_j = theta[:, 3 * d : 3 * d + 1], theta[:, 3 * d + 1 : 3 * d + 2]
    delta = (e_u * (e_j - e_i)).sum(1, keepdim=True) + b_j - b_i  # [n, 1]
    s = torch.sigmoid(delta)
    grads = torch.cat([s * (e_j - e_i), -s * e_u, s * e_u, -s, s], dim=1)
    return F.softplus(delta[:, 0]), grads


def autograd_per_sample(
    model: Recommender, layout: list[TableSlots], theta: torch.Tensor, dense: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per-interaction losses and gradients of any recommender with ``torch.func.vmap(grad)``.

    Each interaction is scored by the model itself (``functional_call``) on one-row user tables and two-row item
    tables holding its own rows, so the gradient of its loss with respect to those tables is exactly its
    per-sample gradient. Returns ``(losses [n], row grads [n, C], {dense name: [n, *shape]})``.
    """
    zero = torch.zeros(1, dtype=torch.long, device=theta.device)
    one = torch.ones(1, dtype=torch.long, device=theta.device)

    def loss(dense_p, row):
        params = dict(dense_p)
        for t in layout:
            params[f"{t.name}.weight"] = row[t.start : t.start + t.width].view(t.slots, t.dim)
        return functional_call(model, params, (zero, zero, one))[0]

    # users index row 0 of the one-row user tables; positives row 0, negatives row 1 of the item tables
    (g_dense, g_rows), losses = vmap(grad_and_value(loss, argnums=(0, 1)), in_dims=(None, 0))(dense, theta)
    return losses, g_rows, g_dense


def per_sample(model: Recommender, layout: list[TableSlots], users, pos, neg) -> Touched:
    """Losses and per-interaction gradients of every parameter the interactions touch (no Python loop)."""
    theta, ids = gather_rows(layout, users, pos, neg)
    dense_theta = flat_dense(model)
    if model.name == "bpr" and [t.name for t in layout] == ["user_emb", "item_emb", "item_bias"]:
        losses, grads = bpr_closed_form(theta, layout[0].dim)
        dense_grads = theta.new_zeros(theta.shape[0], 0)
    else:
        dense = {k: v.detach() for k, v in model.dense_parameters().items()}
        losses, grads, g_dense = autograd_per_sample(model, layout, theta, dense)
        if g_dense:
            dense_grads = torch.cat([g_dense[k].reshape(theta.shape[0], -1) for k in dense], dim=1)
        else:
            dense_grads = theta.new_zeros(theta.shape[0], 0)
    return Touched(losses.detach(), theta, grads.detach(), ids, dense_theta, dense_grads.detach())


def batch_row_grads(layout: list[TableSlots], touched: Touched, valid: torch.Tensor) -> torch.Tensor:
    """For melon-p: each row column's gradient of the summed batch loss, gathered per entry ``[n, C]``."""
    out = []
    for t, ids in zip(layout, touched.ids):
        n, d = ids.shape[0], t.dim
        g = touched.grads[:, t.start : t.start + t.width].reshape(n, t.slots, d) * valid.view(n, 1, 1)
        total = torch.zeros_like(t.table.weight).index_add(0, ids.reshape(-1), g.reshape(-1, d))
        out.append(total[ids].reshape(n, t.width))
    return torch.cat(out, 1)
