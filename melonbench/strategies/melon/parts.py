"""MeLON's meta-model φ and its small networks: graph attention for h_x, the role MLP, and the dense-weight step.

Kept apart from :mod:`melonbench.strategies.melon` (the strategy and its update algebra) and
:mod:`melonbench.strategies.melon.grads` (per-sample gradients) so that each file reads on a few screens. Nothing
here is a :class:`~melonbench.strategies.base.Strategy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from melonbench.strategies.preprocess import prep

if TYPE_CHECKING:
    from melonbench.strategies.melon.config import MelonConfig


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
                nn.Linear(2 * hidden, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.BatchNorm1d(hidden),
            )

    @staticmethod
    def _attend(att: nn.Linear, centre: torch.Tensor, nbrs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Σ α e_nb over valid neighbours (zeros when there are none): centre [n, d], nbrs [n, K, d'] → [n, d']."""
        # aᵀ[e_c, e_nb] + b = (a_cᵀ e_c + b) + a_nbᵀ e_nb: no [n, K, d + d'] concatenation
        d = centre.shape[1]
        own = F.linear(centre, att.weight[:, :d], att.bias)  # [n, 1]
        logits = own + (nbrs @ att.weight[0, d:])  # [n, K]
        logits = F.leaky_relu(logits).masked_fill(~mask, float("-inf"))
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

    def forward(
        self, theta: torch.Tensor, loss: torch.Tensor, grads: torch.Tensor, work: Workspace | None = None
    ) -> torch.Tensor:
        """``theta [n|1, c]``, ``loss [n|1]``, ``grads [n|1, c]`` → gate logits ``[n, c, 2]`` (broadcast).

        ``work``: buffers for the activations; the caller guarantees that no other use of them happens between
        this call and the backward pass through its result.
        """
        n, c = max(grads.shape[0], loss.shape[0], theta.shape[0]), grads.shape[1]
        per_x = self.w_loss(prep(loss))  # [n|1, R], bias included
        if self.second is None:
            # one linear layer: fold the head into it, so that each pair costs a [2] x [2, 2] product, not [16]
            head = self.head.weight
            out = prep(grads) @ (head @ self.w_grad.weight).T + (per_x @ head.T).unsqueeze(1)
            return out.expand(n, c, 2)
        second, head = self.second, self.head
        return _RoleMLP.apply(
            theta,
            prep(grads).expand(n, c, 2),
            per_x,
            self.w_theta.weight[:, 0],
            self.w_grad.weight,
            second.weight,
            second.bias,
            head.weight,
            work,
        )


def _mlp_forward(theta, g_feats, per_x, w_theta, w_grad, w2, b2, work: Workspace | None = None):
    """Hidden activations ``h1, h2 [pairs, R]`` of the two-layer role MLP (see :class:`_RoleMLP`).

    With ``work`` the activations are written into its reusable buffers, valid until their next use.
    """
    n, c, hidden = g_feats.shape[0], g_feats.shape[1], w2.shape[0]
    # pre = w_θ θ + (W_ℓ prep ℓ + b) + W_g prep g, written once as [pairs, R] over a base that already holds the
    # per-parameter and per-interaction parts; the ReLUs then run in place
    h1 = work.get("h1", n * c, hidden) if work else None
    h2 = work.get("h2", n * c, hidden) if work else None
    if theta.shape[0] > 1:  # a θ per pair: one product over the features [θ, prep g], then the per-interaction part
        feats = torch.cat([theta.expand(n, c).unsqueeze(-1), g_feats], -1).view(n * c, 3)
        h1 = torch.mm(feats, torch.cat([w_theta.unsqueeze(0), w_grad.T]), out=h1)
        h1.view(n, c, hidden).add_(per_x.unsqueeze(1)).relu_()
        return h1, torch.addmm(b2, h1, w2.T, out=h2).relu_()
    if work is None:
        base = per_x.unsqueeze(1) + theta.unsqueeze(-1) * w_theta  # [n|1, c, R]
        base = base.expand(n, c, hidden).reshape(n * c, hidden)
        h1 = torch.addmm(base, g_feats.reshape(n * c, 2), w_grad.T).relu_()
        return h1, torch.addmm(b2, h1, w2.T).relu_()
    torch.add(per_x.unsqueeze(1), theta.unsqueeze(-1) * w_theta, out=h1.view(n, c, hidden))
    h1.addmm_(g_feats.reshape(n * c, 2), w_grad.T).relu_()
    torch.addmm(b2, h1, w2.T, out=h2).relu_()
    return h1, h2


