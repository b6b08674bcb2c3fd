"""S²Meta: a coordinate-wise MetaLSTM that decides how much each parameter forgets and learns.

Paper: Du, Wang, Yang, Zhou, Tang, "Sequential Scenario-Specific Meta Learner for Online Recommendation", KDD 2019
(the "ScenarioMeta" learner; the LSTM update rule follows Ravi & Larochelle, ICLR 2017).

Equations implemented, for every coordinate k of every recommender parameter the batch touches:

- input ``x_k = [prep(g_k), prep(θ_k), prep(L)_0]`` (5 features), with ``g = clip(∇θ L, −1, 1)``, ``L`` the mean
  BPR loss of the batch and ``prep`` the preprocessing of Andrychowicz et al. 2016
  (``melonbench.strategies.preprocess``);
- ``(h_k, c_k) ← LSTMCell(x_k, (h_k, c_k))`` (5 → 16), then ``h_k ← LayerNorm(h_k)``;
- learning rate ``lr_k = σ(w_lr · h_k + b_lr)`` and forget rate ``f_k = σ(w_f · h_k + b_f)``;
- ``θ_k ← f_k θ_k − lr_k g_k``.

One MetaLSTM per recommender parameter tensor (user/item embeddings, biases, and each dense weight of NCF), shared
by that tensor's coordinates, as in the original. The (h, c) state of a coordinate persists across online batches;
for embedding tables it is allocated lazily for the rows the stream has touched (a row never touched starts from
the LSTM's learnable initial state ``(h_0, c_0)``), so memory grows with what the stream touches, not with the
catalogue. Dense weights are "one row" that every batch touches.

Per online batch B_t (the common meta-learning pattern of ``docs/strategies.md``):

1. **look-ahead** on B_t^last (the previous interaction of each user and item of B_t, one fresh training negative
   each): ``θ̂ = f ⊙ θ − lr ⊙ g`` on the rows B_t^last touches (only those B_t also uses: the others cannot
   change the meta loss) and the dense weights, differentiable w.r.t. the meta-model, from the stored LSTM states
   (read, not written: the look-ahead is thrown away);
2. **meta step**: Adam (lr 1e-4, weight decay 1e-6) on the mean loss of B_t under θ̂, gradient values clipped
   at 0.25;
3. **real update** of the rows B_t touches (and the dense weights) with the updated meta-model; the new LSTM
   states are stored.

Defaults and where they come from: hidden size 16, b_lr = 0, b_f = 5, gradient clip [−1, 1], Xavier-normal gate
weights, LayerNorm on h, 5 inputs: the original ScenarioMeta code; meta-optimiser settings: ``docs/strategies.md``.

Deviations from the original, stated:

- The original learns a stop controller that decides how many inner update steps to take on a scenario. Online
  we take exactly one update per batch, so there is nothing to stop and the controller is **not used**.
- The original meta-trains across scenarios (tasks); here the meta-model is trained on the stream itself by the
  look-ahead on B_t^last, as every meta strategy of this benchmark (``melonbench.pipeline.meta_pretrain``).
- The original's tweak of the LSTM cell's own bias at initialisation is not reproduced (PyTorch's default
  ``LSTMCell`` initialisation is used).
- Learning-rate capture stores ``lr / B`` (the weight of each interaction's gradient in the mean-loss step, as
  Default's ``η / n``); the forget rate is not part of W.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from melonbench.online.cuda_graph import GraphedStep, load_optimizer_state
from melonbench.online.seeding import derive_seed, generator
from melonbench.strategies.base import (
    Strategy,
    lookahead_batch,
    padded_lookahead_batch,
    sorted_rows,
    touched_rows,
)
from melonbench.strategies.lazy_state import DenseState, LazyState
from melonbench.strategies.preprocess import prep
from melonbench.strategies.s2meta_cell import MetaLSTMCell
from melonbench.strategies.space import Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


@dataclasses.dataclass(frozen=True)
class S2MetaConfig:
    hidden: int = 16  # MetaLSTM hidden size (original ScenarioMeta code; docs/strategies.md)
    lr_bias: float = 0.0  # b_lr initial value (original code)
    forget_bias: float = 5.0  # b_f initial value, forget ≈ σ(5) at the start (original code)
    grad_clip: float = 1.0  # gradients clipped to [−1, 1] before the update (original code)
    meta_lr: float = 1e-4  # meta-optimiser Adam lr (docs/strategies.md)
    meta_weight_decay: float = 1e-6  # meta-optimiser weight decay (docs/strategies.md)
    meta_clip: float = 0.25  # meta-gradient value clip (docs/strategies.md)
    meta_epochs: int = 10  # passes over the pre-training part to pre-train the MetaLSTMs (as MeLON, MWNet, MetaSGD)
    cuda_graphs: bool = True  # on CUDA, replay each batch's steps as a CUDA graph (docs/baselines.md)


CHUNK = 4096
"""Coordinates per LSTM evaluation (see :meth:`MetaLSTM.forward`)."""


def _chunks(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``t`` in chunks of ``CHUNK`` rows on a CPU, whole on a GPU (one chunk, maybe empty, at least).

    Chunks keep the ``[chunk, 4H]`` intermediates in cache: faster on a CPU than one pass over ~30,000 coordinates
    (measured); every coordinate is computed independently. On a GPU each chunk costs its ~25 operations' launches
    whatever its size, and the whole ``[P, 4H]`` is a few MiB, so there it is one chunk. ``split``, not slicing: one
    backward node for all chunks, where each slice's backward would fill a full-size zero tensor.
    """
    if t.shape[0] == 0 or t.device.type != "cpu":
        return (t,)
    return t.split(CHUNK)


