"""MeLON's dense-weight step with the role network fused into two Triton kernels (``fused_role``, on by default).

:class:`~melonbench.strategies.melon.parts.DenseStep` computes the same thing with PyTorch operations, which write
the role network's ``[pairs, R]`` activations to memory several times over: on a GPU with CUDA graphs, NCF's
look-ahead (≈ 10 million (interaction, dense weight) pairs) is then bound by that memory traffic (docs/melon.md,
"CUDA graphs"). Here each program owns ``BLOCK`` dense weights (columns) and ``ROWS`` interactions (rows), and
walks its rows one by one, each pair's R-wide activations living in registers only:

- the forward kernel writes, per row block, the summed steps and forget rates of its columns (``[c]`` each);
- the backward kernel recomputes the activations and reduces the meta-gradients into one partial sum per
  program;

PyTorch then adds the partial sums up in a fixed order: no atomics, so two runs give the same bits.

Used on CUDA where Triton imports (PyTorch's CUDA builds bring it); elsewhere MeLON runs :class:`DenseStep`. The
tests run the same kernels on a CPU in Triton's interpreter (``TRITON_INTERPRET=1``, and ``DEVICES`` widened) against
:class:`DenseStep`. The matrix products use full fp32 (``input_precision="ieee"``, no TF32). Measured on an H100 on
2026-11-28: MeLON-NCF's update 29 ms → 10–12 ms per batch, 0.68 → 0.31 GiB peak, 5e-6 from the CPU (docs/melon.md).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import warnings

import torch

BLOCK = 32
"""Dense weights per program: a ``[BLOCK, R]`` tile of activations (tl.dot needs at least 16)."""
ROWS = 128
"""Interactions per program: NCF's 20,865 dense weights make 652 column blocks, and B^last's ≈ 512 rows in 4 row
blocks give ≈ 2,600 programs, enough to fill a GPU (column blocks alone would leave most of it idle)."""
TILED = False
"""Backward: keep the role MLP's weight-gradient sums per (weight, unit) over a program's rows and reduce them over
its weights once at the end, instead of reducing them at every row (six fewer cross-thread reductions per
interaction, six more ``[BLOCK, R]`` tiles held; not yet measured on a GPU, ``benchmarks/fused_tune.py``)."""
P = 10.0
"""The gradient preprocessing's ``p`` (:func:`melonbench.strategies.preprocess.prep`)."""
LAUNCH = {"num_warps": 2, "enable_fp_fusion": True}
"""Compile options: two warps for a ``[32, 16]`` tile; multiply-adds contracted, as Triton has done by default (said
explicitly: Triton 3.9 warns that its default will change)."""
DEVICES = ("cuda",)
"""Device types the fused step runs on (the tests add ``"cpu"``, where Triton's interpreter runs the kernels)."""
FLOATS = ("small", "big_scale")
"""The kernels' fp32 scalar arguments (the others are pointers, ints and constants)."""


def available(device: torch.device, hidden: int) -> bool:
    """Whether the fused kernels can run here: Triton importable, a CUDA device (:data:`DEVICES`) of compute
    capability 8.0 or later (what they are compiled and tested for: A100, H100), and a role network width that
    ``tl.dot`` takes (a power of two, at least 16)."""
    has_triton = importlib.util.find_spec("triton") is not None  # Triton ships with PyTorch's CUDA builds
    if not (has_triton and device.type in DEVICES and hidden >= 16 and hidden & (hidden - 1) == 0):
        return False
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 0)


def wanted(requested: bool, device: torch.device, hidden: int) -> bool:
    """Whether MeLON takes the fused step: ``fused_role`` asked for and :func:`available`; asked for on CUDA where
    it cannot run, a warning says so (the dense step then runs as ``DenseStep``)."""
    if requested and device.type in DEVICES and not available(device, hidden):
        warnings.warn(
            "fused_role needs Triton, a GPU of compute capability 8.0 or later and a role_hidden that is a power "
            "of two (at least 16): MeLON's dense step runs without it (--set fused_role=false silences this)",
            stacklevel=3,
        )
    return requested and available(device, hidden)


