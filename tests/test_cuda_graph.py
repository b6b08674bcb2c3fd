"""GraphedStep's bookkeeping: eager warm-up per input signature, one capture, replays on copied inputs, a failed
capture falling back to eager. CUDA itself is replaced by a stand-in whose "graph" re-runs the captured call on
the captured input tensors, which is what a replay does to memory; the real capture is checked on a GPU by
``benchmarks/cuda_parity.py --strategies melon@cuda_graphs=true``."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
import torch

import melonbench.online.cuda_graph as cg


class FakeGraph:
    capturing: FakeGraph | None = None

    def __init__(self):
        self.recorded = None

    def replay(self):
        fn, args = self.recorded
        fn(*args)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(cg, "_on_gpu", lambda t: True)
    stream = type("FakeStream", (), {"wait_stream": lambda self, other: None})()
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    mode = {"now": 0}
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: mode["now"])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: mode.update(now=m))

    @contextlib.contextmanager
    def graph(g):
        FakeGraph.capturing = g
        try:
            yield
        finally:
            FakeGraph.capturing = None

    monkeypatch.setattr(torch.cuda, "graph", graph)


def make_step(log):
    """out = 2 x, and a running total kept in place (like a parameter update); capture only records."""
    total = torch.zeros(1)
    out = torch.zeros(3)

    def fn(x):
        def work(x_):
            total.add_(x_.sum())
            out[: x_.shape[0]].copy_(2 * x_)

        if FakeGraph.capturing is not None:  # a capture runs nothing: it records
            FakeGraph.capturing.recorded = (work, (x,))
            log.append("capture")
            return out
        log.append("eager")
        work(x)
        return out.clone()  # eagerly, a fresh tensor per call

    return fn, total


def test_warm_up_then_one_capture_then_replays_on_new_inputs(fake_cuda):
    log = []
    fn, total = make_step(log)
    step = cg.GraphedStep(fn, warmup=2)
    results = [step(torch.full((3,), float(k))) for k in range(1, 6)]
    assert log == ["eager", "eager", "capture"]  # two warm-up calls, then one capture; the rest are replays
    assert step.replays == 3
    assert [float(r[0]) for r in results] == [2.0, 4.0, 6.0, 8.0, 10.0]  # each call saw its own inputs
    assert float(total) == 3 * (1 + 2 + 3 + 4 + 5)  # every call did its in-place work exactly once
    results[2].add_(100)  # outputs are copies: keeping one does not see the next replay
    step(torch.ones(3))
    assert float(results[2][0]) == 106.0
    step(torch.ones(1))  # a new input signature warms up again
    assert log[-1] == "eager" and step.replays == 4


def test_capture_failure_warns_once_runs_eagerly_and_names_the_synchronising_lines(fake_cuda):
    calls = []

    def fn(x):
        if FakeGraph.capturing is not None:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        calls.append(float(x[0]))
        if torch.cuda.get_sync_debug_mode() == "warn":  # as PyTorch warns at a synchronising operation
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        return x + 1

    step = cg.GraphedStep(fn, warmup=1)
    step(torch.zeros(1))
    with pytest.warns(RuntimeWarning, match="capture failed, running eagerly: RuntimeError: operation not permitted"):
        out = step(torch.ones(1))
    assert float(out[0]) == 2.0 and calls == [0.0, 1.0]  # the failed batch ran once, eagerly
    source = Path(__file__).read_text().splitlines()
    line = next(k for k, text in enumerate(source, 1) if 'warn("called a synchronizing' in text)
    assert step.failure == (
        f"RuntimeError: operation not permitted when stream is capturing; host synchronisations at "
        f"test_cuda_graph.py:{line}"
    )
    assert torch.cuda.get_sync_debug_mode() == 0  # put back
    step(torch.full((1,), 2.0))
    assert calls == [0.0, 1.0, 2.0] and step.replays == 0
    assert "host synchronisations" in step.failure and step.failure.count(";") == 1  # diagnosed once


def test_off_or_on_the_cpu_it_is_the_function_itself():
    calls = []
    step = cg.GraphedStep(lambda x: calls.append(x) or x * 3, warmup=0)
    assert float(step(torch.ones(1))[0]) == 3.0  # CPU tensors: no capture even with no warm-up
    off = cg.GraphedStep(lambda x: x - 1, enabled=False)
    assert float(off(torch.ones(1))[0]) == 0.0
    assert len(calls) == 1 and step.replays == 0 and off.replays == 0
