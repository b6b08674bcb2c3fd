"""MeLON's building blocks: per-sample gradients of touched parameters, and the meta-model's small networks.

Kept apart from :mod:`melonbench.strategies.melon` (which holds the strategy and its update algebra) so that each
file reads on a few screens. Nothing here is a :class:`~melonbench.strategies.base.Strategy`.

Layout of the touched parameters of an interaction x = (u, i, j) (u user, i positive, j sampled negative):

- **row columns** ``C``: for every user table of the recommender (in ``user_tables()`` order) its row of u, then
  for every item table (in ``item_tables()`` order) its row of i then its row of j; the coordinates of each row
  in order. BPR: ``user_emb[u] (64) | user_bias[u] (1) | item_emb[i] (64) | item_emb[j] (64) | item_bias[i] |
  item_bias[j]`` = 195 columns.
- **dense columns** ``P``: every dense parameter (``dense_parameters()`` order) flattened. NCF: 20,865.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from melonbench.models.base import Recommender
from melonbench.preprocess import prep


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
    ∂ℓ/∂e_j = σ(Δ) e_u, ∂ℓ/∂b_i = −σ(Δ), ∂ℓ/∂b_j = σ(Δ), and ∂ℓ/∂b_u = 0 (the user bias cancels in Δ).
    """
    d = dim
    e_u, b_u = theta[:, :d], theta[:, d : d + 1]
    e_i, e_j = theta[:, d + 1 : 2 * d + 1], theta[:, 2 * d + 1 : 3 * d + 1]
    b_i, b_j = theta[:, 3 * d + 1 : 3 * d + 2], theta[:, 3 * d + 2 : 3 * d + 3]
    delta = (e_u * (e_j - e_i)).sum(1, keepdim=True) + b_j - b_i  # [n, 1]
    s = torch.sigmoid(delta)
    grads = torch.cat([s * (e_j - e_i), torch.zeros_like(b_u), -s * e_u, s * e_u, -s, s], dim=1)
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
    if model.name == "bpr" and [t.name for t in layout] == ["user_emb", "user_bias", "item_emb", "item_bias"]:
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


class InteractionEncoder(nn.Module):
    """h_x from graph attention over the recent neighbours of u and of i (paper Eq. 8–10).

    ``variant="paper"``: α = softmax(LeakyReLU(aᵀ[e_u, e_i'])), ẽ_u = ReLU(W_user [e_u, Σ α e_i'] + b),
    likewise ẽ_i, and h_x = ReLU(W_x [ẽ_u, ẽ_i] + b_x).
    ``variant="reference"``: ẽ_u = W_self e_u + W_nb Σ α e_i' (sum of projections), and h_x from two linear
    layers with BatchNorm (ReLU between them) to ``hidden`` dimensions, as the released code.
    """

    def __init__(self, user_dim: int, item_dim: int, hidden: int, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.att_user = nn.Linear(user_dim + item_dim, 1)
        self.att_item = nn.Linear(item_dim + user_dim, 1)
        if variant == "paper":
            self.ext_user = nn.Linear(user_dim + item_dim, hidden)
            self.ext_item = nn.Linear(item_dim + user_dim, hidden)
            self.out = nn.Linear(2 * hidden, hidden)
        else:
            self.self_user, self.nb_user = nn.Linear(user_dim, hidden), nn.Linear(item_dim, hidden, bias=False)
            self.self_item, self.nb_item = nn.Linear(item_dim, hidden), nn.Linear(user_dim, hidden, bias=False)
            self.out = nn.Sequential(
                nn.Linear(2 * hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden),
            )

    @staticmethod
    def _attend(att: nn.Linear, centre: torch.Tensor, nbrs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Σ α e_nb over valid neighbours (zeros when there are none): centre [n, d], nbrs [n, K, d'] → [n, d']."""
        pair = torch.cat([centre.unsqueeze(1).expand(-1, nbrs.shape[1], -1), nbrs], dim=-1)
        logits = F.leaky_relu(att(pair).squeeze(-1)).masked_fill(~mask, float("-inf"))  # [n, K]
        alpha = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a row with no neighbour is all -inf
        return (alpha.unsqueeze(-1) * nbrs).sum(1)

    def forward(self, e_u, e_i, user_nb, user_mask, item_nb, item_mask) -> torch.Tensor:
        """``e_u [n, dU]``, ``e_i [n, dI]``, neighbours ``[n, K, d]`` with masks ``[n, K]`` → ``h_x [n, hidden]``."""
        agg_u = self._attend(self.att_user, e_u, user_nb, user_mask)  # items of u
        agg_i = self._attend(self.att_item, e_i, item_nb, item_mask)  # users of i
        if self.variant == "paper":
            ext_u = torch.relu(self.ext_user(torch.cat([e_u, agg_u], 1)))
            ext_i = torch.relu(self.ext_item(torch.cat([e_i, agg_i], 1)))
            return torch.relu(self.out(torch.cat([ext_u, ext_i], 1)))
        ext_u = self.self_user(e_u) + self.nb_user(agg_u)
        ext_i = self.self_item(e_i) + self.nb_item(agg_i)
        h = torch.cat([ext_u, ext_i], 1)
        if h.shape[0] < 2:  # BatchNorm cannot normalise one row by batch statistics
            self.out.eval()
            try:
                return self.out(h)
            finally:
                self.out.train()
        return self.out(h)


class RoleNet(nn.Module):
    """h_{x,m} and the per-pair gate logits b_{x,m} (paper Eq. 11–12, role part).

    ``variant="paper"``: input [θ_m, prep(ℓ_x), prep(∇_{θ_m}ℓ_x)] (5 features) → two ReLU layers → 2 logits
    (learning rate, forget). ``variant="reference"``: input [prep(ℓ̄), prep(∇_{θ_m}ℓ_x)] (4 features, ℓ̄ the batch
    mean loss, no θ) → one linear layer (no activation) → 2 logits.

    The first layer is applied in separated form, ``W [θ, prep ℓ, prep g] = w_θ θ + W_ℓ prep(ℓ) + W_g prep(g)``,
    so the per-interaction and per-parameter parts are computed once, not once per pair.
    """

    def __init__(self, hidden: int, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.w_theta = nn.Linear(1, hidden, bias=False) if variant == "paper" else None
        self.w_loss = nn.Linear(2, hidden)
        self.w_grad = nn.Linear(2, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden) if variant == "paper" else None
        self.head = nn.Linear(hidden, 2, bias=False)

    def forward(self, theta: torch.Tensor, loss: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``theta [n|1, c]``, ``loss [n|1]``, ``grads [n|1, c]`` → gate logits ``[n, c, 2]`` (broadcast)."""
        pre = self.w_grad(prep(grads)) + self.w_loss(prep(loss)).unsqueeze(1)  # [n, c, R]
        if self.w_theta is not None:
            pre = pre + self.w_theta(theta.unsqueeze(-1))
        if self.second is None:
            return self.head(pre)
        return self.head(torch.relu(self.second(torch.relu(pre))))
