"""Every fast path of MeLON against the independent oracle of ``tests/melon_oracle.py``, batch after batch.

The oracle computes Eq. 8–16 one interaction and one autograd call at a time; the strategy's paths compute the same
with vectorised per-sample gradients, row aggregation, hand-written backward passes and Triton kernels:

- ``eager``: the CPU step, with the look-ahead on the rows B_t reads (``_compact``, the default) and on every row;
- ``fixed-shape``: the step CUDA graphs replay (B_t^last padded, no host synchronisation), taken here on the CPU as
  ``tests/test_fixed_shape.py`` does, by switching the graph wrapper on: on a CPU it then runs the step as it is;
- ``fused``: NCF's dense step in two Triton kernels, run by Triton's interpreter (``tests/test_melon_fused.py``).

Both sides start from the same recommender and φ and see the same B_t, negatives and neighbours: B_t^last's
negatives are the draws of ``lookahead_batch`` (the call the strategy makes) on a copy of the strategy's generator
taken just before its step; the oracle finds B_t^last and the 10 most recent neighbours itself, by scanning the
stream, and checks the negatives against the stated rule. After every batch the recommender's parameters, φ and the
returned losses must agree.

Tolerances. In float64 the two sides differ only in the order of their sums: measured ≤ 4.5e-16 on every entry over
three batches (every path, both models), so 1e-12 is asserted: a margin of 1e3, and still nine orders of magnitude
below what one Adam step moves φ by (≈ lr = 1e-3 per entry), which a wrong sign, a dropped term or a misplaced rate
changes. The fused kernels run in float32 against the float64 oracle: measured ≤ 3e-7, asserted 2e-6 (float32
rounding of values of order 1, accumulated over a few dozen terms).
"""

from __future__ import annotations

import copy

import pytest
import torch
from melon_oracle import MelonOracle
from tiny import online_batches, tiny_stream

from melonbench.models import build_model
from melonbench.online.history import History
from melonbench.strategies import base as strategy_base
from melonbench.strategies import build_strategy
from melonbench.strategies.melon import Melon
from melonbench.strategies.melon import fused as melon_fused
from melonbench.strategies.melon import strategy as melon_strategy

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-6}


@pytest.fixture
def float64():
    """Build everything in float64 (tables, φ, the strategies' scratch tensors)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def tiny_setup(model_name: str):
    """10 users, 20 items, 160 interactions (112 pre-training); BPR dim 4, NCF dim 4 with one MLP layer of 4
    (45 dense weights). The weights are moved off the N(0, 0.01²) initialisation so that σ(Δ), the ReLUs and the
    rates see non-degenerate inputs."""
    stream = tiny_stream(n_users=10, n_items=20, n=160)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        extra = {"layers": (4,)} if model_name == "ncf" else {}
        model = build_model(model_name, stream.n_users, stream.n_items, dim=4, **extra)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return stream, model


def float64_valid(monkeypatch):
    """The fixed-shape step's padding weights (``valid``, built as float32 by ``padded_lookahead_batch``) in the
    default dtype, so that the float64 comparison runs that path unchanged otherwise."""
    padded = strategy_base.padded_lookahead_batch

    def cast(*args, **kwargs):
        out = padded(*args, **kwargs)
        return None if out is None else (*out[:3], out[3].to(torch.get_default_dtype()))

    monkeypatch.setattr(melon_strategy, "padded_lookahead_batch", cast)


def compare_with_oracle(name: str, model_name: str, path: str, batches: int = 3, variant: str = "paper-mean") -> None:
    stream, model = tiny_setup(model_name)
    strategy = build_strategy(name, model, (("variant", variant),), 0)
    dtype = next(model.parameters()).dtype
    calls = []
    if path == "fixed-shape":
        strategy._graphed.enabled = True  # as on a GPU; on the CPU the wrapper runs the fixed-shape step as it is
        fn = strategy._graphed.fn
        strategy._graphed.fn = lambda *inputs: calls.append(len(inputs)) or fn(*inputs)
    average = variant == "paper-mean"
    oracle = MelonOracle(copy.deepcopy(model).double(), strategy.phi, mode=strategy.mode, average=average)
    phi_start = {n: p.detach().clone() for n, p in strategy.phi.named_parameters()}
    theta_start = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    tol = TOLERANCE[dtype]
    for batch in online_batches(stream, history, size=8, count=batches):
        twin = torch.Generator().manual_seed(0)
        twin.set_state(strategy.generator.get_state())
        last_users, last_items, last_negatives = strategy_base.lookahead_batch(history, batch, twin)
        losses = strategy.online_step(batch, history)
        expected_losses, last = oracle.step(batch, stream.users, stream.items, history.cursor, last_negatives)
        # the oracle found the same B_t^last by scanning the stream
        assert stream.users[last].tolist() == last_users.tolist() and stream.items[last].tolist() == last_items.tolist()
        assert len(last) > len(batch)  # users and items with a past: a real look-ahead
        history.advance(len(batch))
        assert torch.allclose(losses.double(), expected_losses, rtol=0, atol=tol)
        for key, p in model.named_parameters():
            assert torch.allclose(p.double(), oracle.model.get_parameter(key), rtol=0, atol=tol), (batch.index, key)
        for key, p in strategy.phi.named_parameters():
            assert torch.allclose(p.double(), oracle.phi[key], rtol=0, atol=tol), (batch.index, key)
    if path == "fixed-shape":
        assert len(calls) == batches  # every batch went through the fixed-shape step
    # not a comparison of values that stayed put: Adam moved φ by ≈ 1e-3 per step, the update moved θ
    assert max(float((p.detach() - phi_start[n]).abs().max()) for n, p in strategy.phi.named_parameters()) > 1e-3
    assert max(float((p.detach() - theta_start[n]).abs().max()) for n, p in model.named_parameters()) > 1e-3


VARIANTS = ["paper-mean", "paper"]  # steps averaged per parameter (the default) or summed (Eq. 5 as written)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
@pytest.mark.parametrize("compact", [True, False])
def test_eager_melon_equals_the_oracle(float64, monkeypatch, model_name, compact, variant):
    if not compact:  # the look-ahead on every row B_t^last touches
        monkeypatch.setattr(Melon, "_compact", property(lambda self: False))
    else:
        assert build_strategy("melon", tiny_setup(model_name)[1], (), 0)._compact  # the default path
    compare_with_oracle("melon", model_name, "eager", variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
@pytest.mark.parametrize("name", ["melon", "melon-i", "melon-p"])
def test_fixed_shape_melon_equals_the_oracle(float64, monkeypatch, model_name, name, variant):
    float64_valid(monkeypatch)
    compare_with_oracle(name, model_name, "fixed-shape", variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
@pytest.mark.parametrize("name", ["melon-i", "melon-p"])
def test_eager_ablations_equal_the_oracle(float64, model_name, name, variant):
    compare_with_oracle(name, model_name, "eager", variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_melon_equals_the_oracle(monkeypatch, variant):
    pytest.importorskip("triton")
    monkeypatch.setattr(melon_fused, "DEVICES", ("cuda", "cpu"))  # the interpreter runs the kernels on the CPU
    monkeypatch.setattr(melon_fused, "ROWS", 16)  # B_t^last's rows over several row blocks
    calls = []
    apply = melon_fused.FusedDenseStep.apply
    monkeypatch.setattr(melon_fused.FusedDenseStep, "apply", lambda *a: calls.append(1) or apply(*a))
    compare_with_oracle("melon", "ncf", "fused", variant=variant)
    assert len(calls) == 6  # the look-ahead and the update of each of the three batches
