"""SML: Sequential Meta-Learning, a CNN that transfers the previous embeddings towards the newly fine-tuned ones.

Paper: Zhang, Feng, He, Wei, Song, Ling, Zhang, "How to Retrain Recommender System? A Sequential Meta-Learning
Method", SIGIR 2020. Defined on embedding parameters only, hence BPR only (the MeLON paper reports N/A for NCF).

Equations implemented, per embedding table (one transfer network f_Θ for users, one for items), for a row w:

- image ``[w_{t−1}, ŵ_t, w_{t−1} ⊙ ŵ_t / ‖w_{t−1}‖]`` of shape 3 × D → Conv(1→10, kernel 3×1) → GELU →
  Conv(10→5, 1×1) → GELU → flatten (5D) → Linear(5D → 512) → GELU → Linear(512 → D) = w_t.

Per online batch B_t, after it has been ranked:

3. (for the *previous* batch) **train f_Θ on B_t**: with W_{t−2}'s touched rows and ŵ_{t−1} fixed (kept from the
   previous call, see ``state_dict``), minimise the mean BPR loss of B_t under the recommender whose previous
   rows are f_Θ(w_{t−2}, ŵ_{t−1}); Adam (lr 1e-3, weight decay 1e-4). Skipped on the first batch of a run. Only
   the kept rows that B_t reads enter the computation: the others cannot change its loss (same gradient).
1. **fit ŵ_t** on B_t: start from the current rows W_{t−1} of the rows B_t touches (users; positives and
   negatives), minimise the mean BPR loss of B_t under W = f_Θ(W_{t−1}, ŵ_t) with f_Θ frozen; Adam (lr 1e-2,
   weight decay = a small L2), ``fit_steps`` steps from a fresh optimiser state (ŵ_t is new every batch).
2. **transfer**: ``W_t = f_Θ(W_{t−1}, ŵ_t)`` for the touched rows; no other row changes.

The meta-model (both transfer networks and their optimiser) is pre-trained by running the same steps over the
pre-training part on a copy of the recommender (``melonbench.pipeline.meta_pretrain``), and keeps learning online
(step 3).

Defaults and where they come from: the architecture, the two learning rates and the transfer weight decay are
those of ``docs/strategies.md`` (after the SML paper's Sec. 3); the fit L2 (1e-4) and ``fit_steps = 1`` are
melonbench's choices.

Deviations from the original, stated:

- The original retrains on a whole period's data for several epochs; online, a period is one batch of 256 and ŵ_t
  gets ``fit_steps`` Adam steps (default 1, the per-batch update budget of the other strategies).
- BPR's item-bias table is not an embedding (width 1; the transfer CNN is defined on D-dimensional rows): it is
  fitted in step 1 together with ŵ_t and taken as fitted, without a transfer.
- The original pre-trains on its own sequence of periods; here the pre-training part is replayed in batches in time
  order, like every meta strategy of this benchmark.
- No learning-rate matrix exists (the update is a learned non-linear map), so ``captured_lr`` stays ``None``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from melonbench.online.cuda_graph import GraphedStep, load_optimizer_state
from melonbench.online.seeding import derive_seed
from melonbench.strategies.base import Strategy, sorted_rows, touched_rows
from melonbench.strategies.space import Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


@dataclasses.dataclass(frozen=True)
class SMLConfig:
    fit_lr: float = 1e-2  # Adam lr that fits ŵ_t on B_t (docs/strategies.md)
    fit_weight_decay: float = 1e-4  # the "small L2" on ŵ_t (melonbench choice)
    fit_steps: int = 1  # Adam steps fitting ŵ_t per batch (melonbench choice: one update per batch)
    transfer_lr: float = 1e-3  # Adam lr of the transfer networks (docs/strategies.md)
    transfer_weight_decay: float = 1e-4  # their weight decay (docs/strategies.md)
    hidden: int = 512  # width of the transfer network's hidden linear layer (docs/strategies.md)
    meta_epochs: int = 10  # passes over the pre-training part to pre-train f_Θ (as MeLON, MWNet, MetaSGD)
    cuda_graphs: bool = True  # on CUDA, replay each batch's steps as a CUDA graph (docs/baselines.md)


class TransferNet(nn.Module):
    """f_Θ: ``(w_{t−1}, ŵ_t) → w_t`` for ``R`` rows of a ``D``-dimensional embedding table."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=(3, 1))
        self.conv2 = nn.Conv2d(10, 5, kernel_size=1)
        self.fc1 = nn.Linear(5 * dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, previous: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
        """``previous``, ``fitted``: ``Float[R, D]`` → ``Float[R, D]``.

        Both convolutions act on each column d of the image on its own (kernel 3×1 over the 3 rows, then 1×1), so
        they are written as two matmuls over all ``R·D`` columns at once, channels first: the same sums, but on a
        CPU the general convolution kernels (and a channels-last layout) are several times slower at this shape.
        """
        rows, dim = previous.shape
        norm = previous.norm(dim=1, keepdim=True).clamp_min(1e-12)  # a zero row would divide by zero
        image = torch.stack([previous, fitted, previous * fitted / norm]).view(3, rows * dim)  # one column per (r, d)
        x = F.gelu(torch.addmm(self.conv1.bias[:, None], self.conv1.weight.flatten(1), image))  # [10, R·D]
        x = F.gelu(torch.addmm(self.conv2.bias[:, None], self.conv2.weight.flatten(1), x))  # [5, R·D]
        x = x.view(5, rows, dim).transpose(0, 1).reshape(rows, 5 * dim)  # [R, 5D], channel-major as in the spec
        return self.fc2(F.gelu(self.fc1(x)))  # [R, D]


class SML(Strategy):
    name = "sml"
    label = "SML"
    supports = frozenset({"bpr"})
    incompatibility = (
        "SML's transfer network only maps embedding rows, so NCF's MLP and fusion weights would have no update "
        "rule (the paper reports N/A for SML with NCF)"
    )
    selective = True
    meta = True
    Config = SMLConfig
    # ŵ_t's fitting rate (the recommender's online rate) and the transfer networks' rate
    space = (Axis("fit_lr", (1e-3, 1e-2, 1e-1)), Axis("transfer_lr", (1e-4, 1e-3, 1e-2)))

    def __init__(self, model: Recommender, config: SMLConfig, seed: int) -> None:
        super().__init__(model, config, seed)
        device = next(model.parameters()).device
        # (parameter name, "user" | "item", table weight); width-D tables are transferred, the others only fitted
        self.tables = [(f"{k}.weight", "user", t.weight) for k, t in model.user_tables().items()] + [
            (f"{k}.weight", "item", t.weight) for k, t in model.item_tables().items()
        ]
        with torch.random.fork_rng(devices=[]):  # the meta-model's init depends on the seed only
            torch.manual_seed(derive_seed(seed, "sml-init"))
            self.nets = nn.ModuleDict(
                {
                    _key(name): TransferNet(model.dim, config.hidden)
                    for name, _, w in self.tables
                    if w.shape[1] == model.dim
                }
            ).to(device)
        graphs = config.cuda_graphs and device.type == "cuda"
        self.transfer_optimizer = torch.optim.Adam(
            self.nets.parameters(),
            lr=config.transfer_lr,
            weight_decay=config.transfer_weight_decay,
            fused=True,
            capturable=graphs,
        )
        self._graphed = GraphedStep(self._fixed_step, enabled=graphs)
        # step (3) needs the previous batch's rows, W_{t−1} on them and ŵ_t: {name: {"rows", "previous", "fitted"}}
        self.previous: dict[str, dict[str, torch.Tensor]] | None = None

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        if self._graphed.enabled:
            previous = () if self.previous is None else self._flatten(self.previous)
            losses, *kept = self._graphed(batch.users, batch.items, batch.negatives, *previous)
            self.previous = self._unflatten(kept)
            return losses
        with torch.no_grad():
            losses = self.model.bpr_loss(batch.users, batch.items, batch.negatives)
        if self.previous is not None:
            self._train_transfer(batch)
        self._fit_and_transfer(batch)
        return losses

    pretrain_step = online_step

    def _substituted(self, rows_of: dict[str, torch.Tensor], new_rows: dict[str, torch.Tensor]) -> dict:
        """Full tables equal to the current ones except ``new_rows`` at ``rows_of`` (differentiable in new_rows)."""
        return {
            name: weight.detach().index_copy(0, rows_of[name], new_rows[name])
            for name, _, weight in self.tables
            if name in new_rows
        }

    def _train_transfer(self, batch: Batch) -> None:
        """Step 3: train f_Θ on ``batch`` with the previous batch's W_{t−1} rows and ŵ_t fixed."""
        prev = self.previous
        assert prev is not None
        # Only the kept rows that this batch reads can change its loss; the others would add exact zeros to the
        # gradient, so leaving them out gives the same step for a fraction of the work (~20 % of rows overlap).
        users, items = touched_rows(self.model, batch)
        read = {name: users if kind == "user" else items for name, kind, _ in self.tables}
        used = {name: torch.isin(p["rows"], read[name]) & p.get("keep", True) for name, p in prev.items()}
        new_rows = {
            name: self.nets[_key(name)](p["previous"][used[name]], p["fitted"][used[name]]) for name, p in prev.items()
        }
        params = self._substituted({name: p["rows"][used[name]] for name, p in prev.items()}, new_rows)
        loss = torch.func.functional_call(self.model, params, (batch.users, batch.items, batch.negatives)).mean()
        self.transfer_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.transfer_optimizer.step()

    def _fit_and_transfer(self, batch: Batch) -> None:
        """Steps 1 and 2: fit ŵ_t on ``batch`` through the frozen f_Θ, then write W_t = f_Θ(W_{t−1}, ŵ_t)."""
        users, items = touched_rows(self.model, batch)
        rows_of = {name: users if kind == "user" else items for name, kind, _ in self.tables}
        previous = {name: w[rows_of[name]].detach().clone() for name, _, w in self.tables}  # W_{t−1} rows
        batch_ids = (batch.users, batch.items, batch.negatives)
        fitted = self._fit(previous, functools.partial(self._substituted, rows_of), batch_ids)
        with torch.no_grad():
            new_rows = self._transferred(previous, fitted)
            for name, _, weight in self.tables:
                weight[rows_of[name]] = new_rows[name]
        self.previous = {
            name: {"rows": rows_of[name], "previous": previous[name], "fitted": fitted[name].detach()}
            for name in fitted
            if _key(name) in self.nets
        }

    # ---- the same steps at fixed shapes, for CUDA graphs --------------------------------------------------------
    def _fixed_step(self, users, items, negatives, *previous) -> tuple[torch.Tensor, ...]:
        """Steps 3, 1 and 2 with every row list at its length with repeats (``sorted_rows``), for a CUDA graph.

        ``previous``: the previous batch's kept tensors (:meth:`_flatten`), or none on a run's first batch.
        Returns the losses, then this batch's kept tensors. A repeated row enters each table once (the
        substitutions add ``(new − θ)`` on first occurrences only) and is written with its first occurrence's
        values, so every write of it carries the same bits.
        """
        with torch.no_grad():
            losses = self.model.bpr_loss(users, items, negatives)
        if previous:  # step 3 on the previous batch's rows (all of them: those this batch does not read add zeros)
            prev = self._unflatten(previous)
            new_rows = {name: self.nets[_key(name)](p["previous"], p["fitted"]) for name, p in prev.items()}
            params = self._added({name: p["rows"] for name, p in prev.items()}, new_rows, prev)
            loss = torch.func.functional_call(self.model, params, (users, items, negatives)).mean()
            self.transfer_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.transfer_optimizer.step()
        # steps 1 and 2 on this batch's rows
        rows_u, first_u, keep_u = sorted_rows(users)
        rows_i, first_i, keep_i = sorted_rows(torch.cat([items, negatives]))
        kind = {name: kind for name, kind, _ in self.tables}
        rows = {name: rows_u if kind[name] == "user" else rows_i for name in kind}
        kept = {name: {"keep": keep_u if kind[name] == "user" else keep_i} for name in kind}
        previous_rows = {name: w[rows[name]].detach().clone() for name, _, w in self.tables}
        substitute = functools.partial(self._added, rows, kept=kept)
        fitted = self._fit(previous_rows, substitute, (users, items, negatives), capturable=users.is_cuda)
        with torch.no_grad():
            new_rows = self._transferred(previous_rows, fitted)
            for name, k, weight in self.tables:
                weight.index_copy_(0, rows[name], new_rows[name][first_u if k == "user" else first_i])
        carried = {
            name: {
                "rows": rows[name],
                "keep": kept[name]["keep"],
                "previous": previous_rows[name],
                "fitted": w.detach(),
            }
            for name, w in fitted.items()
            if _key(name) in self.nets
        }
        return (losses, *self._flatten(carried))

    def _fit(self, previous: dict, substitute, batch_ids: tuple, capturable: bool = False) -> dict:
        """Step 1: ŵ_t, from W_{t−1}'s rows, after ``fit_steps`` Adam steps (a fresh optimiser: ŵ_t is new every
        batch; ``capturable`` inside a CUDA graph) on the batch's loss with the tables ``substitute(f_Θ(·))``."""
        fitted = {name: p.clone().requires_grad_(True) for name, p in previous.items()}  # ŵ_t starts at W_{t−1}
        optimizer = torch.optim.Adam(
            fitted.values(),
            lr=self.config.fit_lr,
            weight_decay=self.config.fit_weight_decay,
            fused=True,
            capturable=capturable,
        )
        for _ in range(self.config.fit_steps):
            params = substitute(self._transferred(previous, fitted))
            loss = torch.func.functional_call(self.model, params, batch_ids).mean()
            # autograd.grad, not backward: f_Θ is frozen here, its .grad must not collect this loss
            grads = torch.autograd.grad(loss, list(fitted.values()))
            for w, g in zip(fitted.values(), grads, strict=True):
                w.grad = g
            optimizer.step()
        return fitted

    def _transferred(self, previous: dict, fitted: dict) -> dict[str, torch.Tensor]:
        """``f_Θ(W_{t−1}, ŵ_t)`` for the transferred tables, ``ŵ_t`` itself for the others (biases)."""
        return {
            name: self.nets[_key(name)](previous[name], w) if _key(name) in self.nets else w
            for name, w in fitted.items()
        }

    def _added(self, rows_of: dict, new_rows: dict, kept: dict) -> dict[str, torch.Tensor]:
        """Full tables equal to the current ones plus ``new − θ`` on the first occurrences of ``rows_of``."""
        out = {}
        for name, _, weight in self.tables:
            if name in new_rows:
                base, rows = weight.detach(), rows_of[name]
                delta = (new_rows[name] - base[rows]) * kept[name]["keep"][:, None]
                out[name] = base.index_add(0, rows, delta)
        return out

    def _flatten(self, previous: dict) -> tuple[torch.Tensor, ...]:
        """The kept tensors in a fixed order (rows, keep, W_{t−1} rows, ŵ per transferred table); eagerly kept
        (unique rows) ones get ``keep`` all true."""
        return tuple(
            t
            for name in sorted(previous)
            for t in (
                previous[name]["rows"],
                previous[name].get("keep", torch.ones_like(previous[name]["rows"], dtype=torch.bool)),
                previous[name]["previous"],
                previous[name]["fitted"],
            )
        )

    def _unflatten(self, flat) -> dict[str, dict[str, torch.Tensor]]:
        names = sorted(name for name, _, _ in self.tables if _key(name) in self.nets)
        fields = ("rows", "keep", "previous", "fitted")
        return {name: dict(zip(fields, flat[4 * k : 4 * k + 4], strict=True)) for k, name in enumerate(names)}

    def meta_state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "transfer_optimizer": self.transfer_optimizer.state_dict()}

    def load_meta_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        load_optimizer_state(self.transfer_optimizer, state["transfer_optimizer"], self._graphed)

    def state_dict(self) -> dict[str, Any]:
        return {**self.meta_state_dict(), "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_meta_state_dict(state)
        prev = state["previous"]
        self.previous = None if prev is None else {name: dict(p) for name, p in prev.items()}


def _key(name: str) -> str:
    """A ``ModuleDict`` key for a parameter name (no dots allowed)."""
    return name.replace(".", "_")
