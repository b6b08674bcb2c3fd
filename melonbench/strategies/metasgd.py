"""MetaSGD: a learnable learning rate for every recommender parameter (Li et al., 2017) in the online loop.

α holds one non-negative rate per parameter coordinate, with the shape of each recommender parameter (a table
for each embedding table). With ``L(B; θ) = (1/|B|) Σ_{x∈B} ℓ_x(θ)``, per online batch B_t (the common meta pattern
of Kim et al. 2022, Appendix, Alg. 1):

1. look-ahead on B_t^last: ``θ' = θ − α ⊙ ∇_θ L(B_last; θ)`` (differentiable in α);
2. meta step: ``α ← Adam(∇_α L(B_t; θ'))``, then ``α ← max(α, 0)``. The gradient is exact without second
   order terms, since ∇_θ L(B_last; θ) does not depend on α: ``∇_α = −∇_θ L(B_last; θ) ⊙ ∇_θ' L(B_t; θ')``;
3. real update: ``θ ← θ − α ⊙ ∇_θ L(B_t; θ)`` (plain SGD with per-coordinate rates; no weight decay).

One rate per parameter: W_{x,m} = α_m / n for every interaction x (Eq. 4), identical rows, rank 1. Rows a
batch does not touch have a zero gradient, so they stay exactly unchanged (``selective``).

Defaults: α ~ U[0.005, 0.1] as Li et al. (``--set alpha_low=0.001 --set alpha_high=0.001`` gives the constant
init α = Default's lr named in strategies.md); meta Adam lr 1e-3.

Deviations, stated:
- Li et al. meta-learn the initialisation θ and α over many few-shot tasks; online there is one stream, so θ is
  the recommender itself (updated by step 3) and only α is meta-learned, with B_t as the "test" set of the
  task "adapt on B_t^last".
- α ≥ 0 is kept by projection (clamp after each Adam step); Li et al. leave α unconstrained.
- B_t^last's training negatives: drawn as for MWNet (:func:`melonbench.strategies.base.lookahead_batch`).
- Learning-rate capture: W is stored over the *distinct parameter coordinates the batch touches* (its users'
  rows, its positive and negative items' rows, every dense weight), not over (slot, coordinate) positions as
  MeLON's: with a per-row α, the (slot, coordinate) layout would put different parameters in one column, and
  Eq. 4's rank-1 structure (identical rows) only holds over parameters.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch.func import functional_call

from melonbench.core.errors import MelonbenchError
from melonbench.online.cuda_graph import GraphedStep, load_optimizer_state
from melonbench.online.seeding import derive_seed, generator
from melonbench.strategies.base import Strategy, lookahead_batch, padded_lookahead_batch, touched_rows
from melonbench.strategies.space import Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


@dataclasses.dataclass(frozen=True)
class MetaSGDConfig:
    alpha_low: float = 0.005  # α init U[low, high]: Li et al. 2017
    alpha_high: float = 0.1  # Li et al. 2017
    meta_lr: float = 1e-3  # Adam on α: Li et al. 2017 meta-train with Adam; Adam's usual 1e-3
    meta_epochs: int = 10  # passes over the pre-training part: as MeLON's default (its Alg. 1: 100), equal budget
    cuda_graphs: bool = True  # on CUDA, replay each batch's steps as a CUDA graph (docs/melon.md)


class MetaSGD(Strategy):
    name = "metasgd"
    label = "MetaSGD"
    selective = True
    meta = True
    Config = MetaSGDConfig
    space = (Axis("meta_lr", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),)  # the rates α are learned; their Adam rate is tuned

    def __init__(self, model: Recommender, config: MetaSGDConfig, seed: int) -> None:
        super().__init__(model, config, seed)
        if not 0 <= config.alpha_low <= config.alpha_high:
            raise MelonbenchError(
                f"metasgd needs 0 <= alpha_low <= alpha_high, got {config.alpha_low} and {config.alpha_high}"
            )
        device = next(model.parameters()).device
        init = torch.Generator(device=device).manual_seed(derive_seed(seed, "metasgd-init"))
        span = config.alpha_high - config.alpha_low
        self.alpha = {
            name: (
                torch.rand(p.shape, generator=init, device=device, dtype=p.dtype) * span + config.alpha_low
            ).requires_grad_()
            for name, p in model.named_parameters()
        }
        graphs = config.cuda_graphs and device.type == "cuda"
        # fused: one kernel per step over α's tables instead of a dozen full-table passes (same maths)
        self.meta_optimizer = torch.optim.Adam(
            list(self.alpha.values()), lr=config.meta_lr, fused=True, capturable=graphs
        )
        self.generator = generator(seed, "metasgd-lookahead-negatives", device)
        self._graphed = GraphedStep(self._fixed_step, enabled=graphs)

    def meta_step(self, batch: Batch, history: History) -> None:
        """Steps 1–2: the look-ahead θ' on B_t^last, then one projected Adam step of α on ``L(B_t; θ')``."""
        users, items, negatives = lookahead_batch(history, batch, self.generator)
        if users.shape[0] == 0:  # no past yet: θ' = θ would not depend on α
            return
        self._meta_update(batch.users, batch.items, batch.negatives, users, items, negatives)

    def _meta_update(self, users, items, negatives, last_users, last_items, last_negatives, valid=None) -> None:
        """θ' = θ − α ⊙ ∇ (mean loss of B_t^last, over ``valid`` rows if given), then Adam on α, projected."""
        params = dict(self.model.named_parameters())
        last = functional_call(self.model, params, (last_users, last_items, last_negatives))
        last = last.mean() if valid is None else (last * valid).sum() / valid.sum()
        grads = torch.autograd.grad(last, list(params.values()))
        ahead = {k: p.detach() - self.alpha[k] * g for (k, p), g in zip(params.items(), grads, strict=True)}
        meta_loss = functional_call(self.model, ahead, (users, items, negatives)).mean()
        self.meta_optimizer.zero_grad()
        meta_loss.backward()  # θ is detached in θ', so only α receives gradients
        self.meta_optimizer.step()
        with torch.no_grad():
            for a in self.alpha.values():
                a.clamp_(min=0.0)

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        if self._graphed.enabled and not self.capture_lr:
            last = padded_lookahead_batch(history, batch, self.generator)
            if last is not None:
                return self._graphed(batch.users, batch.items, batch.negatives, *last)
        self.meta_step(batch, history)
        losses = self._update(batch.users, batch.items, batch.negatives)
        if self.capture_lr:
            self.captured_lr = self._rate_matrix(batch)
        return losses

    def _fixed_step(self, users, items, negatives, *last) -> torch.Tensor:
        """Steps 1–3 at fixed shapes for a CUDA graph (B_t^last padded, ``valid`` 0 on the padding)."""
        self._meta_update(users, items, negatives, *last)
        return self._update(users, items, negatives)

    def _update(self, users: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Step 3: θ ← θ − α ⊙ ∇ (mean loss of the batch); returns the losses before it."""
        params = dict(self.model.named_parameters())
        losses = self.model.bpr_loss(users, items, negatives)  # [B]
        grads = torch.autograd.grad(losses.mean(), list(params.values()))
        with torch.no_grad():
            for (k, p), g in zip(params.items(), grads, strict=True):
                p.sub_(self.alpha[k] * g)
        return losses.detach()

    def _rate_matrix(self, batch: Batch) -> torch.Tensor:
        """``Float[B, P]``: α / n over the P distinct coordinates the batch touches; every row the same."""
        users, items = touched_rows(self.model, batch)
        with torch.no_grad():
            cols = [self.alpha[f"{k}.weight"][users].flatten() for k in self.model.user_tables()]
            cols += [self.alpha[f"{k}.weight"][items].flatten() for k in self.model.item_tables()]
            cols += [self.alpha[k].flatten() for k in self.model.dense_parameters()]
            row = torch.cat(cols) / len(batch)
        return row.unsqueeze(0).expand(len(batch), -1)

    def pretrain_step(self, batch: Batch, history: History) -> torch.Tensor:
        return self.online_step(batch, history)

    def meta_state_dict(self) -> dict[str, Any]:
        return {
            "alpha": {k: a.detach().clone() for k, a in self.alpha.items()},
            "meta_optimizer": self.meta_optimizer.state_dict(),
        }

    def load_meta_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)  # the optimiser would otherwise keep (and later mutate) the caller's tensors
        with torch.no_grad():
            for k, a in self.alpha.items():
                a.copy_(state["alpha"][k])
        load_optimizer_state(self.meta_optimizer, state["meta_optimizer"], self._graphed)

    def state_dict(self) -> dict[str, Any]:
        return {**self.meta_state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_meta_state_dict(state)
        self.generator.set_state(state["generator"])
