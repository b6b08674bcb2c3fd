"""MeLON's fused dense step (``fused_role``, the default on CUDA: two Triton kernels) equals ``DenseStep``.

The kernels run on a GPU; here Triton's interpreter runs the same kernel code on the CPU (``TRITON_INTERPRET=1``,
set by conftest.py before Triton is imported), and Triton compiles them for a GPU it does not have (its own
``ptxas``). How fast they are is for ``benchmarks/device_check.sh``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requires
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.models import build_model
from melonbench.online.history import History
from melonbench.strategies import build_strategy
from melonbench.strategies.melon import fused as melon_fused
from melonbench.strategies.melon.parts import DenseStep


@pytest.fixture
def interpreted(monkeypatch):
    """melon_fused, whose kernels conftest.py has Triton define for its interpreter, allowed on the CPU."""
    assert requires.triton().knobs.runtime.interpret
    monkeypatch.setattr(melon_fused, "DEVICES", ("cuda", "cpu"))
    return melon_fused


def _step_and_grads(step, inputs, theta, grads, valid, mean):
    leaves = [t.clone().requires_grad_() for t in inputs]
    new = step(theta, grads, *leaves, valid, mean)
    (new * torch.linspace(-1, 1, new.shape[0])).sum().backward()
    return [new.detach(), *(t.grad for t in leaves)]


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("loss_rows", ["each", "one"])
@pytest.mark.parametrize("rows_per_program", [128, 4])  # 6 rows in one row block, or in two (4 + 2)
@pytest.mark.parametrize("tiled", [False, True])  # the weights' sums reduced per row, or once per program
def test_fused_dense_step_equals_dense_step(interpreted, monkeypatch, mean, loss_rows, rows_per_program, tiled):
    monkeypatch.setattr(interpreted, "ROWS", rows_per_program)
    monkeypatch.setattr(interpreted, "TILED", tiled)
    g = torch.Generator().manual_seed(0)
    n, c, hidden = 6, 45, 16  # 45 columns: two programs of 32, the second one part empty
    theta = torch.randn(c, generator=g)
    grads = torch.randn(n, c, generator=g) * torch.logspace(-7, 0, c)  # both branches of prep (|g| vs e^-10)
    grads[:, 3] = 0.0
    valid = torch.tensor([1.0, 1, 0, 1, 1, 0])  # padding rows must add nothing
    inputs = [
        torch.randn(n if loss_rows == "each" else 1, hidden, generator=g),  # per_x
        torch.randn(n, 2, generator=g),  # gate_x
        torch.randn(hidden, generator=g),  # w_θ
        torch.randn(hidden, 2, generator=g),  # W_g
        torch.randn(hidden, hidden, generator=g) / 4,  # W_2
        torch.randn(hidden, generator=g),  # b_2
        torch.randn(2, hidden, generator=g),  # U
    ]

    def reference(*args):
        return DenseStep.apply(*args, None)

    expected = _step_and_grads(reference, inputs, theta, grads, valid, mean)
    fused = _step_and_grads(interpreted.FusedDenseStep.apply, inputs, theta, grads, valid, mean)
    names = ["new", "per_x", "gate_x", "w_theta", "w_grad", "w2", "b2", "head"]
    for name, a, b in zip(names, expected, fused, strict=True):
        assert a.shape == b.shape, name
        assert a.abs().max() > 0, name  # every gradient is exercised
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), name


def test_fused_melon_updates_ncf_as_the_unfused_one(interpreted, monkeypatch):
    calls = []
    apply = interpreted.FusedDenseStep.apply
    monkeypatch.setattr(interpreted.FusedDenseStep, "apply", lambda *a: calls.append(1) or apply(*a))
    monkeypatch.setattr(interpreted, "ROWS", 16)  # B^last's and B_t's rows over several row blocks
    stream = tiny_stream()
    runs = []
    for fused in ("false", "true"):
        history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
        torch.manual_seed(0)  # an NCF small enough for the interpreter: 45 dense weights
        model = build_model("ncf", stream.n_users, stream.n_items, dim=4, layers=(4,))
        strategy = build_strategy("melon", model, (("fused_role", fused),), 0)
        for batch in online_batches(stream, history, count=3):
            strategy.online_step(batch, history)
            history.advance(len(batch))
        runs.append((model.state_dict(), strategy.phi.state_dict()))
    assert len(calls) == 6  # the look-ahead and the update of each batch
    for plain, fused in zip(*runs, strict=True):
        for key, a in plain.items():
            assert torch.allclose(a, fused[key], rtol=1e-5, atol=1e-6), key


def test_fused_kernels_need_a_power_of_two_width(interpreted):
    assert interpreted.available(torch.device("cpu"), 16)
    assert interpreted.available(torch.device("cpu"), 32)
    assert not interpreted.available(torch.device("cpu"), 12)  # tl.dot takes powers of two
    assert not interpreted.available(torch.device("cpu"), 8)  # ... of at least 16


def test_fused_is_the_default_on_cuda_and_the_cpu_keeps_dense_step():
    assert melon_fused.DEVICES == ("cuda",)
    assert not melon_fused.available(torch.device("cpu"), 16)
    stream = tiny_stream()
    strategy = build_strategy("melon", tiny_model("ncf", stream), (), 0)
    assert strategy.config.fused_role and not strategy.fused  # asked for by default; on a CPU, DenseStep runs


@pytest.mark.parametrize(
    ("name", "model", "settings", "fused"),
    [
        ("melon", "ncf", (), True),
        ("melon", "bpr", (), False),  # no dense weights
        ("melon", "ncf", (("variant", "reference"),), False),  # its role network is one linear layer
        ("melon-i", "ncf", (), False),  # no role network
        ("melon-p", "ncf", (), False),  # one rate per weight, from batch-level inputs
        ("melon", "ncf", (("fused_role", "false"),), False),
    ],
)
def test_fused_is_claimed_only_where_it_runs(interpreted, name, model, settings, fused):
    stream = tiny_stream()
    strategy = build_strategy(name, tiny_model(model, stream), settings, 0)
    assert strategy.fused is fused  # what the run manifest reports as device.fused_kernels


def test_fused_kernels_need_an_ampere_or_later_gpu(monkeypatch):
    requires.triton()
    cuda = torch.device("cuda")  # only its capability is asked, patched here: no GPU needed
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4: never compiled for
    assert not melon_fused.available(cuda, 16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100: measured
    assert melon_fused.available(cuda, 16)
    assert not melon_fused.available(cuda, 24)


def test_fused_asked_for_on_cuda_where_it_cannot_run_warns(monkeypatch):
    monkeypatch.setattr(melon_fused, "DEVICES", ("cuda", "cpu"))  # as on a GPU ...
    with pytest.warns(UserWarning, match="power of two"):  # ... with a width tl.dot does not take
        assert not melon_fused.wanted(True, torch.device("cpu"), 24)
    assert not melon_fused.wanted(False, torch.device("cpu"), 16)


def test_fused_kernels_compile_for_hopper_and_ampere(tmp_path):
    # the interpreter runs Python, so it cannot tell whether the kernels compile: compile them for sm_90 and sm_80
    # in a process without TRITON_INTERPRET, into a fresh cache (a cached kernel would not be compiled again)
    requires.triton()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(tmp_path)}
    code = (
        "from melonbench.strategies.melon import fused as f\n"
        "print(*f.compile_for(90), *f.compile_for(80))\n"
        "print(*f.compile_for(90, tiled=not f.TILED))\n"  # the other backward, fused_tune.py's "t" tiles
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout.count("forward for sm_"), proc.stdout.count("backward for sm_")) == (3, 6)
    assert proc.stdout.count(f"TILED={not melon_fused.TILED}") == 2
    if "registers" in proc.stdout:  # with Triton's cuobjdump: registers and stack bytes of each of the 9 kernels
        assert proc.stdout.count(" registers, ") == 9


def test_a_missing_triton_fails_where_the_dev_extra_installs_it(monkeypatch):
    def outcome(*platform):
        try:
            requires.triton(*platform)
        except pytest.fail.Exception as exc:  # caught here, not by pytest: a skip must not pass as this test's own
            return "failed", str(exc)
        except pytest.skip.Exception as exc:
            return "skipped", str(exc)
        return "imported", ""

    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    status, message = outcome("linux", "x86_64")
    assert status == "failed" and "Triton is not installed, but the dev extra installs it" in message
    assert outcome("darwin", "arm64") == (
        "skipped",
        "Triton is not installed (the dev extra installs it on Linux x86-64 only, not darwin arm64)",
    )
    assert outcome("linux", "aarch64")[0] == "skipped"