class Workspace:
    """Reusable ``[rows, cols]`` float buffers, one per name, grown on demand.

    On CPU a fresh multi-megabyte tensor costs page faults on first touch; the chunks of :class:`DenseStep`
    all have the same size, so their activations and gradients reuse the same memory instead.
    """

    def __init__(self, like: torch.Tensor) -> None:
        self.like = like
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """A ``[rows, cols]`` view of buffer ``name`` (contents undefined)."""
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < rows * cols:
            buf = self.buffers[name] = self.like.new_empty(rows * cols)
        return buf[: rows * cols].view(rows, cols)


class _RoleMLP(torch.autograd.Function):
    """The paper's role network as one autograd node with a hand-written backward.

    Autograd's own graph of this MLP keeps about a dozen ``[pairs, R]`` tensors and reduces the broadcast
    terms with extra passes; here the forward keeps the two hidden activations and the backward makes one pass
    per matrix product (the formulas are those of a linear-ReLU-linear-ReLU-linear stack).
    Inputs: ``theta [n|1, c]``, ``g_feats [n, c, 2]`` (prep of the gradients), ``per_x [n|1, R]``
    (``W_ℓ prep ℓ + b``), then ``w_θ [R]``, ``W_g [R, 2]``, ``W_2 [R, R]``, ``b_2 [R]``, ``U [2, R]``.
    """

    @staticmethod
    def forward(ctx, theta, g_feats, per_x, w_theta, w_grad, w2, b2, head, work):
        h1, h2 = _mlp_forward(theta, g_feats, per_x, w_theta, w_grad, w2, b2, work)
        ctx.save_for_backward(theta, g_feats, w2, head, h1, h2)
        ctx.per_x_rows, ctx.work = per_x.shape[0], work
        return (h2 @ head.T).view(g_feats.shape[0], g_feats.shape[1], 2)

    @staticmethod
    def backward(ctx, d_out):
        theta, g_feats, w2, head, h1, h2 = ctx.saved_tensors
        grads = _mlp_backward(d_out, theta, g_feats, ctx.per_x_rows, w2, head, h1, h2, ctx.work)
        return None, None, *grads, None


def _mlp_backward(d_out, theta, g_feats, per_x_rows, w2, head, h1, h2, work: Workspace | None = None):
    """Gradients ``(per_x, w_θ, W_g, W_2, b_2, U)`` of the role MLP given ``d_out [n, c, 2]`` (see _RoleMLP)."""
    n, c, hidden = g_feats.shape[0], g_feats.shape[1], w2.shape[0]
    d_out = d_out.reshape(n * c, 2)
    d_head = d_out.T @ h2
    relu_back = torch.ops.aten.threshold_backward.grad_input
    d_pre2 = torch.mm(d_out, head, out=work.get("d2", n * c, hidden)) if work else d_out @ head
    relu_back(d_pre2, h2, 0, grad_input=d_pre2)
    d_w2, d_b2 = d_pre2.T @ h1, d_pre2.sum(0)
    d_pre1 = torch.mm(d_pre2, w2, out=work.get("d1", n * c, hidden)) if work else d_pre2 @ w2
    relu_back(d_pre1, h1, 0, grad_input=d_pre1)
    d_w_grad = (g_feats.reshape(n * c, 2).T @ d_pre1).T  # [2, pairs] @ [pairs, R] is the fast orientation
    d_pre1 = d_pre1.view(n, c, -1)
    if theta.shape[0] == 1:  # one θ per column: reduce over interactions first
        d_w_theta = theta[0] @ d_pre1.sum(0)
    else:
        d_w_theta = (theta.expand(n, c).reshape(1, n * c) @ d_pre1.view(n * c, -1))[0]
    d_per_x = d_pre1.sum(1)
    if per_x_rows == 1:
        d_per_x = d_per_x.sum(0, keepdim=True)
    return d_per_x, d_w_theta, d_w_grad, d_w2, d_b2, d_head


