"""MeLON's dense-weight step with the role network fused into two Triton kernels (``--set fused_role=true``).

:class:`~melonbench.strategies.melon_parts.DenseStep` computes the same thing with PyTorch operations, which write
the role network's ``[pairs, R]`` activations to memory several times over: on a GPU with CUDA graphs, NCF's
look-ahead (≈ 10 million (interaction, dense weight) pairs) is then bound by that memory traffic (docs/melon.md,
"CUDA graphs"). Here each program owns ``BLOCK`` dense weights (columns) and ``ROWS`` interactions (rows), and
walks its rows one by one, each pair's R-wide activations living in registers only:

- the forward kernel writes, per row block, the summed steps and forget rates of its columns (``[c]`` each);
- the backward kernel recomputes the activations and reduces the meta-gradients into one partial sum per
  program;

PyTorch then adds the partial sums up in a fixed order: no atomics, so two runs give the same bits.

Used only where Triton runs: on CUDA, or anywhere under ``TRITON_INTERPRET=1`` (how the tests check it on a CPU
against :class:`DenseStep`). The matrix products use full fp32 (``input_precision="ieee"``, no TF32).
"""

from __future__ import annotations

import math
import os

import torch

try:  # Triton ships with PyTorch's CUDA builds; a CPU install has no use for it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

BLOCK = 32
"""Dense weights per program: a ``[BLOCK, R]`` tile of activations (tl.dot needs at least 16)."""
ROWS = 128
"""Interactions per program: NCF's 20,865 dense weights make 652 column blocks, and B^last's ≈ 512 rows in 4 row
blocks give ≈ 2,600 programs, enough to fill a GPU (column blocks alone would leave most of it idle)."""
P = 10.0
"""The gradient preprocessing's ``p`` (:func:`melonbench.preprocess.prep`)."""
LAUNCH = {"num_warps": 2, "enable_fp_fusion": True}
"""Compile options: two warps for a ``[32, 16]`` tile; multiply-adds contracted, as Triton has done by default (said
explicitly: Triton 3.9 warns that its default will change)."""
FLOATS = ("small", "big_scale")
"""The kernels' fp32 scalar arguments (the others are pointers, ints and constants)."""


