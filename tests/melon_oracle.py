"""An independent oracle for MeLON (Kim et al., AAAI 2022): Eq. 8–16 written out plainly, for tiny models.

Written from the paper (``../shared/docs/paper.md``) and ``docs/melon.md``, it shares no code with
``melonbench.strategies.melon``: it reads the meta-model's *parameters* φ by name (the weights of the MetaModel's
modules) and uses the recommender itself (its tables, its ``bpr_loss``), and nothing else. Every interaction is a
Python loop iteration, every per-interaction gradient one ``torch.autograd.grad`` call, every rate one row of a
plain MLP, every new parameter a sum over the interactions that touch it. It is slow: for a handful of users and
items. It computes in the dtype of the model it is given (the tests give it float64 copies).

One online batch B_t (Algorithm 1 of the paper's appendix; docs/melon.md, "What one online batch does"):

1. **B_t^last**: the last interaction before the batch of each user and of each item of B_t (found by scanning the
   stream), in position order. Its negatives are *given* (:meth:`MelonOracle.step` takes them): drawn by the
   library's leak-free sampler from the strategy's own generator, so that both see the same ones; the oracle checks
   that they obey the rule docs/melon.md states (an item that exists before the batch, not the positive, not one
   of the user's items before the interaction).
2. **Look-ahead** (Eq. 14) with φ_t: for every interaction x = (u, i, j) of B_t^last and every recommender scalar
   θ_m that scoring x reads (u's rows, i's and j's rows, every dense weight), a learning rate and a forget rate
   ``w_{x,m}, f_{x,m} = σ(V h_x + U h_{x,m} + c)`` (Eq. 12, its two gates), with

   - h_x (Eq. 8–10) from the *detached* recommender rows, an id's rows being its tables' rows side by side:
     ``α_k = softmax_k LeakyReLU(a_Uᵀ[e_u, e_{i_k}] + b)`` over u's neighbours i_k (LeakyReLU slope 0.01,
     PyTorch's default: the paper gives none), ``ẽ_u = ReLU(W_user [e_u, Σ_k α_k e_{i_k}] + b_user)``, the same
     for i over its users, ``h_x = ReLU(W_x [ẽ_u, ẽ_i] + b_x)``; the neighbours are the 10 most recent partners
     before the batch (``neighbour_sampling=recent``);
   - h_{x,m} (Eq. 11) = two ReLU layers on ``[θ_m, prep ℓ_x, prep ∂ℓ_x/∂θ_m]`` (prep: Andrychowicz et al., p = 10);

   then ``θ̃_m = mean_x f_{x,m} · θ_m − Σ_x w_{x,m} ∂ℓ_x/∂θ_m`` over the interactions x that touch θ_m (θ̃_m = θ_m
   where none does), differentiable in φ; with ``average`` (the ``paper-mean`` variant) the steps' sum is divided
   by the number of those interactions. The gradients are taken at θ_t, one autograd call per interaction.
3. **Meta step** (Eq. 15): ``L = (1/n) Σ_{x∈B_t} ℓ_x(θ̃)``, its gradient with respect to φ, one Adam step
   (lr 1e-3, β = (0.9, 0.999), ε = 1e-8, bias-corrected; a parameter L does not reach is left alone).
4. **Update** (Eq. 16): the same rule on B_t with φ_{t+1}, from θ_t, written into the recommender.

Ablations (docs/melon.md, "Ablations"): ``mode="i"`` (MeLON_I) drops h_{x,m}: ``σ(V h_x + c)`` for every
parameter x touches; ``mode="p"`` (MeLON_P) drops h_x and feeds the role network batch-level inputs, the batch-mean
loss and ``∂(Σ_x ℓ_x)/∂θ_m``: one rate per parameter for the whole batch.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.func import functional_call

P = 10.0  # prep's p (Andrychowicz et al. 2016)
BETAS, EPS = (0.9, 0.999), 1e-8  # Adam's defaults, as Algorithm 1's Adam


def prep(g: torch.Tensor) -> torch.Tensor:
    """``(log|g| / p, sign g)`` when ``|g| ≥ e^(−p)``, else ``(−1, e^p g)``: ``g.shape + (2,)``."""
    big = g.abs() >= math.exp(-P)
    safe = torch.where(big, g.abs(), torch.ones_like(g))  # no log(0) on the branch that is not taken
    first = torch.where(big, torch.log(safe) / P, -torch.ones_like(g))
    second = torch.where(big, torch.sign(g), g * math.exp(P))
    return torch.stack([first, second], -1)


def leaky_relu(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z > 0, z, 0.01 * z)


def last_interactions(stream_users, stream_items, cursor: int, users, items) -> list[int]:
    """B_t^last by scanning the stream: positions of the last interaction before ``cursor`` of each user in
    ``users`` and of each item in ``items``, without repeats, in position order."""
    su, si = stream_users[:cursor].tolist(), stream_items[:cursor].tolist()
    last = set()
    for ids, column in ((set(users.tolist()), su), (set(items.tolist()), si)):
        for wanted in ids:
            seen = [p for p in range(cursor) if column[p] == wanted]
            if seen:
                last.add(seen[-1])
    return sorted(last)


def recent_partners(ids: list[int], others: list[int], cursor: int, wanted: int, k: int) -> list[int]:
    """The partners of ``wanted`` in its last ``k`` interactions before ``cursor``, most recent first."""
    return [others[p] for p in range(cursor - 1, -1, -1) if ids[p] == wanted][:k]


class MelonOracle:
    """MeLON's online step, Eq. 8–16, the slow way (module docstring).

    Parameters
    ----------
    model : Recommender
        Copied: the oracle keeps its own recommender (``self.model``), in the model's dtype.
    meta : torch.nn.Module
        The strategy's meta-model: its parameters are copied by name (``self.phi``); nothing else of it is used.
    mode : {"full", "i", "p"}
        MeLON, MeLON_I or MeLON_P.
    average : bool
        Average a parameter's steps over the interactions that touch it (``paper-mean``) instead of summing them
        (``paper``, Eq. 5 as written).
    """

    def __init__(
        self, model, meta: torch.nn.Module, mode: str = "full", lr: float = 1e-3, neighbours: int = 10, average=False
    ):
        self.model = copy.deepcopy(model)
        dtype = next(self.model.parameters()).dtype
        self.phi = {n: p.detach().to(dtype).clone().requires_grad_() for n, p in meta.named_parameters()}
        self.adam = {n: [0, torch.zeros_like(p), torch.zeros_like(p)] for n, p in self.phi.items()}  # t, m, v
        self.mode, self.lr, self.k, self.average = mode, lr, neighbours, average
        self.names = [n for n, _ in self.model.named_parameters()]
        self.user_tables = [f"{n}.weight" for n in self.model.user_tables()]
        self.item_tables = [f"{n}.weight" for n in self.model.item_tables()]

    # ---- one online batch ---------------------------------------------------------------------------------------
    def step(self, batch, stream_users, stream_items, cursor: int, last_negatives) -> tuple[torch.Tensor, list[int]]:
        """Meta step on B_t^last (with its given negatives), then the update on ``batch``; returns ℓ_x(θ_t) of B_t
        and the positions of B_t^last."""
        last = last_interactions(stream_users, stream_items, cursor, batch.users, batch.items)
        su, si = stream_users.tolist(), stream_items.tolist()
        if last and cursor > 0:
            users, items = [su[p] for p in last], [si[p] for p in last]
            negatives = last_negatives.tolist()
            assert len(negatives) == len(last)
            for p, u, i, j in zip(last, users, items, negatives, strict=True):  # the rule docs/melon.md states
                born = min(q for q in range(len(si)) if si[q] == j)
                assert born < cursor and j != i and j not in {si[q] for q in range(p) if su[q] == u}
            theta = self._params()
            new = self._new_params(theta, users, items, negatives, su, si, cursor, differentiable=True)
            scored = functional_call(self.model, new, (batch.users, batch.items, batch.negatives))
            self._adam(scored.mean())
        theta = self._params()
        users, items, negatives = batch.users.tolist(), batch.items.tolist(), batch.negatives.tolist()
        new = self._new_params(theta, users, items, negatives, su, si, cursor, differentiable=False)
        with torch.no_grad():
            losses = self.model.bpr_loss(batch.users, batch.items, batch.negatives)
            for name, p in self.model.named_parameters():
                p.copy_(new[name])
        return losses, last

    # ---- the pieces -----------------------------------------------------------------------------------------------
    def _params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _new_params(self, theta, users, items, negatives, su, si, cursor, differentiable: bool) -> dict:
        """θ̃ (or θ_{t+1}) of Eq. 14 / 16 for the interactions (users, items, negatives)."""
        flat = torch.cat([theta[n].reshape(-1) for n in self.names])  # [Q]: every recommender scalar
        per_x = []  # (loss, gradient [Q], touched [Q]) per interaction, at θ_t
        params = [p for _, p in self.model.named_parameters()]
        for u, i, j in zip(users, items, negatives, strict=True):
            with torch.enable_grad():
                loss = self.model.bpr_loss(torch.tensor([u]), torch.tensor([i]), torch.tensor([j]))[0]
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
            per_x.append((loss.detach(), grad, self._touched(theta, u, i, j)))
        with torch.enable_grad() if differentiable else torch.no_grad():
            if self.mode == "p":  # batch-level inputs: the mean loss, the gradient of the summed loss
                mean_loss = torch.stack([x[0] for x in per_x]).mean()
                total = torch.stack([x[1] for x in per_x]).sum(0)
                rates = [torch.sigmoid(self._role(flat, mean_loss, total) + self.phi["gate_bias"])] * len(per_x)
            else:
                rates = []
                for (loss, grad, _), u, i in zip(per_x, users, items, strict=True):
                    logits = self.phi["gate_bias"] + self.phi["gate_x.weight"] @ self._h(theta, u, i, su, si, cursor)
                    if self.mode == "full":
                        logits = logits + self._role(flat, loss, grad)  # [Q, 2]
                    rates.append(torch.sigmoid(logits).expand(flat.shape[0], 2))
            step, forget, count = torch.zeros_like(flat), torch.zeros_like(flat), torch.zeros_like(flat)
            for (_, grad, touched), rate in zip(per_x, rates, strict=True):
                step = step + touched * rate[:, 0] * grad
                forget = forget + touched * rate[:, 1]
                count = count + touched
            if self.average:
                step = step / count.clamp(min=1)
            new = torch.where(count > 0, forget / count.clamp(min=1) * flat - step, flat)
        out, start = {}, 0
        for name in self.names:
            size = theta[name].numel()
            out[name] = new[start : start + size].view_as(theta[name])
            start += size
        return out

    def _touched(self, theta, u: int, i: int, j: int) -> torch.Tensor:
        """``[Q]``: 1 where scoring (u, i, j) reads the scalar (u's rows, i's and j's rows, every dense weight)."""
        parts = []
        for name in self.names:
            mask = torch.zeros_like(theta[name])
            if name in self.user_tables:
                mask[u] = 1
            elif name in self.item_tables:
                mask[i] = mask[j] = 1
            else:
                mask[...] = 1
            parts.append(mask.reshape(-1))
        return torch.cat(parts)

    def _role(self, theta: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """U h_{x,m} for every scalar: ``[Q, 2]``, h_{x,m} = MLP([θ_m, prep ℓ, prep g_m]) (Eq. 11)."""
        phi = self.phi
        features = torch.cat([theta[:, None], prep(loss).expand(theta.shape[0], 2), prep(grad)], 1)  # [Q, 5]
        first = torch.cat([phi["role.w_theta.weight"], phi["role.w_loss.weight"], phi["role.w_grad.weight"]], 1)
        h1 = torch.relu(features @ first.T + phi["role.w_loss.bias"])
        h2 = torch.relu(h1 @ phi["role.second.weight"].T + phi["role.second.bias"])
        return h2 @ phi["role.head.weight"].T

    def _h(self, theta, u: int, i: int, su, si, cursor) -> torch.Tensor:
        """h_x of Eq. 8–10 on the detached rows of θ_t."""
        phi = self.phi
        user_row = torch.cat([theta[n][u] for n in self.user_tables])
        item_row = torch.cat([theta[n][i] for n in self.item_tables])
        items_of_u = [
            torch.cat([theta[n][q] for n in self.item_tables]) for q in recent_partners(su, si, cursor, u, self.k)
        ]
        users_of_i = [
            torch.cat([theta[n][q] for n in self.user_tables]) for q in recent_partners(si, su, cursor, i, self.k)
        ]
        agg_u = self._attend("att_user", user_row, items_of_u, item_row.shape[0])
        agg_i = self._attend("att_item", item_row, users_of_i, user_row.shape[0])
        ext_u = torch.relu(phi["encoder.ext_user.weight"] @ torch.cat([user_row, agg_u]) + phi["encoder.ext_user.bias"])
        ext_i = torch.relu(phi["encoder.ext_item.weight"] @ torch.cat([item_row, agg_i]) + phi["encoder.ext_item.bias"])
        return torch.relu(phi["encoder.out.weight"] @ torch.cat([ext_u, ext_i]) + phi["encoder.out.bias"])

    def _attend(self, name: str, centre: torch.Tensor, neighbours: list[torch.Tensor], width: int) -> torch.Tensor:
        """Σ_k α_k e_k with α = softmax_k LeakyReLU(aᵀ[centre, e_k] + b); zeros when there is no neighbour."""
        if not neighbours:
            return centre.new_zeros(width)
        a, b = self.phi[f"encoder.{name}.weight"][0], self.phi[f"encoder.{name}.bias"][0]
        scores = torch.stack([leaky_relu(a @ torch.cat([centre, e]) + b) for e in neighbours])
        alpha = torch.softmax(scores, 0)
        return sum(alpha[k] * e for k, e in enumerate(neighbours))

    def _adam(self, loss: torch.Tensor) -> None:
        """One Adam step of φ on ``loss`` (Eq. 15)."""
        names = list(self.phi)
        grads = torch.autograd.grad(loss, [self.phi[n] for n in names], allow_unused=True)
        with torch.no_grad():
            for name, g in zip(names, grads, strict=True):
                if g is None:
                    continue
                state = self.adam[name]
                state[0] += 1
                t, m, v = state
                m.mul_(BETAS[0]).add_((1 - BETAS[0]) * g)
                v.mul_(BETAS[1]).add_((1 - BETAS[1]) * g * g)
                m_hat, v_hat = m / (1 - BETAS[0] ** t), v / (1 - BETAS[1] ** t)
                self.phi[name] -= self.lr * m_hat / (v_hat.sqrt() + EPS)