class DenseStep(torch.autograd.Function):
    """New values of a chunk of dense weights, ``f̄_m θ_m − Σ_x w_{x,m} g_{x,m}``, with the paper's role MLP.

    ``w, f = σ(a_x + U h_{x,m})`` per (interaction, weight) pair. Nothing of size [pairs, R] is kept between
    the forward and the backward: the backward recomputes the chunk's activations and applies the chain rule
    by hand (like activation checkpointing, without autograd's bookkeeping on the millions of pairs).

    Inputs: ``theta [c]`` and ``grads [n, c]`` (constants), ``per_x [n, R]`` (``W_ℓ prep ℓ + b``), ``gate_x
    [n, 2]`` (``V h_x + c``), the MLP's ``w_θ [R]``, ``W_g [R, 2]``, ``W_2 [R, R]``, ``b_2 [R]``, ``U [2, R]``,
    then ``valid [n]`` (0/1), ``mean`` (divide the summed step by the number of valid interactions) and a
    :class:`Workspace` shared by the chunks (their backward passes run one after another).
    """

    @staticmethod
    def _gates(theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, work):
        g_feats = prep(grads)
        h1, h2 = _mlp_forward(theta[None], g_feats, per_x, w_theta, w_grad, w2, b2, work)
        logits = (h2 @ head.T).view(grads.shape[0], grads.shape[1], 2) + gate_x.unsqueeze(1)
        return g_feats, h1, h2, torch.sigmoid(logits)

    @staticmethod
    def forward(ctx, theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, mean, work):
        gates = DenseStep._gates(theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, work)[3]
        ctx.save_for_backward(theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid)
        ctx.mean, ctx.work = mean, work
        n_valid = valid.sum().clamp_min(1)
        step = valid @ (gates[..., 0] * grads)
        keep = (valid @ gates[..., 1]) / n_valid
        return keep * theta - (step / n_valid if mean else step)

    @staticmethod
    def backward(ctx, d_new):
        theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid = ctx.saved_tensors
        with torch.no_grad():
            work = ctx.work
            g_feats, h1, h2, gates = DenseStep._gates(theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, work)
            n_valid = valid.sum().clamp_min(1)
            lr, forget = gates[..., 0], gates[..., 1]
            # ∂new/∂w_{x,m} = −valid_x g_{x,m} (÷ n), ∂new/∂f_{x,m} = valid_x θ_m / n; σ' = σ(1 − σ)
            d_lr = (d_new * -1.0) * grads * valid[:, None]
            if ctx.mean:
                d_lr = d_lr / n_valid
            d_logits = torch.stack(
                [d_lr * lr * (1 - lr), ((d_new * theta) / n_valid) * valid[:, None] * forget * (1 - forget)], -1
            )
            grads_in = _mlp_backward(d_logits, theta[None], g_feats, per_x.shape[0], w2, head, h1, h2, work)
        d_per_x, d_w_theta, d_w_grad, d_w2, d_b2, d_head = grads_in
        return None, None, d_per_x, d_logits.sum(1), d_w_theta, d_w_grad, d_w2, d_b2, d_head, None, None, None


class MetaModel(nn.Module):
    """φ: the interaction encoder, the role network, and the gate head ``σ(V h_x + U h_{x,m} + c)``."""

    def __init__(self, user_dim: int, item_dim: int, config: MelonConfig, mode: str, generator_: torch.Generator):
        super().__init__()
        ref = config.variant == "reference"
        hidden = 20 if ref else config.hidden
        self.encoder = InteractionEncoder(user_dim, item_dim, hidden, config.networks) if mode != "p" else None
        self.gate_x = nn.Linear(hidden, 2, bias=False) if mode != "p" else None
        self.role = RoleNet(20 if ref else config.role_hidden, config.networks) if mode != "i" else None
        low = torch.tensor([config.lr_bias_low, config.forget_bias_low])
        high = torch.tensor([config.lr_bias_high, config.forget_bias_high])
        self.gate_bias = nn.Parameter(low + (high - low) * torch.rand(2, generator=generator_))
