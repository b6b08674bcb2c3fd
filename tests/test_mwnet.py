"""MWNet: weights in (0, 1), the look-ahead's meta-gradient reaches the weight net V, rank-1 learning rates."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.online.history import History
from melonbench.online.seeding import generator
from melonbench.strategies import build_strategy
from melonbench.strategies.mwnet import lookahead_batch


def setup(model_name: str = "bpr", params=()):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model(model_name, stream)
    strat = build_strategy("mwnet", model, params, 0)
    return stream, history, model, strat, online_batches(stream, history, count=3)


def test_weights_lie_strictly_between_zero_and_one_over_a_stream():
    _, history, _, strat, batches = setup()
    strat.capture_lr = True
    for batch in batches:
        losses = strat.online_step(batch, history)
        # capture stores W = lr · v / n: recover v, the weights the real update used
        v = strat.captured_lr[:, 0] * len(batch) / strat.config.lr
        assert ((v > 0) & (v < 1)).all()
        torch.testing.assert_close(v, strat.weights(losses))  # v = V(ℓ) after this batch's meta step
        history.advance(len(batch))
    # far outside the losses seen, V still maps into (0, 1) (float32 saturates the sigmoid only beyond ~17)
    probe = strat.weights(torch.tensor([0.0, 1e-3, 0.7, 5.0, 15.0]))
    assert ((probe > 0) & (probe < 1)).all()


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])  # closed-form per-sample route, second-order route
def test_lookahead_meta_gradient_reaches_v_and_matches_a_slow_reference(model_name):
    # Reference, independent of either implementation: θ̂ = θ − (α/m) Σ_x V(ℓ_x) ∇ℓ_x, so
    # ∂L_meta(θ̂)/∂Φ = −(α/m) Σ_x ⟨∇_θ L_meta(θ̂), ∇_θ ℓ_x⟩ ∂V(ℓ_x)/∂Φ, with each ∇ℓ_x from its own backward pass
    # (a Python loop over B_t^last). In float64 the two must agree to rounding.
    stream, history, model, strat, batches = setup(model_name)
    model.double()
    strat.vnet.double()
    model0, vnet0 = copy.deepcopy(model), copy.deepcopy(strat.vnet)
    batch = batches[0]
    users, items, negs = lookahead_batch(history, batch, generator(0, "mwnet-lookahead-negatives"))
    assert users.shape[0] > 10
    strat.online_step(batch, history)

    lr, m = strat.config.lr, users.shape[0]
    params = list(model0.parameters())
    per_x = []
    for x in range(m):
        loss = model0.bpr_loss(users[x : x + 1], items[x : x + 1], negs[x : x + 1])[0]
        per_x.append((loss.detach(), torch.autograd.grad(loss, params)))
    with torch.no_grad():
        v = [vnet0(loss.view(1, 1))[0, 0] for loss, _ in per_x]
        ahead = copy.deepcopy(model0)
        for x, (_, grads) in enumerate(per_x):
            for p, g in zip(ahead.parameters(), grads, strict=True):
                p -= lr / m * v[x] * g
    meta = ahead.bpr_loss(batch.users, batch.items, batch.negatives).mean()
    meta_grads = torch.autograd.grad(meta, list(ahead.parameters()))
    expected = [torch.zeros_like(q) for q in vnet0.parameters()]
    for loss, grads in per_x:
        inner = sum((a * b).sum() for a, b in zip(meta_grads, grads, strict=True))
        dv = torch.autograd.grad(vnet0(loss.view(1, 1))[0, 0], list(vnet0.parameters()))
        for e, d in zip(expected, dv, strict=True):
            e -= lr / m * inner * d

    for (name, q), e in zip(strat.vnet.named_parameters(), expected, strict=True):
        assert q.grad is not None and q.grad.abs().max() > 0, name  # the meta loss reaches every tensor of V
        torch.testing.assert_close(q.grad, e, rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize(("model_name", "columns"), [("bpr", 26), ("ncf", 13691)])
def test_captured_learning_rate_matrix_has_rank_one(model_name, columns):
    # Columns by hand, dim 8: BPR user 8, positive 8 + 1 (item bias), negative 9 → 26. NCF: user 8 + 8 = 16,
    # items 2 × 17 = 34, dense (16·64 + 64) + 3 · (64·64 + 64) + (8 + 64 + 1) = 1088 + 12480 + 73 = 13641 → 13691.
    _, history, _, strat, batches = setup(model_name)
    strat.capture_lr = True
    strat.online_step(batches[0], history)
    w = strat.captured_lr
    assert w.shape == (len(batches[0]), columns)
    assert torch.equal(w, w[:, :1].expand_as(w))  # every column is the same weight vector
    assert w[:, 0].std() > 0  # ... which differs between interactions, so rank 1 is not rank-0 or trivial
    assert int(torch.linalg.matrix_rank(w)) == 1


def test_without_capture_nothing_is_stored():
    _, history, _, strat, batches = setup()
    strat.online_step(batches[0], history)
    assert strat.captured_lr is None


def test_a_strided_negatives_column_gives_the_same_step_and_no_warning():
    # Under the paper protocol a batch's training negatives are column 0 of the candidate matrix (strided); the
    # look-ahead renumbers ids with searchsorted, which warns on strided input (an error under this suite's filters)
    _, history, model, strat, batches = setup()
    twin_model = copy.deepcopy(model)
    twin = build_strategy("mwnet", twin_model, (), 0)
    batch = batches[0]
    wide = torch.stack([batch.negatives, batch.items, batch.items], 1)  # [B, 3]: column 0 is strided
    strided = dataclasses.replace(batch, negatives=wide[:, 0])
    assert not strided.negatives.is_contiguous()
    strat.online_step(batch, history)
    twin.online_step(strided, history)
    for a, b in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(a, b)
