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
pre-training part on a copy of the recommender (``melonbench.meta_pretrain``), and keeps learning online (step 3).

Defaults and where they come from: the architecture, the two learning rates and the transfer weight decay are
those of ``docs/strategies.md`` (after the SML paper's Sec. 3); the fit L2 (1e-4) and ``fit_steps = 1`` are
melonbench's choices.

Deviations from the original, stated:

- The original retrains on a whole period's data for several epochs; online, a period is one batch of 256 and ŵ_t
  gets ``fit_steps`` Adam steps (default 1, the per-batch update budget of the other strategies).
- BPR's bias tables are not embeddings (width 1; the transfer CNN is defined on D-dimensional rows): they are
  fitted in step 1 together with ŵ_t and taken as fitted, without a transfer.
- The original pre-trains on its own sequence of periods; here the pre-training part is replayed in batches in time
  order, like every meta strategy of this benchmark.
- No learning-rate matrix exists (the update is a learned non-linear map), so ``captured_lr`` stays ``None``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from melonbench.seeding import derive_seed
from melonbench.strategies.base import Strategy, touched_rows

if TYPE_CHECKING:
    from melonbench.history import History
    from melonbench.models.base import Recommender
    from melonbench.stream import Batch


@dataclasses.dataclass(frozen=True)
class SMLConfig:
    fit_lr: float = 1e-2  # Adam lr that fits ŵ_t on B_t (docs/strategies.md)
    fit_weight_decay: float = 1e-4  # the "small L2" on ŵ_t (melonbench choice)
    fit_steps: int = 1  # Adam steps fitting ŵ_t per batch (melonbench choice: one update per batch)
    transfer_lr: float = 1e-3  # Adam lr of the transfer networks (docs/strategies.md)
    transfer_weight_decay: float = 1e-4  # their weight decay (docs/strategies.md)
    hidden: int = 512  # width of the transfer network's hidden linear layer (docs/strategies.md)
    meta_epochs: int = 3  # passes over the pre-training part to pre-train f_Θ (as MeLON, MWNet, MetaSGD)


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
        self.transfer_optimizer = torch.optim.Adam(
            self.nets.parameters(), lr=config.transfer_lr, weight_decay=config.transfer_weight_decay, fused=True
        )
        # step (3) needs the previous batch's rows, W_{t−1} on them and ŵ_t: {name: {"rows", "previous", "fitted"}}
        self.previous: dict[str, dict[str, torch.Tensor]] | None = None

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
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
        used = {name: torch.isin(p["rows"], read[name]) for name, p in prev.items()}
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
        fitted = {name: p.clone().requires_grad_(True) for name, p in previous.items()}  # ŵ_t starts at W_{t−1}
        optimizer = torch.optim.Adam(
            fitted.values(), lr=self.config.fit_lr, weight_decay=self.config.fit_weight_decay, fused=True
        )

        def transferred() -> dict[str, torch.Tensor]:
            return {
                name: self.nets[_key(name)](previous[name], w) if _key(name) in self.nets else w
                for name, w in fitted.items()
            }

        for _ in range(self.config.fit_steps):
            params = self._substituted(rows_of, transferred())
            loss = torch.func.functional_call(self.model, params, (batch.users, batch.items, batch.negatives)).mean()
            # autograd.grad, not backward: f_Θ is frozen here, its .grad must not collect this loss
            grads = torch.autograd.grad(loss, list(fitted.values()))
            for w, g in zip(fitted.values(), grads, strict=True):
                w.grad = g
            optimizer.step()
        with torch.no_grad():
            new_rows = transferred()
            for name, _, weight in self.tables:
                weight[rows_of[name]] = new_rows[name]
        self.previous = {
            name: {"rows": rows_of[name], "previous": previous[name], "fitted": fitted[name].detach()}
            for name in fitted
            if _key(name) in self.nets
        }

    def meta_state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "transfer_optimizer": self.transfer_optimizer.state_dict()}

    def load_meta_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.transfer_optimizer.load_state_dict(state["transfer_optimizer"])

    def state_dict(self) -> dict[str, Any]:
        return {**self.meta_state_dict(), "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_meta_state_dict(state)
        prev = state["previous"]
        self.previous = None if prev is None else {name: dict(p) for name, p in prev.items()}


def _key(name: str) -> str:
    """A ``ModuleDict`` key for a parameter name (no dots allowed)."""
    return name.replace(".", "_")
