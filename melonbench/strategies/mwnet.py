"""MWNet: Meta-Weight-Net importance reweighting (Shu et al., NeurIPS 2019) in the online loop.

A weight net V (an MLP 1 → 100 → 1, ReLU, then a sigmoid) maps an interaction's loss ℓ_x to a weight in
(0, 1). Per online batch B_t, following the common meta pattern of Kim et al. 2022 (Appendix, Alg. 1):

1. look-ahead on B_t^last (the previous interaction of each user and item in B_t), kept differentiable in V:
   ``θ̂ = θ − α (1/m) Σ_{x∈B_last} V(ℓ_x(θ)) ∇_θ ℓ_x(θ)``, a plain SGD step with α = the recommender's lr (as
   Shu et al.'s Eq. 4, the weight multiplies the gradient: V's input ℓ_x is not differentiated through θ);
2. meta step: ``V ← Adam(∇_V (1/n) Σ_{x∈B_t} ℓ_x(θ̂))``;
3. real update: ``v_x = V(ℓ_x(θ))`` without gradient, then Default's Adam step on ``(1/n) Σ_{x∈B_t} v_x ℓ_x(θ)``.

One weight per interaction: W = η v_x / n in every column of row x (Eq. 3), rank 1 by construction.

Deviations, stated:
- The "clean meta set" of Shu et al. is the next batch (the online setting has no clean data): B_t itself,
  after the look-ahead on B_t^last, exactly as MeLON's Algorithm 1 does.
- The weights are not normalised by their sum (the spec's equations); under Adam a common scale barely matters.
- B_t^last's training negatives: one per interaction from
  :func:`melonbench.strategies.base.lookahead_batch`, drawn with the strategy's own seeded generator (part of
  the state), among items that exist before B_t, excluding the positive and the user's items before that
  interaction (the leak-free training-negative rule, ``exclude="before"``).
- Learning-rate capture (W) stores ``η v_x / n``; Adam's per-coordinate scaling of the summed step is not in W.

``sparse=True`` swaps Adam for lazy Adam on touched rows, as for Default.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call

from melonbench.online.cuda_graph import GraphedStep, load_optimizer_state
from melonbench.online.seeding import derive_seed, generator
from melonbench.strategies.base import lookahead_batch, padded_lookahead_batch
from melonbench.strategies.default import Default, DefaultConfig
from melonbench.strategies.space import DECADES, Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


def slot_columns(model: Recommender) -> int:
    """Parameter positions one interaction touches: user row, positive row, negative row, and every dense weight."""
    user = sum(t.weight.shape[1] for t in model.user_tables().values())
    item = sum(t.weight.shape[1] for t in model.item_tables().values())
    dense = sum(p.numel() for p in model.dense_parameters().values())
    return user + 2 * item + dense


class WeightNet(nn.Module):
    """V: loss ``Float[B, 1]`` → weight ``Float[B, 1]`` in (0, 1); an MLP 1 → hidden → 1, ReLU then sigmoid."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.relu(self.hidden(loss))))


@dataclasses.dataclass(frozen=True)
class MWNetConfig(DefaultConfig):
    hidden: int = 100  # Shu et al. 2019 (1-100-1 MLP)
    meta_lr: float = 1e-3  # strategies.md, after Shu et al. (weight-net Adam lr)
    meta_weight_decay: float = 1e-4  # strategies.md, after Shu et al.
    meta_epochs: int = 10  # passes over the pre-training part: as MeLON's default (its Alg. 1: 100), equal budget


