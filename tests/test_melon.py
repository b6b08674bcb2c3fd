"""MeLON specifics beyond the contract suite: gradients, the update rule, the two variants, learning-rate ranks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.core.errors import MelonbenchError
from melonbench.models import build_model
from melonbench.online.history import History
from melonbench.online.stream import Batch, Stream
from melonbench.strategies import build_strategy
from melonbench.strategies.melon import Melon
from melonbench.strategies.melon.grads import per_sample, table_slots
from melonbench.strategies.melon.parts import DenseStep, RoleNet, Workspace
from melonbench.strategies.preprocess import prep


def loop_gradients(model, users, pos, neg):
    """Per-interaction gradients the slow way: one autograd pass per interaction, read off the full tables."""
    layout = table_slots(model)
    rows, dense = [], []
    for x in range(users.shape[0]):
        model.zero_grad()
        model.bpr_loss(users[x : x + 1], pos[x : x + 1], neg[x : x + 1]).sum().backward()
        parts = []
        for t in layout:
            ids = [users[x]] if t.user else [pos[x], neg[x]]
            parts += [t.table.weight.grad[i] for i in ids]
        rows.append(torch.cat(parts))
        grads = [p.grad.reshape(-1) for p in model.dense_parameters().values()]
        dense.append(torch.cat(grads) if grads else torch.zeros(0))
    return torch.stack(rows), torch.stack(dense)


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
def test_vectorised_per_sample_gradients_equal_a_per_interaction_loop(model_name):
    stream = tiny_stream()
    model = tiny_model(model_name, stream)
    with torch.no_grad():  # move off the N(0, 0.01²) init so that σ(Δ) and the ReLUs are not degenerate
        for p in model.parameters():
            p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    users, pos, neg = torch.tensor([0, 1, 1, 5, 7]), torch.tensor([2, 3, 4, 2, 9]), torch.tensor([9, 2, 3, 4, 2])
    touched = per_sample(model, table_slots(model), users, pos, neg)
    rows, dense = loop_gradients(model, users, pos, neg)
    expected_losses = model.bpr_loss(users, pos, neg).detach()
    # float32, losses and gradients up to ≈ 9 here: rounding reaches a few 1e-6 (measured 2.9e-6), so the
    # tolerance is 1e-6 of the largest value compared
    for got, want in ((touched.losses, expected_losses), (touched.grads, rows), (touched.dense_grads, dense)):
        scale = float(want.abs().max()) if want.numel() else 0.0
        assert torch.allclose(got, want, rtol=0, atol=1e-6 * max(1.0, scale))
    assert rows.abs().max() > 1e-3  # the comparison looks at real gradients


def one_batch(users, pos, neg) -> Batch:
    n = len(users)
    t = torch.tensor
    return Batch(0, "validation", torch.arange(n), t(users), t(pos), torch.zeros(n, dtype=torch.long), t(neg))


@pytest.mark.parametrize(("variant", "reduce"), [("paper", "sum"), ("reference", "mean")])
def test_rows_touched_twice_sum_steps_in_paper_and_average_in_reference(variant, reduce):
    # Hand-built case: BPR dim 2, user 0 in two interactions (0, 1, 2) and (0, 3, 2); history cursor 0, so no
    # look-ahead. melon-i with V = 0 gives every pair lr = σ(logit .1) = .1 and forget = σ(logit .9) = .9.
    stream = tiny_stream(n_users=3, n_items=4, n=12)
    model = build_model("bpr", 3, 4, dim=2)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]))
        model.item_emb.weight.copy_(torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.item_bias.weight.zero_()
    strategy = build_strategy("melon-i", model, (("variant", variant),), 0)
    with torch.no_grad():
        strategy.phi.gate_x.weight.zero_()
        strategy.phi.gate_bias.copy_(torch.tensor([math.log(0.1 / 0.9), math.log(0.9 / 0.1)]))
    history = History(stream.users, stream.items, 3, 4, cursor=0)
    strategy.online_step(one_batch([0, 0], [1, 3], [2, 2]), history)
    # x1: Δ = e_u·(e_2 − e_1) = (1,2)·(−.5, 1) = 1.5, ∂ℓ/∂e_u = σ(1.5)(e_2 − e_1) = σ(1.5)(−.5, 1)
    # x2: Δ = (1,2)·(e_2 − e_3) = (1,2)·(−1, 0) = −1, ∂ℓ/∂e_u = σ(−1)(−1, 0)
    s1, s2 = 1 / (1 + math.exp(-1.5)), 1 / (1 + math.exp(1.0))
    steps = [0.1 * s1 * -0.5 + 0.1 * s2 * -1.0, 0.1 * s1 * 1.0]
    if reduce == "mean":
        steps = [s / 2 for s in steps]
    expected_user = [0.9 * 1.0 - steps[0], 0.9 * 2.0 - steps[1]]
    assert model.user_emb.weight[0].tolist() == pytest.approx(expected_user, abs=1e-6)
    # item 2 is the negative of both: ∂ℓ/∂e_j = σ(Δ) e_u each
    item_step = 0.1 * (s1 + s2) * np.array([1.0, 2.0]) / (2 if reduce == "mean" else 1)
    assert model.item_emb.weight[2].tolist() == pytest.approx(
        (0.9 * np.array([0.0, 1.0]) - item_step).tolist(), abs=1e-6
    )
    assert model.user_emb.weight[1].tolist() == [0.0, 0.0]  # untouched


def last_rows(history: History, batch: Batch) -> tuple[set[int], set[int]]:
    positions = history.last_positions(batch.users, batch.items)
    return set(history.users[positions].tolist()), set(history.items[positions].tolist())


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
def test_paper_discards_the_look_ahead_and_reference_keeps_it_on_rows_only_b_last_touches(model_name):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    batch = online_batches(stream, history, count=1)[0]
    batch_users = set(batch.users.tolist())
    last_users, _ = last_rows(history, batch)
    only_last = sorted(last_users - batch_users)
    assert only_last  # users the look-ahead moves that the batch itself does not use
    outside = torch.ones(stream.n_users, dtype=torch.bool)
    outside[batch.users] = False
    results = {}
    for variant in ("paper", "reference"):
        model = tiny_model(model_name, stream)
        before = model.user_tables()
        before = {k: t.weight.detach().clone() for k, t in before.items()}
        strategy = build_strategy("melon", model, (("variant", variant),), 0)
        strategy.online_step(batch, history)
        results[variant] = {k: (before[k], t.weight.detach()) for k, t in model.user_tables().items()}
    for old, new in results["paper"].values():
        assert torch.equal(old[outside], new[outside])
    emb = next(iter(results["reference"]))
    old, new = results["reference"][emb]
    assert not torch.equal(old[only_last], new[only_last])
    never = outside.clone()
    never[sorted(last_users)] = False
    assert torch.equal(old[never], new[never])  # rows neither batch touches stay as they were


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
def test_paper_look_ahead_on_the_rows_b_t_reads_gives_the_meta_step_of_the_full_look_ahead(model_name, monkeypatch):
    # The paper variant computes the look-ahead only on (interaction, slot) blocks whose row B_t reads; the full
    # look-ahead (every block B^last touches) must give the same φ after the meta step.
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    batch = online_batches(stream, history, count=1)[0]
    phis = []
    for compact in (True, False):
        monkeypatch.setattr(Melon, "_compact", property(lambda self, c=compact: c))
        model = tiny_model(model_name, stream)
        strategy = build_strategy("melon", model, (), 0)
        strategy._meta_step(batch, history)
        phis.append(dict(strategy.phi.named_parameters()))
    moved = 0.0
    init = build_strategy("melon", tiny_model(model_name, stream), (), 0).phi
    for name, before in init.named_parameters():
        assert torch.allclose(phis[0][name], phis[1][name], rtol=0, atol=1e-7), name
        moved = max(moved, float((phis[0][name] - before).detach().abs().max()))
    assert moved > 1e-5  # the meta step did move φ


def grocery_stream(folder: Path, n: int = 3000) -> Stream:
    """The first ``n`` interactions of the real Grocery training file in time order, ids made dense."""
    frame = pl.read_csv(folder / "amazon-grocery-5core-2014-rechorus" / "train.csv").sort("time", maintain_order=True)
    frame = frame.head(n).with_columns(
        pl.col("user_id").rank("dense").cast(pl.Int64) - 1, pl.col("item_id").rank("dense").cast(pl.Int64) - 1
    )
    users, items, ts = (torch.tensor(frame[c].to_numpy(), dtype=torch.long) for c in ("user_id", "item_id", "time"))
    return Stream(users, items, ts, int(users.max()) + 1, int(items.max()) + 1, n - 256, n - 256)


@pytest.mark.parametrize(
    ("strategy", "layout", "rank_is_one"),
    [
        ("melon", "slots", False),
        ("melon", "params", False),
        ("melon-i", "slots", True),
        ("melon-i", "params", True),
        ("melon-p", "params", True),
    ],
)
def test_learning_rate_matrix_of_a_real_batch_has_the_rank_the_method_allows(
    shared_data, strategy, layout, rank_is_one
):
    stream = grocery_stream(shared_data)
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = build_model("bpr", stream.n_users, stream.n_items, dim=16)
    with torch.no_grad():  # embeddings of a pre-trained scale, not the N(0, 0.01²) init
        for p in model.parameters():
            p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    melon = build_strategy(strategy, model, (("capture_layout", layout),), 0)
    melon.capture_lr = True
    batch = online_batches(stream, history, size=256, count=1)[0]
    melon.online_step(batch, history)
    w = melon.captured_lr
    if layout == "slots":
        assert w.shape == (256, 16 + 2 * 17)  # user (16), positive and negative × (16 + item bias)
    # SVD in float64 so that its own rounding does not blur a structural rank of 1 (rank-1 rows then give
    # σ2/σ1 ≈ 1e-12); with the 9,000+ columns of the params layout, MeLON's σ2/σ1 ≈ 1e-3 is below the runner's
    # float32 tolerance max(B, P)·ε ≈ 1e-3, so that tolerance would call it rank 1: we state 1e-6 instead.
    rank = int(torch.linalg.matrix_rank(w.double(), rtol=1e-6))
    assert (rank == 1) if rank_is_one else (rank > 1), rank


def test_ncf_capture_has_row_and_capped_dense_columns():
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model("ncf", stream)
    strategy = build_strategy("melon", model, (("capture_dense", "100"),), 0)
    strategy.capture_lr = True
    strategy.online_step(online_batches(stream, history, count=1)[0], history)
    # dim 8: user_gmf, user_mlp = 16 for the user; item_gmf, item_mlp, item_bias = 17 for each of the positive and
    # the negative → 50 row columns
    assert strategy.captured_lr.shape == (32, 50 + 100)
    assert torch.isfinite(strategy.captured_lr).all()


def test_variant_and_selectivity():
    stream = tiny_stream()
    model = tiny_model("bpr", stream)
    assert build_strategy("melon", model, (), 0).selective
    assert not build_strategy("melon", model, (("variant", "reference"),), 0).selective
    with pytest.raises(MelonbenchError, match="variant"):
        build_strategy("melon", model, (("variant", "papr"),), 0)


def role_reference(theta, loss, grads, net):
    """The paper's role MLP written out with plain autograd ops: the expected values for the fused versions."""
    x = torch.cat(
        [theta.expand_as(grads).unsqueeze(-1), prep(loss).unsqueeze(1).expand(*grads.shape, 2), prep(grads)], -1
    )  # [n, c, 5] = [θ, prep ℓ, prep g]
    w1 = torch.cat([net.w_theta.weight, net.w_loss.weight, net.w_grad.weight], 1)  # [R, 5]
    h1 = torch.relu(x @ w1.T + net.w_loss.bias)
    return torch.relu(h1 @ net.second.weight.T + net.second.bias) @ net.head.weight.T