class MetaLSTM(nn.Module):
    """The coordinate-wise update rule: ``(g, θ, L, (h, c)) → (lr, f, (h', c'))`` for ``P`` coordinates at once."""

    def __init__(self, hidden: int, lr_bias: float, forget_bias: float) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(5, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.lr_gate = nn.Linear(hidden, 1)
        self.forget_gate = nn.Linear(hidden, 1)
        for gate, bias in ((self.lr_gate, lr_bias), (self.forget_gate, forget_bias)):
            nn.init.xavier_normal_(gate.weight)
            nn.init.constant_(gate.bias, bias)
        self.h0 = nn.Parameter(torch.randn(hidden))
        self.c0 = nn.Parameter(torch.randn(hidden))

    def forward(
        self,
        grad: torch.Tensor,
        param: torch.Tensor,
        loss: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        keep_state: bool = True,
        fresh: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """``grad``, ``param``: ``Float[P]``; ``loss``: scalar; ``state``: two ``Float[P, H]``.

        ``fresh`` (``Float[P]``, optional): 1 for the coordinates whose ``state`` holds ``(h0, c0)``, 0 elsewhere;
        then ``state`` must carry no gradient: ``h0`` and ``c0`` get theirs from ``fresh``, a sum over those rows
        instead of a backward pass through a whole ``[P, H]`` state (cheaper by a matmul per chunk).

        Returns ``lr``, ``forget`` (``Float[P]`` each) and the new state (``None`` unless ``keep_state``: the
        look-ahead throws it away). The arithmetic is ``nn.LSTMCell``, ``nn.LayerNorm`` and the two gates, computed
        by :class:`MetaLSTMCell` from the same parameters.
        """
        hidden = self.cell.hidden_size
        scale = torch.ones(4 * hidden, device=grad.device)
        scale[2 * hidden : 3 * hidden] = 2.0  # the g gate's rows: tanh(z) = 2σ(2z) − 1, and ×2 is exact
        weight = (torch.cat([self.cell.weight_ih, self.cell.weight_hh], 1) * scale[:, None]).t()  # [5 + H, 4H]
        bias = (self.cell.bias_ih + self.cell.bias_hh) * scale  # [4H]
        gate_weight = torch.cat([self.lr_gate.weight, self.forget_gate.weight]).t()  # [H, 2]: lr, forget
        gate_bias = torch.cat([self.lr_gate.bias, self.forget_gate.bias])
        # xh = [x, h] with x = [prep(g), prep(θ), prep(L)_0] ([P, 5]), written in place: one copy of each part.
        # prep(L)[1] is sign(L) = 1 for a positive loss: the original feeds only the magnitude feature.
        xh = grad.new_empty(grad.shape[0], 5 + hidden)
        xh[:, :4] = prep(torch.stack([grad, param], 1)).flatten(1)
        xh[:, 4:5] = prep(loss.reshape(1))[:, :1]
        xh[:, 5:] = state[0]
        norm = (self.norm.weight, self.norm.bias, gate_weight, gate_bias, self.norm.eps)
        if not torch.is_grad_enabled():  # the real update: chunks write straight into the whole-batch outputs
            n = xh.shape[0]
            gates, h, c = xh.new_empty(n, 2), xh.new_empty(n, hidden), xh.new_empty(n, hidden)
            for xh_, c_, *out in zip(_chunks(xh), _chunks(state[1]), _chunks(gates), _chunks(h), _chunks(c)):
                MetaLSTMCell.compute(xh_, c_, weight, bias, *norm, out=out)
            return gates[:, 0], gates[:, 1], (h, c) if keep_state else None
        h0, c0 = (None, None) if fresh is None else (self.h0, self.c0)
        xh_parts, c_parts = _chunks(xh), _chunks(state[1])
        fresh_parts = [None] * len(xh_parts) if fresh is None else _chunks(fresh)
        outputs = []
        for xh_part, c_part, fresh_part in zip(xh_parts, c_parts, fresh_parts, strict=True):
            gates, h, c = MetaLSTMCell.apply(xh_part, c_part, fresh_part, h0, c0, weight, bias, *norm)
            outputs.append((gates[:, 0], gates[:, 1], h, c))
        lr, forget, h, c = zip(*outputs, strict=True)
        return torch.cat(lr), torch.cat(forget), (torch.cat(h), torch.cat(c)) if keep_state else None


@dataclasses.dataclass(frozen=True)
class _Target:
    """One recommender parameter S²Meta updates: its ``named_parameters`` name, its kind, its ``[rows, width]`` view."""

    name: str
    kind: str  # "user", "item" or "dense"
    weight: nn.Parameter

    def rows_view(self) -> torch.Tensor:
        return self.weight.view(1, -1) if self.kind == "dense" else self.weight


class S2Meta(Strategy):
    name = "s2meta"
    label = "S²Meta"
    selective = True
    meta = True
    Config = S2MetaConfig
    space = (Axis("meta_lr", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),)  # the MetaLSTMs' Adam rate, around its 1e-4

    def __init__(self, model: Recommender, config: S2MetaConfig, seed: int) -> None:
        super().__init__(model, config, seed)
        device = next(model.parameters()).device
        self.targets = (
            [_Target(f"{k}.weight", "user", t.weight) for k, t in model.user_tables().items()]
            + [_Target(f"{k}.weight", "item", t.weight) for k, t in model.item_tables().items()]
            + [_Target(k, "dense", p) for k, p in model.dense_parameters().items()]
        )
        with torch.random.fork_rng(devices=[]):  # the meta-model's init depends on the seed only
            torch.manual_seed(derive_seed(seed, "s2meta-init"))
            self.lstms = nn.ModuleDict(
                {
                    t.name.replace(".", "_"): MetaLSTM(config.hidden, config.lr_bias, config.forget_bias)
                    for t in self.targets
                }
            ).to(device)
        graphs = config.cuda_graphs and device.type == "cuda"
        # a graph needs the states' buffers allocated up front (LazyState grows them, after host synchronisations);
        # without one, the lazy store keeps memory to the rows the stream touches (2 · dim · hidden floats a row)
        self.states = self._new_states(DenseState if graphs else LazyState)
        self.meta_optimizer = torch.optim.Adam(
            self.lstms.parameters(),
            lr=config.meta_lr,
            weight_decay=config.meta_weight_decay,
            fused=True,
            capturable=graphs,
        )
        self.generator = generator(seed, "s2meta-last-negatives", device)
        self._graphed = GraphedStep(self._fixed_step, enabled=graphs)

    def _new_states(self, State: type) -> dict[str, LazyState | DenseState]:
        """An empty LSTM state store of kind ``State`` for every target, keyed by target name."""
        device = next(self.lstms.parameters()).device
        return {
            t.name: State(t.rows_view().shape[0], t.rows_view().shape[1], self.config.hidden, device)
            for t in self.targets
        }

    def _rows(self, target: _Target, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if target.kind == "dense":
            return torch.zeros(1, dtype=torch.long, device=users.device)
        return users if target.kind == "user" else items

    def _propose(
        self, loss: torch.Tensor, users: torch.Tensor, items: torch.Tensor, keep_state: bool = True
    ) -> list[tuple[_Target, torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]]:
        """For each target: its rows, the proposed new rows ``f θ − lr g`` (``[R, width]``), lr, and new state.

        Differentiable w.r.t. the MetaLSTMs when grad mode is on; ``users`` / ``items`` are the unique touched rows.
        """
        grads = torch.autograd.grad(loss, [t.weight for t in self.targets], allow_unused=True)
        out = []
        for target, grad in zip(self.targets, grads, strict=True):
            rows = self._rows(target, users, items)
            view = target.rows_view()
            theta = view.detach().index_select(0, rows).reshape(-1)  # [R * width]
            g = torch.zeros_like(theta) if grad is None else grad.reshape(view.shape).index_select(0, rows).reshape(-1)
            g = g.clamp(-self.config.grad_clip, self.config.grad_clip)
            lstm = self.lstms[target.name.replace(".", "_")]
            store = self.states[target.name]
            with torch.no_grad():  # h0 and c0 get their gradient through `fresh`
                state = store.read(rows, lstm.h0, lstm.c0)
            lr, forget, new_state = lstm(g, theta, loss.detach(), state, keep_state, store.fresh(rows))
            new_rows = (forget * theta - lr * g).view(rows.shape[0], -1)
            out.append((target, rows, new_rows, lr.view(rows.shape[0], -1), new_state))
        return out

    def _look_ahead_and_meta_step(self, batch: Batch, history: History) -> None:
        users, items, negatives = lookahead_batch(history, batch, self.generator)  # B_t^last
        if users.numel() == 0:
            return
        loss = self.model(users, items, negatives).mean()
        # Rows of B_t^last that B_t does not use cannot change the meta loss: leaving them out of the look-ahead
        # gives the same meta-gradient for less LSTM work.
        now_u, now_i = touched_rows(self.model, batch)
        rows_u, rows_i = torch.unique(users), torch.unique(torch.cat([items, negatives]))
        rows_u, rows_i = rows_u[torch.isin(rows_u, now_u)], rows_i[torch.isin(rows_i, now_i)]
        substituted = {}
        for target, rows, new_rows, _, _ in self._propose(loss, rows_u, rows_i, keep_state=False):
            full = target.rows_view().detach().index_copy(0, rows, new_rows)
            substituted[target.name] = full.view_as(target.weight)
        meta_loss = torch.func.functional_call(self.model, substituted, (batch.users, batch.items, batch.negatives))
        self.meta_optimizer.zero_grad(set_to_none=True)
        meta_loss.mean().backward()
        nn.utils.clip_grad_value_(self.lstms.parameters(), self.config.meta_clip, foreach=True)
        self.meta_optimizer.step()

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        if self._graphed.enabled and not self.capture_lr:
            last = padded_lookahead_batch(history, batch, self.generator)
            if last is not None:
                return self._graphed(batch.users, batch.items, batch.negatives, *last)
        self._look_ahead_and_meta_step(batch, history)
        losses = self.model(batch.users, batch.items, batch.negatives)  # [B]
        loss = losses.mean()
        rows_u, rows_i = touched_rows(self.model, batch)
        with torch.no_grad():
            proposals = self._propose(loss, rows_u, rows_i)  # autograd.grad still differentiates loss's graph
            for target, rows, new_rows, _, (h, c) in proposals:
                target.rows_view().index_copy_(0, rows, new_rows)
                self.states[target.name].write(rows, h, c)
        if self.capture_lr:
            self.captured_lr = self._lr_matrix(batch, proposals, rows_u, rows_i)
        return losses.detach()

    pretrain_step = online_step

    def _fixed_step(self, users, items, negatives, last_users, last_items, last_negatives, valid) -> torch.Tensor:
        """The three steps at fixed shapes for a CUDA graph: B_t^last padded (``valid`` 0 on the padding), and every
        row list kept at its length with repeats (sorted; a repeat takes its first occurrence's values, and counts
        once in the look-ahead) instead of made unique."""
        # every row of B_t^last (the eager step leaves out those B_t does not read: they cannot change the meta loss)
        loss = (self.model(last_users, last_items, last_negatives) * valid).sum() / valid.sum()
        rows_u, _, keep_u = sorted_rows(last_users, valid)
        rows_i, _, keep_i = sorted_rows(torch.cat([last_items, last_negatives]), valid.repeat(2))
        keep = {"user": keep_u, "item": keep_i}
        substituted = {}
        for target, rows, new_rows, _, _ in self._propose(loss, rows_u, rows_i, keep_state=False):
            view = target.rows_view().detach()
            # θ̂ = θ + (new − θ) on the kept rows: an addition, so that a repeated or unused row adds exact zeros
            delta = (new_rows - view[rows]) * keep[target.kind][:, None] if target.kind in keep else new_rows - view
            substituted[target.name] = view.index_add(0, rows, delta).view_as(target.weight)
        meta_loss = torch.func.functional_call(self.model, substituted, (users, items, negatives))
        self.meta_optimizer.zero_grad(set_to_none=True)
        meta_loss.mean().backward()
        nn.utils.clip_grad_value_(self.lstms.parameters(), self.config.meta_clip, foreach=True)
        self.meta_optimizer.step()

        losses = self.model(users, items, negatives)  # [B]
        loss = losses.mean()
        rows_u, lead_u, _ = sorted_rows(users)
        rows_i, lead_i, _ = sorted_rows(torch.cat([items, negatives]))
        lead = {"user": lead_u, "item": lead_i}
        with torch.no_grad():
            for target, rows, new_rows, _, (h, c) in self._propose(loss, rows_u, rows_i):
                first = lead.get(target.kind)  # a repeated row writes its first occurrence's bits every time
                if first is not None:
                    width = new_rows.shape[1]
                    new_rows = new_rows[first]
                    h, c = (t.view(-1, width, t.shape[1])[first] for t in (h, c))
                target.rows_view().index_copy_(0, rows, new_rows)
                self.states[target.name].write(rows, h, c)
        return losses.detach()

    def _lr_matrix(self, batch: Batch, proposals: list, rows_u: torch.Tensor, rows_i: torch.Tensor) -> torch.Tensor:
        """``Float[B, P]``: the weight ``lr / B`` of each interaction's gradient at each position it touches."""
        n = len(batch)
        parts: dict[str, list[torch.Tensor]] = {"user": [], "pos": [], "neg": [], "dense": []}
        for target, rows, _, lr, _ in proposals:
            if target.kind == "user":
                parts["user"].append(lr[torch.searchsorted(rows, batch.users)])
            elif target.kind == "item":
                parts["pos"].append(lr[torch.searchsorted(rows, batch.items)])
                parts["neg"].append(lr[torch.searchsorted(rows, batch.negatives)])
            else:
                parts["dense"].append(lr.expand(n, -1))
        return torch.cat([p for key in ("user", "pos", "neg", "dense") for p in parts[key]], dim=1) / n

    def meta_state_dict(self) -> dict[str, Any]:
        return {"lstms": self.lstms.state_dict(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_meta_state_dict(self, state: dict[str, Any]) -> None:
        self.lstms.load_state_dict(state["lstms"])
        load_optimizer_state(self.meta_optimizer, state["meta_optimizer"], self._graphed)

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.meta_state_dict(),
            "states": {name: s.state_dict() for name, s in self.states.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_meta_state_dict(state)
        for name, s in self.states.items():
            s.load_state_dict(state["states"][name])
        self.generator.set_state(state["generator"])
