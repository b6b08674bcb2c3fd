"""MeLON: a learning rate for every (interaction, parameter) pair (Kim et al., AAAI 2022), and its ablations.

Per online batch B_t (Algorithm 1, Eq. 14–16), with φ the meta-model:

1. **look-ahead** on B_t^last (the previous interaction of each user and item of B_t, one fresh training negative
   each): θ̃_m = f̄_m θ_m − Σ_x w_{x,m} ∇_{θ_m}ℓ_x for every parameter the interactions touch, differentiable in φ
   (only for the rows B_t reads, the others being thrown away unread: same meta-gradient, less work);
2. **meta step**: φ ← Adam(1e-3) on (1/n) Σ_{x∈B_t} ℓ_x(θ̃) (``torch.func.functional_call`` on substituted
   tables: the recommender's own tensors are never modified by the look-ahead, but in ``reference``);
3. **update** on B_t with the new φ, from θ_t, touching only the parameters each interaction uses.

Rates (Eq. 8–12): ``w_{x,m}, f_{x,m} = σ(a_x + b_{x,m} + c)``, the fused gate split into an interaction part
``a_x = V h_x`` (h_x: graph attention over up to 10 neighbours of u and of i, on the detached recommender
embeddings) and a role part ``b_{x,m} = U h_{x,m}`` with ``h_{x,m} = MLP([θ_m, prep ℓ_x, prep ∇_{θ_m}ℓ_x])``.
Per-interaction gradients: closed form for BPR-MF, ``torch.func.vmap(grad)`` otherwise (see ``grads``);
NCF's dense weights get a rate per (interaction, weight) pair, computed in chunks of ``chunk`` pairs, each one
autograd node (``parts.DenseStep``) that recomputes its activations in the backward pass so that memory
stays bounded (with ``fused_role`` on CUDA: all at once, in two Triton kernels, ``fused``).

Variants (``variant``; docs/melon.md, "The variants" and "Stability on real data"):
- ``paper``: a parameter touched by several interactions gets the **sum** of their gradient steps, Eq. 5 as
  written, and the **mean** of their forget rates, θ ← f̄ θ − Σ_x w g (summing forget rates would shrink a shared
  weight to its opposite). On Grocery its meta pre-training diverges for every seed: the meta-model drives the
  rates to σ ≈ 1 within about 60 batches, and a row that 40–200 interactions of a batch touch then moves by as
  many gradient steps at once;
- ``paper-mean`` (the default): the same networks and equations, the steps **averaged** over the interactions
  that touch the parameter, θ ← f̄ θ − mean_x w g (the released code's aggregation); stable on the same data.

Choices where the paper is silent (see docs/melon.md):
- gate biases start as the reference code's (lr ≈ σ(−4.5) ≈ 0.011..0.018, forget ≈ 0.98..0.998);
- h_x for B^last interactions uses the neighbours before the current batch (not before each interaction);
- the neighbours are the 10 most recent ones by default, where the paper samples up to 10
  (``neighbour_sampling="sample"``: uniform without replacement, from the strategy's own seeded generator);
- the look-ahead's negatives are drawn among items that exist at the current batch.

``variant="reference"`` reproduces the released code where it differs: role input [prep ℓ̄_batch, prep ∇] with
no θ through one linear layer (4 → 20), h_x with self + neighbour projections and BatchNorm layers (20 dims),
per-row **averaging** of steps, and the look-ahead's changes to rows touched only by B^last are **kept**.

Ablations (Table 3): ``melon-i`` drops the role part (one rate per interaction), ``melon-p`` drops h_x and feeds
the role part batch-level inputs (mean loss, batch gradient of θ_m): one rate per parameter. Both are rank-1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from melonbench.core.errors import MelonbenchError
from melonbench.online.cuda_graph import GraphedStep, load_optimizer_state
from melonbench.online.seeding import derive_seed, generator
from melonbench.strategies.base import Strategy, lookahead_batch, padded_lookahead_batch
from melonbench.strategies.melon import fused as melon_fused
from melonbench.strategies.melon.capture import capture
from melonbench.strategies.melon.config import LAYOUTS, NEIGHBOUR_SAMPLING, SPACE, VARIANTS, MelonConfig
from melonbench.strategies.melon.grads import (
    TableSlots,
    Touched,
    batch_row_grads,
    per_sample,
    row_mask,
    side_columns,
    split_side,
    table_slots,
    unflatten_dense,
)
from melonbench.strategies.melon.parts import DenseStep, MetaModel, Workspace
from melonbench.strategies.preprocess import prep

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


class Melon(Strategy):
    """MeLON: a learning rate for every (interaction, parameter) pair from a meta-model (Kim et al., AAAI 2022).

    The module docstring gives the equations; ``mode`` selects the full model or an ablation.
    """

    name = "melon"
    label = "MeLON"
    meta = True
    Config = MelonConfig
    space = SPACE
    mode: ClassVar[str] = "full"

    def __init__(self, model: Recommender, config: MelonConfig, seed: int) -> None:
        super().__init__(model, config, seed)
        if config.variant not in VARIANTS:
            raise MelonbenchError(f"melon variant must be one of {', '.join(VARIANTS)}, got '{config.variant}'")
        if config.capture_layout not in LAYOUTS:
            raise MelonbenchError(f"capture_layout must be one of {', '.join(LAYOUTS)}, got '{config.capture_layout}'")
        if config.neighbour_sampling not in NEIGHBOUR_SAMPLING:
            raise MelonbenchError(
                f"neighbour_sampling must be one of {', '.join(NEIGHBOUR_SAMPLING)}, got '{config.neighbour_sampling}'"
            )
        device = next(model.parameters()).device
        self.layout: list[TableSlots] = table_slots(model)
        self._side_columns = side_columns(self.layout, device)
        user_dim = sum(t.dim for t in self.layout if t.user)
        item_dim = sum(t.dim for t in self.layout if not t.user)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, f"{self.name}-init"))
            init = torch.Generator().manual_seed(derive_seed(seed, f"{self.name}-gates"))
            self.phi = MetaModel(user_dim, item_dim, config, self.mode, init).to(device)
        graphs = config.cuda_graphs and device.type == "cuda"
        # capturable: the step counter lives on the GPU, so that a graph replay advances it (same arithmetic)
        self.optimizer = torch.optim.Adam(self.phi.parameters(), lr=config.meta_lr, fused=True, capturable=graphs)
        self._graphed = GraphedStep(self._padded_step, enabled=graphs)
        mlp = self.mode == "full" and self.phi.role.second is not None and bool(model.dense_parameters())  # paper, NCF
        self.fused = melon_fused.wanted(config.fused_role and mlp, device, config.role_hidden)  # in the manifest
        self.generator = generator(seed, f"{self.name}-lookahead-negatives", device)
        self.neighbour_generator = generator(seed, f"{self.name}-neighbours", device)  # neighbour_sampling=sample
        # scratch memory for the role network's [pairs, R] activations, reused batch after batch (not state)
        self._row_work, self._dense_work = Workspace(self.phi.gate_bias), Workspace(self.phi.gate_bias)

    @property
    def selective(self) -> bool:  # type: ignore[override]
        return self.config.variant != "reference"  # the released code keeps the look-ahead on B^last's own rows

    # ---- the three steps --------------------------------------------------------------------------------------
    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        if self._graphs_apply(history):
            inputs = self._padded_inputs(batch, history)
            if inputs is not None:
                return self._graphed(*inputs)
        if history.cursor > 0:
            self._meta_step(batch, history)
        neighbours = self._neighbours(history, batch.users, batch.items)
        return self._update(batch.users, batch.items, batch.negatives, neighbours)

    def pretrain_step(self, batch: Batch, history: History) -> torch.Tensor:
        return self.online_step(batch, history)

    def _meta_step(self, batch: Batch, history: History) -> None:
        """Look-ahead on B^last with φ_t, then one Adam step of φ on the looked-ahead loss of B_t (Eq. 14–15)."""
        # one host synchronisation: B^last has a data-dependent size, and compacting it halves the work
        users, items, negatives = lookahead_batch(history, batch, self.generator)
        if users.numel() == 0:
            return
        touched = per_sample(self.model, self.layout, users, items, negatives)
        valid = torch.ones_like(touched.losses)
        h = self._encode(users, items, self._neighbours(history, users, items))
        if self._compact:
            needed = [row_mask(group[0], batch.users, batch.items, batch.negatives) for group, _ in self._side_columns]
            tables, dense = self._lookahead_rows(touched, h, needed), self._dense(touched, h, touched.losses, valid)
        else:
            tables, dense, _ = self._apply(touched, h, valid)
        self._meta_update(tables, dense, batch.users, batch.items, batch.negatives)
        if self.config.variant == "reference":  # the released code keeps the look-ahead on rows B_t leaves alone
            with torch.no_grad():
                for t in self.layout:
                    own = row_mask(t, batch.users, batch.items, batch.negatives)
                    ahead = row_mask(t, users, items, negatives)
                    keep = (ahead & ~own).unsqueeze(1)
                    t.table.weight.copy_(torch.where(keep, tables[t.name].detach(), t.table.weight))

    def _meta_update(self, tables: dict, dense: torch.Tensor, users, items, negatives) -> None:
        """One Adam step of φ on the mean loss of (users, items, negatives) under the looked-ahead parameters."""
        params = {f"{t.name}.weight": tables[t.name] for t in self.layout}
        params.update(unflatten_dense(self.model, dense))
        loss = functional_call(self.model, params, (users, items, negatives)).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def _update(self, users, items, negatives, neighbours) -> torch.Tensor:
        """Step 3: the rates of φ applied to the parameters the interactions touch; returns their losses ℓ_x(θ_t)."""
        with torch.no_grad():
            touched = per_sample(self.model, self.layout, users, items, negatives)
            h = self._encode(users, items, neighbours)
            valid = torch.ones_like(touched.losses)
            tables, dense, rates = self._apply(touched, h, valid)
            for t in self.layout:
                t.table.weight.copy_(tables[t.name])
            for name, value in unflatten_dense(self.model, dense).items():
                self.model.dense_parameters()[name].copy_(value)
            if self.capture_lr:
                loss_in = self._loss_input(touched, valid)

                def rate(theta: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
                    return torch.sigmoid(self._logits(h, theta, loss_in, grads))[..., 0]

                self.captured_lr = capture(
                    touched,
                    rates[0],
                    rate,
                    self.layout,
                    batch_level=self.mode == "p",
                    columns=self.config.capture_layout,
                    dense_cap=self.config.capture_dense,
                )
        return touched.losses

    # ---- the same steps at fixed shapes, for CUDA graphs ---------------------------------------------------------
    def _graphs_apply(self, history: History) -> bool:
        """Whether this batch goes through :meth:`_padded_step` (replayed as a CUDA graph): ``cuda_graphs`` on a
        CUDA device, not the ``reference`` variant (its BatchNorm would see the padding), no capture."""
        return self._graphed.enabled and self.selective and history.cursor > 0 and not self.capture_lr

    def _padded_inputs(self, batch: Batch, history: History) -> tuple[torch.Tensor, ...] | None:
        """The tensors :meth:`_padded_step` reads: B_t, then B^last padded to ``2 |B_t|`` rows (id 0, valid 0),
        its validity, and the neighbours of both (none for melon-p). ``None`` when B^last is empty (no meta step).

        B^last and its negatives come from the same calls, in the same order, as in the eager step (two host
        synchronisations, outside the graph), so both paths draw the same negatives."""
        last = padded_lookahead_batch(history, batch, self.generator, self.config.graph_bucket)
        if last is None:
            return None
        users, items, size = last[0], last[1], last[0].shape[0]
        if self.config.neighbour_sampling == "sample":  # the eager step's draws: for the M real rows, then padding
            m = int(last[3].sum())
            last_neighbours = self._neighbours(history, users[:m], items[:m]) or ()
            last_neighbours = tuple(torch.cat([t, t.new_zeros(size - m, *t.shape[1:])]) for t in last_neighbours)
        else:
            last_neighbours = self._neighbours(history, users, items) or ()
        now = self._neighbours(history, batch.users, batch.items) or ()
        return (batch.users, batch.items, batch.negatives, *last, *last_neighbours, *now)

    def _padded_step(self, users, items, negatives, last_users, last_items, last_negatives, valid, *neighbours):
        """Meta step and update of one batch at fixed shapes, with no host synchronisation: the full look-ahead
        on the padded B^last (the padding's steps and forget rates weighted by ``valid = 0``), then the update."""
        half = len(neighbours) // 2
        touched = per_sample(self.model, self.layout, last_users, last_items, last_negatives)
        h = self._encode(last_users, last_items, neighbours[:half] or None)
        tables, dense, _ = self._apply(touched, h, valid)
        self._meta_update(tables, dense, users, items, negatives)
        return self._update(users, items, negatives, neighbours[half:] or None)

    @property
    def _compact(self) -> bool:
        """Whether the look-ahead computes only the rows B_t reads: outside ``reference`` the other rows are thrown
        away unread, and each rate depends on its own pair only, so the meta-gradient is the same. The ablations'
        rates are cheap and keep the plain path."""
        return self.config.variant != "reference" and self.mode == "full"

    def _lookahead_rows(self, touched: Touched, h: torch.Tensor, needed: list[torch.Tensor]) -> dict:
        """Look-ahead tables, exact on the rows flagged in ``needed`` (one ``Bool[rows]`` per side); other rows as
        they are. Only the (interaction, slot) blocks of needed rows go through the role network: ≈ 57 % of them
        on a Grocery-sized stream (one more host synchronisation, for the number of blocks)."""
        sides = []
        for (group, ids, cols), mask in zip(self._sides(touched), needed):
            slots = ids.shape[1]
            block = mask[ids].reshape(-1).nonzero().squeeze(1)  # [k] over (interaction, slot)
            x = block // slots
            col = cols.view(slots, -1)[block % slots]  # [k, width]: the block's row columns
            sides.append(
                (group, ids.reshape(-1)[block], x, touched.theta[x[:, None], col], touched.grads[x[:, None], col])
            )
        # both sides as one role-network call ([k, width] blocks; a narrower side, such as the users' side with no
        # bias table, is padded with zero columns whose rates are dropped)
        width = max(s[3].shape[1] for s in sides)
        x = torch.cat([s[2] for s in sides])
        theta = torch.cat([F.pad(s[3], (0, width - s[3].shape[1])) for s in sides])
        grads = torch.cat([F.pad(s[4], (0, width - s[4].shape[1])) for s in sides])
        gates = torch.sigmoid(self._logits(h[x], theta, touched.losses[x], grads, self._row_work))
        tables = {}
        for (group, rows, _, _, grads), side_gates in zip(sides, gates.split([s[2].shape[0] for s in sides])):
            side_gates = side_gates[:, : grads.shape[1]]
            lr, forget = side_gates[..., 0], side_gates[..., 1]
            ones = torch.ones_like(rows, dtype=lr.dtype)
            tables.update(split_side(group, self._aggregate(group, rows[:, None], lr * grads, forget, ones)))
        return tables

    # ---- rates and their application --------------------------------------------------------------------------
    def _neighbours(self, history: History, users: torch.Tensor, items: torch.Tensor) -> tuple | None:
        """The neighbours h_x attends to, ``(user_nb, user_mask, item_nb, item_mask)`` ``[n, K]`` each: the K most
        recent ones, or K drawn uniformly (``neighbour_sampling``). None for melon-p (no interaction input)."""
        if self.phi.encoder is None:
            return None
        k = self.config.neighbours
        if self.config.neighbour_sampling == "sample":
            gen = self.neighbour_generator
            return (*history.sampled_user_neighbours(users, k, gen), *history.sampled_item_neighbours(items, k, gen))
        user_nb, user_mask = history.user_neighbours(users)
        item_nb, item_mask = history.item_neighbours(items)
        return user_nb[:, :k], user_mask[:, :k], item_nb[:, :k], item_mask[:, :k]

    def _encode(self, users: torch.Tensor, items: torch.Tensor, neighbours: tuple | None) -> torch.Tensor | None:
        """h_x ``[n, hidden]`` for each interaction, on the recommender's detached rows (None for melon-p)."""
        if neighbours is None:
            return None
        user_nb, user_mask, item_nb, item_mask = neighbours
        user_rows = torch.cat([t.table.weight.detach() for t in self.layout if t.user], 1)  # [U, dU]
        item_rows = torch.cat([t.table.weight.detach() for t in self.layout if not t.user], 1)  # [I, dI]
        return self.phi.encoder(
            user_rows[users], item_rows[items], item_rows[user_nb], user_mask, user_rows[item_nb], item_mask
        )

    def _logits(self, h: torch.Tensor | None, theta, loss, grads, work: Workspace | None = None) -> torch.Tensor:
        """Gate logits ``[n|1, c, 2]`` for row or dense columns (``theta [n|1, c]``, ``grads [n|1, c]``)."""
        out = self.phi.gate_bias
        if h is not None:
            out = out + self.phi.gate_x(h).unsqueeze(1)  # [n, 1, 2]
        if self.phi.role is not None:
            out = out + self.phi.role(theta, loss, grads, work)
        return out if out.dim() == 3 else out.view(1, 1, 2)

    def _loss_input(self, touched: Touched, valid: torch.Tensor) -> torch.Tensor:
        """ℓ_x per interaction (paper), or the batch-mean loss (reference, melon-p): ``[n]`` or ``[1]``."""
        if self.mode == "p" or self.config.variant == "reference":
            mean = (touched.losses * valid).sum() / valid.sum().clamp_min(1)
            return mean.view(1) if self.mode == "p" else mean.expand_as(touched.losses)
        return touched.losses

    def _apply(self, touched: Touched, h, valid: torch.Tensor):
        """New full tables, new flat dense parameters and the row rates ``[n, C]`` (lr, forget)."""
        loss_in = self._loss_input(touched, valid)
        grads = touched.grads
        if self.mode == "p":  # batch gradient of each row, seen by every interaction that touches it
            grads = batch_row_grads(self.layout, touched, valid)
        logits = self._logits(h, touched.theta, loss_in, grads, self._row_work)
        gates = torch.sigmoid(logits).expand(touched.theta.shape[0], touched.theta.shape[1], 2)
        lr, forget = gates[..., 0], gates[..., 1]
        tables = {}
        step_all = lr * touched.grads  # [n, C]
        for group, ids, cols in self._sides(touched):
            tables.update(split_side(group, self._aggregate(group, ids, step_all[:, cols], forget[:, cols], valid)))
        dense = self._dense(touched, h, loss_in, valid)
        return tables, dense, (lr, forget)

    def _sides(self, touched: Touched):
        """:func:`side_columns`, each side with its shared row ids ``[n, slots]``."""
        for group, cols in self._side_columns:
            yield group, touched.ids[self.layout.index(group[0])], cols

    def _aggregate(self, group: list[TableSlots], ids, steps, forget, valid) -> torch.Tensor:
        """``f̄ θ − Σ w g`` (``paper``) or ``f̄ θ − mean w g`` (``paper-mean``, ``reference``) on the rows ``ids``
        touch, the mean over the interactions that touch the row; other rows as they are, for the
        side's tables side by side: ``[rows, Σ dim]``. ``steps`` and ``forget`` are ``[n, slots × Σ dim]``."""
        n, slots = ids.shape
        flat = ids.reshape(-1)
        v = valid.unsqueeze(1).expand(n, slots).reshape(-1, 1)
        weight = torch.cat([t.table.weight.detach() for t in group], 1)
        width = weight.shape[1]
        count = torch.zeros(weight.shape[0], 1, device=weight.device).index_add(0, flat, v)
        step = torch.zeros_like(weight).index_add(0, flat, v * steps.reshape(-1, width))
        keep = torch.zeros_like(weight).index_add(0, flat, v * forget.reshape(-1, width)) / count.clamp_min(1)
        if self.config.averaged:
            step = step / count.clamp_min(1)
        return torch.where(count > 0, keep * weight - step, weight)

    def _dense(self, touched: Touched, h, loss_in, valid) -> torch.Tensor:
        """New dense parameters ``Float[P]``: per (interaction, weight) rates, reduced chunk by chunk."""
        theta, grads = touched.dense_theta, touched.dense_grads
        if theta.numel() == 0:
            return theta
        n_valid = valid.sum().clamp_min(1)
        mean = self.config.averaged  # every interaction touches every dense weight: the mean over the batch
        if self.mode == "p":
            g_batch = valid @ grads  # [P]
            gates = torch.sigmoid(self._logits(None, theta[None], loss_in, g_batch[None]))[0]  # [P, 2]
            step = gates[:, 0] * g_batch
            return gates[:, 1] * theta - (step / n_valid if mean else step)
        if self.mode == "i":
            gates = torch.sigmoid(self._logits(h, None, None, None))[:, 0]  # [n, 2]
            step = (valid * gates[:, 0]) @ grads
            keep = (valid * gates[:, 1]).sum() / n_valid
            return keep * theta - (step / n_valid if mean else step)

        pairs = self.config.chunk or (1 << 15 if theta.device.type == "cpu" else 1 << 20)
        width = max(1, pairs // max(1, grads.shape[0]))
        chunks = [(theta[lo : lo + width], grads[:, lo : lo + width]) for lo in range(0, theta.shape[0], width)]
        role = self.phi.role
        if role.second is not None:  # the paper's MLP: hand-written backward, activations recomputed per chunk
            gate_x = self.phi.gate_bias + self.phi.gate_x(h)  # [n, 2]
            per_x = role.w_loss(prep(loss_in))  # [n|1, R]
            weights = (
                role.w_theta.weight[:, 0],
                role.w_grad.weight,
                role.second.weight,
                role.second.bias,
                role.head.weight,
            )
            if self.fused:  # all pairs at once, their activations in registers only (fused.py)
                return melon_fused.FusedDenseStep.apply(theta, grads, per_x, gate_x, *weights, valid, mean)
            work = self._dense_work
            return torch.cat([DenseStep.apply(t, g, per_x, gate_x, *weights, valid, mean, work) for t, g in chunks])

        def chunk_update(theta_c, grads_c, h_, loss_):  # reference: one linear layer, autograd + checkpointing
            gates = torch.sigmoid(self._logits(h_, theta_c[None], loss_, grads_c))  # [n, c, 2]
            step = valid @ (gates[..., 0] * grads_c)
            keep = (valid @ gates[..., 1]) / n_valid
            return keep * theta_c - (step / n_valid if mean else step)

        grad = torch.is_grad_enabled()
        parts = [
            checkpoint(chunk_update, t, g, h, loss_in, use_reentrant=False) if grad else chunk_update(t, g, h, loss_in)
            for t, g in chunks
        ]
        return torch.cat(parts)

    # ---- state ------------------------------------------------------------------------------------------------
    def meta_state_dict(self) -> dict:
        return {"phi": self.phi.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_meta_state_dict(self, state: dict) -> None:
        self.phi.load_state_dict(state["phi"])
        load_optimizer_state(self.optimizer, state["optimizer"], self._graphed)

    def state_dict(self) -> dict:
        return {
            **self.meta_state_dict(),
            "generator": self.generator.get_state(),
            "neighbour_generator": self.neighbour_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_meta_state_dict(state)
        self.generator.set_state(state["generator"])
        self.neighbour_generator.set_state(state["neighbour_generator"])


class MelonI(Melon):
    """Ablation MeLON_I: interaction inputs only; every parameter x touches gets x's rate (rank-1 W)."""

    name = "melon-i"
    label = "MeLON-I"
    mode = "i"


class MelonP(Melon):
    """Ablation MeLON_P: parameter inputs only (batch-mean loss, batch gradient); one rate per parameter."""

    name = "melon-p"
    label = "MeLON-P"
    mode = "p"