@pytest.mark.parametrize("per_pair_theta", [True, False])
def test_hand_written_role_network_backward_equals_autograd(per_pair_theta):
    # float64 so that the only differences are summation order (≈ 1e-15); the reference is the unsplit MLP
    torch.manual_seed(0)
    net = RoleNet(16, "paper").double()
    n, c = 6, 9
    theta = torch.randn(n if per_pair_theta else 1, c, dtype=torch.double)
    loss, grads = torch.rand(n, dtype=torch.double), torch.randn(n, c, dtype=torch.double) * 1e-2
    weights = torch.randn(n, c, 2, dtype=torch.double)
    got = net(theta, loss, grads)
    (got * weights).sum().backward()
    fused = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    expected = role_reference(theta, loss, grads, net)
    (expected * weights).sum().backward()
    assert torch.allclose(got, expected, atol=1e-12)
    for a, b in zip(fused, (p.grad for p in net.parameters())):
        assert torch.allclose(a, b, atol=1e-12)
    assert all(p.grad.abs().max() > 1e-6 for p in net.parameters())  # every weight really gets a gradient


@pytest.mark.parametrize("mean", [False, True])
def test_dense_step_equals_autograd_of_the_update_rule(mean):
    # New dense weights f̄θ − Σ_x w g (÷ n when mean), w, f = σ(a_x + U h_{x,m}); invalid interactions excluded.
    # Two chunks share one Workspace, both forwards run before both backwards: the reuse must not leak.
    torch.manual_seed(1)
    net = RoleNet(16, "paper").double()
    n, c = 5, 12
    theta, grads = torch.randn(c, dtype=torch.double), torch.randn(n, c, dtype=torch.double) * 1e-2
    loss, valid = torch.rand(n, dtype=torch.double), torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.double)
    gate_x = torch.randn(n, 2, dtype=torch.double, requires_grad=True)
    weights = torch.randn(c, dtype=torch.double)

    def reference():
        gates = torch.sigmoid(role_reference(theta[None], loss, grads, net) + gate_x.unsqueeze(1))
        step = valid @ (gates[..., 0] * grads) / (valid.sum() if mean else 1)
        return (valid @ gates[..., 1]) / valid.sum() * theta - step

    expected = reference()
    (expected * weights).sum().backward()
    ref_grads = [p.grad.clone() for p in (*net.parameters(), gate_x)]
    for p in (*net.parameters(), gate_x):
        p.grad = None
    work = Workspace(theta)
    per_x = net.w_loss(prep(loss))
    args = (net.w_theta.weight[:, 0], net.w_grad.weight, net.second.weight, net.second.bias, net.head.weight)
    halves = [
        DenseStep.apply(theta[s], grads[:, s], per_x, gate_x, *args, valid, mean, work)
        for s in (slice(0, 7), slice(7, c))
    ]
    got = torch.cat(halves)
    (got * weights).sum().backward()
    assert torch.allclose(got, expected, atol=1e-12)
    for a, b in zip(ref_grads, (p.grad for p in (*net.parameters(), gate_x))):
        assert torch.allclose(a, b, atol=1e-12)