class MWNet(Default):
    name = "mwnet"
    label = "MWNet"
    meta = True
    Config = MWNetConfig
    space = (Axis("lr", DECADES), Axis("meta_lr", (1e-4, 1e-3, 1e-2)))  # recommender's and weight net's Adam rates

    def __init__(self, model: Recommender, config: MWNetConfig, seed: int) -> None:
        super().__init__(model, config, seed)
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[]):  # V's initialisation depends on the seed only
            torch.manual_seed(derive_seed(seed, "mwnet-init"))
            self.vnet = WeightNet(config.hidden).to(device)
        graphs = self._graphed.enabled  # Default's: cuda_graphs on a CUDA device, dense Adam
        self.meta_optimizer = torch.optim.Adam(
            self.vnet.parameters(),
            lr=config.meta_lr,
            weight_decay=config.meta_weight_decay,
            fused=True,
            capturable=graphs,
        )
        self.generator = generator(seed, "mwnet-lookahead-negatives", device)
        self._meta_graphed = GraphedStep(self._fixed_step, enabled=graphs)
        self._rows = {f"{k}.weight" for k in (*model.user_tables(), *model.item_tables())}

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """``v_x = V(ℓ_x)``: ``Float[B]`` → ``Float[B]`` in (0, 1), differentiable in V (callers pass detached ℓ)."""
        return self.vnet(losses.unsqueeze(1)).squeeze(1)

    def meta_step(self, batch: Batch, history: History) -> None:
        """Steps 1–2: the look-ahead on B_t^last, then one Adam step of V on B_t's loss after it."""
        users, items, negatives = lookahead_batch(history, batch, self.generator)
        if users.shape[0] == 0:  # no past yet: θ̂ = θ would not depend on V
            return
        # θ̂ differs from θ only on the rows B_t^last reads, and the meta loss reads only B_t's rows: the look-ahead
        # runs on the tables' rows that either reads (ids renumbered into them by `unique`'s inverse), not on whole
        # tables. The same meta-gradient, without the full-table passes of a look-ahead on every row.
        m, n = users.shape[0], batch.users.shape[0]
        rows_u, ids_u = torch.unique(torch.cat([users, batch.users]), return_inverse=True)
        rows_i, ids_i = torch.unique(torch.cat([items, negatives, batch.items, batch.negatives]), return_inverse=True)
        last_u, now_u = ids_u.split([m, n])
        last_i, last_j, now_i, now_j = ids_i.split([m, m, n, n])
        params = dict(self.model.named_parameters())
        for tables, rows in ((self.model.user_tables(), rows_u), (self.model.item_tables(), rows_i)):
            for k, table in tables.items():
                params[f"{k}.weight"] = table.weight.detach().index_select(0, rows).requires_grad_()
        self._meta_update(params, (last_u, last_i, last_j), (now_u, now_i, now_j))

    def _meta_update(self, params: dict, last_ids: tuple, now_ids: tuple, valid=None) -> None:
        """θ̂ = θ − α ∇ mean_x(v_x ℓ_x) on ``last_ids`` (over ``valid`` rows if given), kept differentiable in V,
        then one Adam step of V on the mean loss of ``now_ids`` under θ̂. ``params``: the tensors θ̂ starts from."""
        last = functional_call(self.model, params, last_ids)  # [M]
        weighted = self.weights(last.detach()) * last  # Shu et al. Eq. 4: the weight multiplies ∇ℓ_x
        inner = weighted.mean() if valid is None else (weighted * valid).sum() / valid.sum()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        ahead = {k: p - self.config.lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
        meta_loss = functional_call(self.model, ahead, now_ids).mean()
        self.meta_optimizer.zero_grad()
        meta_loss.backward(inputs=list(self.vnet.parameters()))
        self.meta_optimizer.step()

    def loss_weight(self, losses: torch.Tensor) -> torch.Tensor:
        """Step 3's objective ``(1/n) Σ v_x ℓ_x`` with the weights fixed."""
        with torch.no_grad():
            v = self.weights(losses)
        if self.capture_lr:
            n = losses.shape[0]
            self.captured_lr = (self.config.lr * v / n).unsqueeze(1).expand(n, slot_columns(self.model))
        return (v * losses).mean()

    def _fixed_step(self, users, items, negatives, last_users, last_items, last_negatives, valid) -> torch.Tensor:
        """Steps 1–3 at fixed shapes for a CUDA graph: the look-ahead on B_t^last padded to ``2 |B_t|`` rows
        (``valid`` 0 on the padding) over whole tables, the meta step, then the update."""
        params = {k: p.detach().requires_grad_() if k in self._rows else p for k, p in self.model.named_parameters()}
        self._meta_update(params, (last_users, last_items, last_negatives), (users, items, negatives), valid)
        return self._update(users, items, negatives)

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        if self._meta_graphed.enabled and not self.capture_lr:
            last = padded_lookahead_batch(history, batch, self.generator)
            if last is not None:
                return self._meta_graphed(batch.users, batch.items, batch.negatives, *last)
        self.meta_step(batch, history)
        return super().online_step(batch, history)

    def pretrain_step(self, batch: Batch, history: History) -> torch.Tensor:
        return self.online_step(batch, history)

    def meta_state_dict(self) -> dict[str, Any]:
        return {"vnet": self.vnet.state_dict(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_meta_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)  # the optimiser would otherwise keep (and later mutate) the caller's tensors
        self.vnet.load_state_dict(state["vnet"])
        load_optimizer_state(self.meta_optimizer, state["meta_optimizer"], self._meta_graphed)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.meta_state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.load_meta_state_dict(state)
        self.generator.set_state(state["generator"])