def compile_for(
    arch: int, block: int | None = None, rows: int | None = None, warps: int | None = None, tiled: bool | None = None
) -> list[str]:
    """Compile the kernels for CUDA compute capability ``arch`` (80: A100, 90: H100) without a GPU, with Triton's own
    ``ptxas``: what the interpreter cannot check (types, the shapes ``tl.dot`` takes). ``block``, ``rows``, ``warps``
    and ``tiled`` default to :data:`BLOCK`, :data:`ROWS`, ``LAUNCH["num_warps"]`` and :data:`TILED`. Returns one
    line per kernel, with its registers per thread and stack bytes (spills) where Triton's ``cuobjdump`` reads them.
    Not under ``TRITON_INTERPRET=1``, where the kernels are Python functions."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from melonbench.strategies.melon.fused_kernels import backward, forward

    tile = {"BLOCK": block or BLOCK, "ROWS": rows or ROWS}
    options = LAUNCH | ({"num_warps": warps} if warps else {})
    done = []
    tiled = TILED if tiled is None else tiled
    for kernel, flags in (
        (forward, {}),
        (backward, {"MEAN": False, "TILED": tiled}),
        (backward, {"MEAN": True, "TILED": tiled}),
    ):
        constants = {"R": 16, "P": P, **tile, **flags}
        signature = {
            a: "constexpr" if a in constants else "*fp32" if a.endswith("_ptr") else "fp32" if a in FLOATS else "i32"
            for a in kernel.arg_names
        }
        source = ASTSource(kernel, signature, {(kernel.arg_names.index(k),): v for k, v in constants.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
        named = "".join(f", {k}={v}" for k, v in flags.items())
        done.append(f"{compiled.metadata.name} for sm_{arch}{named}{_resources(compiled.asm['cubin'])}")
    return done


def _resources(cubin: bytes) -> str:
    """``": 168 registers, 16 B stack"`` from ``cuobjdump --dump-resource-usage`` (shipped with Triton), or ``""``."""
    import subprocess
    import tempfile

    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return ""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    found = dict(re.findall(r"(REG|STACK):(\d+)", usage))
    return f": {found['REG']} registers, {found['STACK']} B stack" if "REG" in found and "STACK" in found else ""


class FusedDenseStep(torch.autograd.Function):
    """:class:`~melonbench.strategies.melon.parts.DenseStep` (same inputs, same result) in two Triton kernels.

    Inputs: ``theta [c]`` and ``grads [n, c]`` (constants), ``per_x [n|1, R]``, ``gate_x [n, 2]``, the role MLP's
    ``w_θ [R]``, ``W_g [R, 2]``, ``W_2 [R, R]``, ``b_2 [R]``, ``U [2, R]``, then ``valid [n]`` and ``mean``.
    """

    @staticmethod
    def forward(ctx, theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, mean):
        from melonbench.strategies.melon import fused_kernels as kernels

        theta, grads, per_x, gate_x = (t.contiguous() for t in (theta, grads, per_x, gate_x))
        weights = tuple(t.contiguous() for t in (w_theta, w_grad, w2, b2, head))
        n_valid = valid.sum().clamp_min(1).reshape(1)
        n, c = grads.shape
        hidden = w2.shape[0]
        # per row block: Σ_x v w g and Σ_x v f of its rows, for every column
        parts = grads.new_empty(2, _cdiv(n, ROWS), c)
        kernels.forward[(_cdiv(c, BLOCK), _cdiv(n, ROWS))](
            theta, grads, per_x, gate_x, *weights, valid.contiguous(), parts[0], parts[1],
            n, c, per_x.stride(0) if per_x.shape[0] > 1 else 0,
            math.exp(-P), math.exp(P),
            R=hidden, BLOCK=BLOCK, ROWS=ROWS, P=P, **LAUNCH,
        )  # fmt: skip
        step, keep = parts.sum(1)  # fixed-order reductions: deterministic
        ctx.save_for_backward(theta, grads, per_x, gate_x, *weights, valid, n_valid)
        ctx.mean = bool(mean)
        return keep / n_valid * theta - (step / n_valid if mean else step)

    @staticmethod
    def backward(ctx, d_new):
        from melonbench.strategies.melon import fused_kernels as kernels

        theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, n_valid = ctx.saved_tensors
        n, c = grads.shape
        hidden = w2.shape[0]
        blocks = _cdiv(c, BLOCK)
        # per column block: its share of d per_x [n, R] and d gate_x [n, 2] (each row in one row block); per
        # program: its share of the weights' gradients, flat: W_2 (R·R), b_2, U row 0, U row 1, w_θ, W_g column 0,
        # W_g column 1 (R each)
        part_x = grads.new_empty(blocks, n, hidden + 2)
        part_w = grads.new_empty(blocks * _cdiv(n, ROWS), hidden * hidden + 6 * hidden)
        kernels.backward[(blocks, _cdiv(n, ROWS))](
            theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, n_valid, d_new.contiguous(),
            part_x, part_w,
            n, c, per_x.stride(0) if per_x.shape[0] > 1 else 0,
            math.exp(-P), math.exp(P),
            R=hidden, BLOCK=BLOCK, ROWS=ROWS, MEAN=ctx.mean, P=P, TILED=TILED, **LAUNCH,
        )  # fmt: skip
        by_x, by_w = part_x.sum(0), part_w.sum(0)  # fixed-order reductions: deterministic
        d_per_x, d_gate_x = by_x[:, :hidden], by_x[:, hidden:]
        if per_x.shape[0] == 1:
            d_per_x = d_per_x.sum(0, keepdim=True)
        d_w2, rest = by_w[: hidden * hidden].view(hidden, hidden), by_w[hidden * hidden :].view(6, hidden)
        d_b2, d_head, d_w_theta, d_w_grad = rest[0], rest[1:3], rest[3], rest[4:6].T
        return None, None, d_per_x, d_gate_x, d_w_theta, d_w_grad, d_w2, d_b2, d_head, None, None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)
