"""The two Triton kernels of :mod:`melonbench.strategies.melon.fused` (imported only when they are launched or
compiled: Triton's import costs about 0.15 s, which every ``melonbench`` command would otherwise pay)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _prep(g, small, big_scale, P: tl.constexpr):
    """:func:`melonbench.strategies.preprocess.prep` of a tile: ``(log|g| / p, sign g)`` if ``|g| ≥ e^-p``, else
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
def forward(
    theta_ptr, grads_ptr, per_x_ptr, gate_x_ptr, w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr,
    valid_ptr, step_ptr, keep_ptr,
    n, c, stride_px, small, big_scale,
    R: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, P: tl.constexpr,
):  # fmt: skip
    """Program (column block, row block): ``Σ_x v_x w_{x,m} g_{x,m}`` and ``Σ_x v_x f_{x,m}`` over its rows, for its
    columns, into row ``program_id(1)`` of ``step`` and ``keep`` (``[row blocks, c]`` each)."""
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
def backward(
    theta_ptr, grads_ptr, per_x_ptr, gate_x_ptr, w_theta_ptr, w_grad_ptr, w2_ptr, b2_ptr, head_ptr,
    valid_ptr, n_valid_ptr, d_new_ptr, part_x_ptr, part_w_ptr,
    n, c, stride_px, small, big_scale,
    R: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, MEAN: tl.constexpr, P: tl.constexpr,
    TILED: tl.constexpr = False,
):  # fmt: skip
    """Program (column block, row block), given ``d new [c]``: its rows' ``d per_x`` and ``d gate_x`` over its columns
    into ``part_x [column blocks, n, R + 2]``, and its share of the MLP weights' gradients into one row of
    ``part_w`` (layout: :meth:`FusedDenseStep.backward`)."""
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
    # TILED: the weights' sums kept per (column, unit) over the rows, reduced over the columns once at the end
    # (θ is the same for every row: Σ_x Σ_m θ_m d_{x,m} = Σ_m θ_m Σ_x d_{x,m})
    tile_u0 = tl.zeros([BLOCK, R], dtype=tl.float32)
    tile_u1 = tl.zeros([BLOCK, R], dtype=tl.float32)
    tile_b2 = tl.zeros([BLOCK, R], dtype=tl.float32)
    tile_wt = tl.zeros([BLOCK, R], dtype=tl.float32)
    tile_wg0 = tl.zeros([BLOCK, R], dtype=tl.float32)
    tile_wg1 = tl.zeros([BLOCK, R], dtype=tl.float32)
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
        if TILED:
            tile_u0 += d0[:, None] * h2
            tile_u1 += d1[:, None] * h2
        else:
            acc_u0 += tl.sum(d0[:, None] * h2, 0)
            acc_u1 += tl.sum(d1[:, None] * h2, 0)
        d_pre2 = tl.where(pre2 > 0, d0[:, None] * u0[None, :] + d1[:, None] * u1[None, :], 0.0)
        acc_w2 += tl.dot(tl.trans(d_pre2), h1, input_precision="ieee")
        if TILED:
            tile_b2 += d_pre2
        else:
            acc_b2 += tl.sum(d_pre2, 0)
        d_pre1 = tl.where(h1 > 0, tl.dot(d_pre2, w2, input_precision="ieee"), 0.0)
        if TILED:
            tile_wt += d_pre1
            tile_wg0 += d_pre1 * f0[:, None]
            tile_wg1 += d_pre1 * f1[:, None]
        else:
            acc_wt += tl.sum(d_pre1 * theta[:, None], 0)
            acc_wg0 += tl.sum(d_pre1 * f0[:, None], 0)
            acc_wg1 += tl.sum(d_pre1 * f1[:, None], 0)
        tl.store(row_out + x * (R + 2) + r, tl.sum(d_pre1, 0))
        tl.store(row_out + x * (R + 2) + R, tl.sum(d0, 0))
        tl.store(row_out + x * (R + 2) + R + 1, tl.sum(d1, 0))
    if TILED:
        acc_u0, acc_u1, acc_b2 = tl.sum(tile_u0, 0), tl.sum(tile_u1, 0), tl.sum(tile_b2, 0)
        acc_wt, acc_wg0, acc_wg1 = tl.sum(tile_wt * theta[:, None], 0), tl.sum(tile_wg0, 0), tl.sum(tile_wg1, 0)
    out = part_w_ptr + (block * tl.num_programs(1) + tl.program_id(1)) * (R * R + 6 * R)
    tl.store(out + r[:, None] * R + r[None, :], acc_w2)
    tl.store(out + R * R + r, acc_b2)
    tl.store(out + R * R + R + r, acc_u0)
    tl.store(out + R * R + 2 * R + r, acc_u1)
    tl.store(out + R * R + 3 * R + r, acc_wt)
    tl.store(out + R * R + 4 * R + r, acc_wg0)
    tl.store(out + R * R + 5 * R + r, acc_wg1)