def available(device: torch.device, hidden: int) -> bool:
    """Whether the fused kernels can run here: Triton imported, a CUDA device (or the interpreter), and a role
    network width that ``tl.dot`` takes (a power of two, at least 16)."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return triton is not None and (device.type == "cuda" or interpreted) and hidden >= 16 and hidden & (hidden - 1) == 0


def compile_for(arch: int) -> list[str]:
    """Compile the kernels for CUDA compute capability ``arch`` (80: A100, 90: H100) without a GPU, with Triton's own
    ``ptxas``: what the interpreter cannot check (types, the shapes ``tl.dot`` takes). Returns what it compiled. Not
    under ``TRITON_INTERPRET=1``, where the kernels are Python functions."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    done = []
    for kernel, flags in ((_forward, {}), (_backward, {"MEAN": False}), (_backward, {"MEAN": True})):
        constants = {"R": 16, "BLOCK": BLOCK, "ROWS": ROWS, "P": P, **flags}
        signature = {
            a: "constexpr" if a in constants else "*fp32" if a.endswith("_ptr") else "fp32" if a in FLOATS else "i32"
            for a in kernel.arg_names
        }
        source = ASTSource(kernel, signature, {(kernel.arg_names.index(k),): v for k, v in constants.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=LAUNCH)
        done.append(f"{compiled.metadata.name} for sm_{arch}" + "".join(f", {k}={v}" for k, v in flags.items()))
    return done


class FusedDenseStep(torch.autograd.Function):
    """:class:`~melonbench.strategies.melon_parts.DenseStep` (same inputs, same result) in two Triton kernels.

    Inputs: ``theta [c]`` and ``grads [n, c]`` (constants), ``per_x [n|1, R]``, ``gate_x [n, 2]``, the role MLP's
    ``w_θ [R]``, ``W_g [R, 2]``, ``W_2 [R, R]``, ``b_2 [R]``, ``U [2, R]``, then ``valid [n]`` and ``mean``.
    """

    @staticmethod
    def forward(ctx, theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, mean):
        theta, grads, per_x, gate_x = (t.contiguous() for t in (theta, grads, per_x, gate_x))
        weights = tuple(t.contiguous() for t in (w_theta, w_grad, w2, b2, head))
        n_valid = valid.sum().clamp_min(1).reshape(1)
        n, c = grads.shape
        hidden = w2.shape[0]
        # per row block: Σ_x v w g and Σ_x v f of its rows, for every column
        parts = grads.new_empty(2, triton.cdiv(n, ROWS), c)
        _forward[(triton.cdiv(c, BLOCK), triton.cdiv(n, ROWS))](
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
        theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, n_valid = ctx.saved_tensors
        n, c = grads.shape
        hidden = w2.shape[0]
        blocks = triton.cdiv(c, BLOCK)
        # per column block: its share of d per_x [n, R] and d gate_x [n, 2] (each row in one row block); per
        # program: its share of the weights' gradients, flat: W_2 (R·R), b_2, U row 0, U row 1, w_θ, W_g column 0,
        # W_g column 1 (R each)
        part_x = grads.new_empty(blocks, n, hidden + 2)
        part_w = grads.new_empty(blocks * triton.cdiv(n, ROWS), hidden * hidden + 6 * hidden)
        _backward[(blocks, triton.cdiv(n, ROWS))](
            theta, grads, per_x, gate_x, w_theta, w_grad, w2, b2, head, valid, n_valid, d_new.contiguous(),
            part_x, part_w,
            n, c, per_x.stride(0) if per_x.shape[0] > 1 else 0,
            math.exp(-P), math.exp(P),
            R=hidden, BLOCK=BLOCK, ROWS=ROWS, MEAN=ctx.mean, P=P, **LAUNCH,
        )  # fmt: skip
        by_x, by_w = part_x.sum(0), part_w.sum(0)  # fixed-order reductions: deterministic
        d_per_x, d_gate_x = by_x[:, :hidden], by_x[:, hidden:]
        if per_x.shape[0] == 1:
            d_per_x = d_per_x.sum(0, keepdim=True)
        d_w2, rest = by_w[: hidden * hidden].view(hidden, hidden), by_w[hidden * hidden :].view(6, hidden)
        d_b2, d_head, d_w_theta, d_w_grad = rest[0], rest[1:3], rest[3], rest[4:6].T
        return None, None, d_per_x, d_gate_x, d_w_theta, d_w_grad, d_w2, d_b2, d_head, None, None


if triton is not None:

    @triton.jit
    def _prep(g, small, big_scale, P: tl.constexpr):
        """:func:`melonbench.preprocess.prep` of a tile: ``(log|g| / p, sign g)`` if ``|g| ≥ e^-p``, else
        ``(−1, e^p g)``."""
        a = tl.abs(g)
        big = a >= small
        first = tl.where(big, tl.log(tl.maximum(a, small)) / P, -1.0)
        sign = tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0))
        return first, tl.where(big, sign, g * big_scale)

    @triton.jit
    def _role_weights(w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr, R: tl.constexpr):
        """The role MLP's weights: ``w_θ``, the two columns of ``W_g``, ``W_2ᵀ`` (``h2 = h1 W_2ᵀ``), ``b_2``, and
        the two rows of ``U``."""
        r = tl.arange(0, R)
        w2t = tl.load(w2_ptr + r[None, :] * R + r[:, None])
        wg0, wg1 = tl.load(w_grad_ptr + 2 * r), tl.load(w_grad_ptr + 2 * r + 1)
        u0, u1 = tl.load(head_ptr + r), tl.load(head_ptr + R + r)
        return tl.load(w_theta_ptr + r), wg0, wg1, w2t, tl.load(b2_ptr + r), u0, u1

    @triton.jit
    def _pair_gates(
        x, theta, cols, live, c, grads_ptr, per_x_ptr, stride_px, gate_x_ptr, small, big_scale,
        w_theta, wg0, wg1, w2t, b2, u0, u1, R: tl.constexpr, P: tl.constexpr,
    ):  # fmt: skip
        """Interaction ``x`` with a ``[BLOCK]`` tile of weights: its gradients ``g``, their features, the role
        MLP's ``h1``, ``pre2``, ``h2`` (``[BLOCK, R]``, first layer in separated form as in ``RoleNet``), and the
        gates ``lr``, ``forget``."""
        g = tl.load(grads_ptr + x * c + cols, mask=live, other=0.0)
        px = tl.load(per_x_ptr + x * stride_px + tl.arange(0, R))
        f0, f1 = _prep(g, small, big_scale, P)
        pre1 = theta[:, None] * w_theta[None, :] + px[None, :] + f0[:, None] * wg0[None, :] + f1[:, None] * wg1[None, :]
        h1 = tl.maximum(pre1, 0.0)
        pre2 = tl.dot(h1, w2t, input_precision="ieee") + b2[None, :]
        h2 = tl.maximum(pre2, 0.0)
        lr = tl.sigmoid(tl.sum(h2 * u0[None, :], 1) + tl.load(gate_x_ptr + 2 * x))
        forget = tl.sigmoid(tl.sum(h2 * u1[None, :], 1) + tl.load(gate_x_ptr + 2 * x + 1))
        return g, f0, f1, h1, pre2, h2, lr, forget

    @triton.jit
    def _forward(
        theta_ptr, grads_ptr, per_x_ptr, gate_x_ptr, w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr,
        valid_ptr, step_ptr, keep_ptr,
        n, c, stride_px, small, big_scale,
        R: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, P: tl.constexpr,
    ):  # fmt: skip
        cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        first = tl.program_id(1) * ROWS
        live = cols < c
        theta = tl.load(theta_ptr + cols, mask=live, other=0.0)
        w_theta, wg0, wg1, w2t, b2, u0, u1 = _role_weights(w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr, R)
        step = tl.zeros([BLOCK], dtype=tl.float32)
        keep = tl.zeros([BLOCK], dtype=tl.float32)
        for x in range(first, tl.minimum(first + ROWS, n)):
            v = tl.load(valid_ptr + x)
            g, f0, f1, h1, pre2, h2, lr, forget = _pair_gates(
                x, theta, cols, live, c, grads_ptr, per_x_ptr, stride_px, gate_x_ptr, small, big_scale,
                w_theta, wg0, wg1, w2t, b2, u0, u1, R, P,
            )  # fmt: skip
            step += v * (lr * g)
            keep += v * forget
        tl.store(step_ptr + tl.program_id(1) * c + cols, step, mask=live)
        tl.store(keep_ptr + tl.program_id(1) * c + cols, keep, mask=live)

    @triton.jit
    def _backward(
        theta_ptr, grads_ptr, per_x_ptr, gate_x_ptr, w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr,
        valid_ptr, n_valid_ptr, d_new_ptr, part_x_ptr, part_w_ptr,
        n, c, stride_px, small, big_scale,
        R: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, MEAN: tl.constexpr, P: tl.constexpr,
    ):  # fmt: skip
        block, first = tl.program_id(0), tl.program_id(1) * ROWS
        cols = block * BLOCK + tl.arange(0, BLOCK)
        live = cols < c
        r = tl.arange(0, R)
        theta = tl.load(theta_ptr + cols, mask=live, other=0.0)
        d_new = tl.load(d_new_ptr + cols, mask=live, other=0.0)  # 0 beyond c: those columns add nothing
        w_theta, wg0, wg1, w2t, b2, u0, u1 = _role_weights(w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr, R)
        w2 = tl.load(w2_ptr + r[:, None] * R + r[None, :])
        n_valid = tl.load(n_valid_ptr)
        acc_w2 = tl.zeros([R, R], dtype=tl.float32)
        acc_b2 = tl.zeros([R], dtype=tl.float32)
        acc_u0 = tl.zeros([R], dtype=tl.float32)
        acc_u1 = tl.zeros([R], dtype=tl.float32)
        acc_wt = tl.zeros([R], dtype=tl.float32)
        acc_wg0 = tl.zeros([R], dtype=tl.float32)
        acc_wg1 = tl.zeros([R], dtype=tl.float32)
        row_out = part_x_ptr + block * n * (R + 2)
        for x in range(first, tl.minimum(first + ROWS, n)):
            v = tl.load(valid_ptr + x)
            g, f0, f1, h1, pre2, h2, lr, forget = _pair_gates(
                x, theta, cols, live, c, grads_ptr, per_x_ptr, stride_px, gate_x_ptr, small, big_scale,
                w_theta, wg0, wg1, w2t, b2, u0, u1, R, P,
            )  # fmt: skip
            # ∂new/∂lr = −v g (÷ n_valid with MEAN), ∂new/∂forget = v θ / n_valid; σ' = σ (1 − σ)
            d_lr = (d_new * -1.0) * g * v
            if MEAN:
                d_lr = d_lr / n_valid
            d0 = d_lr * lr * (1 - lr)
            d1 = ((d_new * theta) / n_valid) * v * forget * (1 - forget)
            acc_u0 += tl.sum(d0[:, None] * h2, 0)
            acc_u1 += tl.sum(d1[:, None] * h2, 0)
            d_pre2 = tl.where(pre2 > 0, d0[:, None] * u0[None, :] + d1[:, None] * u1[None, :], 0.0)
            acc_w2 += tl.dot(tl.trans(d_pre2), h1, input_precision="ieee")
            acc_b2 += tl.sum(d_pre2, 0)
            d_pre1 = tl.where(h1 > 0, tl.dot(d_pre2, w2, input_precision="ieee"), 0.0)
            acc_wt += tl.sum(d_pre1 * theta[:, None], 0)
            acc_wg0 += tl.sum(d_pre1 * f0[:, None], 0)
            acc_wg1 += tl.sum(d_pre1 * f1[:, None], 0)
            tl.store(row_out + x * (R + 2) + r, tl.sum(d_pre1, 0))
            tl.store(row_out + x * (R + 2) + R, tl.sum(d0, 0))
            tl.store(row_out + x * (R + 2) + R + 1, tl.sum(d1, 0))
        out = part_w_ptr + (block * tl.num_programs(1) + tl.program_id(1)) * (R * R + 6 * R)
        tl.store(out + r[:, None] * R + r[None, :], acc_w2)
        tl.store(out + R * R + r, acc_b2)
        tl.store(out + R * R + R + r, acc_u0)
        tl.store(out + R * R + 2 * R + r, acc_u1)
        tl.store(out + R * R + 3 * R + r, acc_wt)
        tl.store(out + R * R + 4 * R + r, acc_wg0)
        tl.store(out + R * R + 5 * R + r, acc_wg1)
