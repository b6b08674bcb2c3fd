"""S²Meta's defining properties: forget gate ≈ σ(5) at the start; per-coordinate LSTM state persists across batches."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.online.history import History
from melonbench.strategies import build_strategy, s2meta
from melonbench.strategies.base import sorted_rows
from melonbench.strategies.lazy_state import LazyState
from melonbench.strategies.s2meta import MetaLSTM


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def prep_by_hand(x: float) -> list[float]:
    # Andrychowicz et al. 2016, p = 10, written out from the formula
    if abs(x) >= math.exp(-10):
        return [math.log(abs(x)) / 10, math.copysign(1.0, x)]
    return [-1.0, x * math.exp(10)]


def reference_coordinate(lstm, g: float, theta: float, loss: float, h: list[float], c: list[float]):
    """One coordinate through the MetaLSTM with scalar Python loops: (lr, forget, new θ, h', c')."""
    g = max(-1.0, min(1.0, g))
    x = prep_by_hand(g) + prep_by_hand(theta) + prep_by_hand(loss)[:1]
    cell = lstm.cell
    w_ih, w_hh = cell.weight_ih.tolist(), cell.weight_hh.tolist()
    b = [a + bb for a, bb in zip(cell.bias_ih.tolist(), cell.bias_hh.tolist(), strict=True)]
    n = len(h)
    pre = [
        sum(w_ih[r][j] * x[j] for j in range(5)) + sum(w_hh[r][j] * h[j] for j in range(n)) + b[r] for r in range(4 * n)
    ]
    # PyTorch's LSTMCell gate order: input, forget, cell, output
    c_new = [sigmoid(pre[n + k]) * c[k] + sigmoid(pre[k]) * math.tanh(pre[2 * n + k]) for k in range(n)]
    h_new = [sigmoid(pre[3 * n + k]) * math.tanh(c_new[k]) for k in range(n)]
    mean = sum(h_new) / n
    var = sum((v - mean) ** 2 for v in h_new) / n
    gamma, beta = lstm.norm.weight.tolist(), lstm.norm.bias.tolist()
    h_norm = [(v - mean) / math.sqrt(var + 1e-5) * gamma[k] + beta[k] for k, v in enumerate(h_new)]

    def gate(layer: torch.nn.Linear) -> float:
        return sigmoid(sum(a * v for a, v in zip(layer.weight[0].tolist(), h_norm, strict=True)) + layer.bias.item())

    lr, forget = gate(lstm.lr_gate), gate(lstm.forget_gate)
    return lr, forget, forget * theta - lr * g, h_norm, c_new


def gradient_by_autograd(model, batch) -> tuple[torch.Tensor, float]:
    """∇ of the mean BPR loss w.r.t. the user embedding table, on a copy (the strategy never sees it)."""
    twin = copy.deepcopy(model)
    loss = twin.bpr_loss(batch.users, batch.items, batch.negatives).mean()
    loss.backward()
    return twin.user_emb.weight.grad, loss.item()


def setup():
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    batches = online_batches(stream, history, count=2)
    model = tiny_model("bpr", stream)
    return history, batches, model, build_strategy("s2meta", model, (), 0)


def test_forget_gate_starts_near_sigmoid_5():
    _, _, _, strategy = setup()
    for lstm in strategy.lstms.values():
        assert lstm.forget_gate.bias.item() == 5.0 and lstm.lr_gate.bias.item() == 0.0
        g = torch.linspace(-1e-2, 1e-2, 200)
        theta = torch.linspace(-0.05, 0.05, 200)
        _, forget, _ = lstm(g, theta, torch.tensor(0.69), (lstm.h0.expand(200, -1), lstm.c0.expand(200, -1)))
        # LayerNorm(h) with γ = 1, β = 0 has mean 0 and variance 1 over 16 features, so ‖h‖ ≤ 4 and by
        # Cauchy-Schwarz |w_f · h| ≤ 4 ‖w_f‖: a hand bound around σ(5) = 0.99331 for every coordinate.
        spread = 4 * lstm.forget_gate.weight.norm().item()
        assert forget.min().item() >= sigmoid(5 - spread) and forget.max().item() <= sigmoid(5 + spread)
        # On these small gradients and parameters every coordinate starts within 0.01 of σ(5) (measured 0.992-0.994).
        assert (forget - sigmoid(5)).abs().max().item() < 0.01


def test_update_rule_and_lstm_state_persist_across_batches_for_a_coordinate():
    history, (b0, b1), model, strategy = setup()
    shared = sorted(set(b0.users.tolist()) & set(b1.users.tolist()))
    assert shared, "the tiny stream must have a user in both batches"
    user, k = shared[0], 3
    lstm = strategy.lstms["user_emb_weight"]
    state = strategy.states["user_emb.weight"]
    strategy.capture_lr = True

    # batch 0: the coordinate has no state yet, so it starts from the learnable (h0, c0)
    grad, loss = gradient_by_autograd(model, b0)
    theta0 = model.user_emb.weight[user, k].item()
    assert state.slot[user].item() == -1
    strategy.online_step(b0, history)
    history.advance(len(b0))
    lr, forget, expected, h1, c1 = reference_coordinate(
        lstm, grad[user, k].item(), theta0, loss, lstm.h0.tolist(), lstm.c0.tolist()
    )
    assert math.isclose(model.user_emb.weight[user, k].item(), expected, rel_tol=1e-5, abs_tol=1e-7)
    slot = state.slot[user].item()
    assert slot >= 0
    torch.testing.assert_close(state.h[slot, k], torch.tensor(h1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.c[slot, k], torch.tensor(c1), rtol=1e-5, atol=1e-6)
    # capture: interaction x's column (user slot, coordinate k) holds lr / B (the mean-loss weight)
    row = b0.users.tolist().index(user)
    assert math.isclose(strategy.captured_lr[row, k].item(), lr / len(b0), rel_tol=1e-5)
    # lazily allocated: exactly the rows touched so far have state
    assert state.count == len(set(b0.users.tolist())) == int((state.slot >= 0).sum())

    # batch 1: the stored (h, c) is reused as the LSTM's previous state, then replaced
    grad, loss = gradient_by_autograd(model, b1)
    theta1 = model.user_emb.weight[user, k].item()
    strategy.online_step(b1, history)
    _, _, expected, h2, c2 = reference_coordinate(lstm, grad[user, k].item(), theta1, loss, h1, c1)
    _, _, from_scratch, _, _ = reference_coordinate(
        lstm, grad[user, k].item(), theta1, loss, lstm.h0.tolist(), lstm.c0.tolist()
    )
    got = model.user_emb.weight[user, k].item()
    assert math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-7)
    assert not math.isclose(got, from_scratch, rel_tol=1e-5, abs_tol=1e-7)  # the state did matter
    assert state.slot[user].item() == slot  # same slot, new contents
    torch.testing.assert_close(state.h[slot, k], torch.tensor(h2), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(torch.tensor(h2), torch.tensor(h1))


def test_lazy_state_grows_by_doubling_and_round_trips():
    store = LazyState(n_rows=10, width=2, hidden=3, device=torch.device("cpu"))
    h0, c0 = torch.zeros(3), torch.ones(3)
    h, c = store.read(torch.tensor([4, 7]), h0, c0)
    assert torch.equal(h, torch.zeros(4, 3)) and torch.equal(c, torch.ones(4, 3))  # 2 rows × width 2
    store.write(torch.tensor([4, 7]), torch.full((4, 3), 2.0), torch.full((4, 3), 3.0))
    store.write(torch.tensor([1, 7, 9]), torch.full((6, 3), 5.0), torch.full((6, 3), 6.0))
    # slots in order of first touch: 4 → 0, 7 → 1, then 1 → 2, 9 → 3; capacity 2 doubled to 4
    assert store.slot.tolist() == [-1, 2, -1, -1, 0, -1, -1, 1, -1, 3] and store.h.shape[0] == 4
    h, _ = store.read(torch.tensor([0, 4, 7]), h0, c0)
    assert h.view(3, 2, 3)[:, 0, 0].tolist() == [0.0, 2.0, 5.0]  # untouched row 0 → h0; 4 kept; 7 rewritten
    other = LazyState(n_rows=10, width=2, hidden=3, device=torch.device("cpu"))
    other.load_state_dict(store.state_dict())
    everything = torch.arange(10)
    assert other.count == 4
    assert torch.equal(other.read(everything, h0, c0)[1], store.read(everything, h0, c0)[1])


@pytest.mark.parametrize("through", ["state", "fresh"])
def test_metalstm_gradients_match_finite_differences(monkeypatch, through):
    # The MetaLSTM's backward is written by hand; gradcheck compares it with central finite differences in float64
    # for every meta-parameter, over several chunks (CHUNK = 2 on 5 coordinates). "state": the gradient reaches the
    # state inputs themselves; "fresh": rows 0 and 2 hold (h0, c0), whose gradient comes through `fresh`.
    monkeypatch.setattr(s2meta, "CHUNK", 2)
    torch.manual_seed(1)
    lstm = MetaLSTM(hidden=4, lr_bias=0.0, forget_bias=5.0).double()
    names = [name for name, _ in lstm.named_parameters()]
    grad, param = torch.randn(5, dtype=torch.float64) * 0.1, torch.randn(5, dtype=torch.float64) * 0.1
    h, c = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    fresh = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)

    def outputs(h, c, *values):
        params = dict(zip(names, values, strict=True))
        if through == "fresh":  # the state reads the current (h0, c0) values, without a gradient
            mask = fresh.bool()[:, None]
            h = torch.where(mask, params["h0"].detach(), h.detach())
            c = torch.where(mask, params["c0"].detach(), c.detach())
        loss = torch.tensor(0.7, dtype=torch.float64)
        args = (grad, param, loss, (h, c), True, fresh if through == "fresh" else None)
        lr, forget, (h_new, c_new) = torch.func.functional_call(lstm, params, args)
        return lr, forget, h_new, c_new

    values = (p.detach().clone().requires_grad_() for p in lstm.parameters())
    inputs = (h.requires_grad_(through == "state"), c.requires_grad_(through == "state"), *values)
    assert torch.autograd.gradcheck(outputs, inputs, eps=1e-6, atol=1e-6)


def test_lstm_chunks_split_on_a_cpu_only():
    # CPU: chunks of CHUNK rows keep the intermediates in cache; a GPU pays per launch, so one chunk there
    # ("meta" tensors stand for a non-CPU device: no data, only shapes)
    cpu, other = torch.zeros(2 * s2meta.CHUNK + 1, 3), torch.empty(2 * s2meta.CHUNK + 1, 3, device="meta")
    assert [c.shape[0] for c in s2meta._chunks(cpu)] == [s2meta.CHUNK, s2meta.CHUNK, 1]
    assert [c.shape[0] for c in s2meta._chunks(other)] == [2 * s2meta.CHUNK + 1]
    assert len(s2meta._chunks(torch.zeros(0, 3))) == 1


def test_sorted_rows_keeps_repeats_at_fixed_length_and_flags_first_valid_occurrences():
    # ids 3, 1, 3, 0 (padding), 1: sorted [1, 1, 3, 3] then the padding's 0 last (a real 0 would sort first)
    rows, first, keep = sorted_rows(torch.tensor([3, 1, 3, 0, 1]), torch.tensor([1.0, 1, 1, 0, 1]))
    assert rows.tolist() == [1, 1, 3, 3, 0]
    assert first.tolist() == [0, 0, 2, 2, 4]
    assert keep.tolist() == [True, False, True, False, False]
    rows, first, keep = sorted_rows(torch.tensor([2, 0, 2]))
    assert rows.tolist() == [0, 2, 2] and first.tolist() == [0, 1, 1] and keep.tolist() == [True, True, False]


def test_dense_and_lazy_states_read_alike_and_load_each_others_state():
    from melonbench.strategies.lazy_state import DenseState, LazyState

    g = torch.Generator().manual_seed(0)
    h0, c0 = torch.randn(4, generator=g), torch.randn(4, generator=g)
    lazy, dense = LazyState(6, 2, 4, torch.device("cpu")), DenseState(6, 2, 4, torch.device("cpu"))
    for rows in ([4, 1], [1, 5]):  # row 1 twice: its state is overwritten
        rows = torch.tensor(rows)
        h, c = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)  # [rows × width, hidden]
        lazy.write(rows, h, c)
        dense.write(rows, h, c)
    every = torch.arange(6)
    for a, b in zip(lazy.read(every, h0, c0), dense.read(every, h0, c0), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(lazy.fresh(every), dense.fresh(every))
    assert lazy.fresh(every).view(6, 2)[:, 0].tolist() == [1, 0, 1, 1, 0, 0]  # rows 1, 4, 5 have state
    other_lazy, other_dense = LazyState(6, 2, 4, torch.device("cpu")), DenseState(6, 2, 4, torch.device("cpu"))
    other_lazy.load_state_dict(dense.state_dict())
    other_dense.load_state_dict(lazy.state_dict())
    for a, b in zip(other_lazy.read(every, h0, c0), other_dense.read(every, h0, c0), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(other_dense.read(every, h0, c0)[0], lazy.read(every, h0, c0)[0])
