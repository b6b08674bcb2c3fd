"""S²Meta's MetaLSTM cell for one chunk of coordinates, with its hand-written backward (used by ``s2meta.py``)."""

from __future__ import annotations

import torch


class MetaLSTMCell(torch.autograd.Function):
    """One chunk of the MetaLSTM, ``([x, h], c) → ([lr, forget], LayerNorm(h'), c')``, with a hand-written backward.

    The arithmetic of ``nn.LSTMCell`` (gates i, f, g, o), ``nn.LayerNorm`` and the two gates, arranged for a CPU:
    one matmul on ``[x, h]``; ``tanh(z)`` as ``2σ(2z) − 1`` (a CPU evaluates ``tanh`` several times slower than
    ``σ``; the doubled g pre-activation comes exactly from weights doubled by the caller, so one ``σ`` covers all
    four gates); LayerNorm's row statistics as matmuls; a backward pass that reuses the saved gate values instead of
    autograd's ~40 small nodes per chunk (the look-ahead's backward dominated S²Meta's step). The tests check it
    against finite differences (``gradcheck``) and a scalar reference of the original cell.
    """

    @staticmethod
    def compute(xh, c, weight, bias, norm_weight, norm_bias, gate_weight, gate_bias, eps, out=None):
        """The forward arithmetic: ``(gates [n, 2], h' [n, H], c' [n, H])`` then the values the backward reuses.

        ``out``: three tensors to write ``gates``, ``h'``, ``c'`` into (the no-gradient path writes each chunk
        into its rows of whole-batch outputs instead of concatenating the chunks afterwards).
        """
        # xh: [n, 5 + H] = [x, h]; weight: [5 + H, 4H] with the g columns doubled; gate_weight: [H, 2] (lr, forget).
        gates_out, h_out, c_out = out if out is not None else (None, None, None)
        hidden = c.shape[1]
        s = torch.addmm(bias, xh, weight).sigmoid_()  # [n, 4H]
        i, f, g, o = s.split(hidden, 1)
        tanh_g = g.mul(2).sub_(1)  # tanh(z_g), kept for the backward
        c_new = torch.addcmul(f * c, i, tanh_g, out=c_out)  # f c + i tanh(z_g)
        tanh_c = (c_new * 2).sigmoid_().mul_(2).sub_(1)
        h_raw = o * tanh_c
        # LayerNorm (biased variance, as nn.LayerNorm) with its row means as matmuls: ~2x faster than the
        # LayerNorm kernel over rows of 16 on a CPU
        average = torch.full((hidden, 1), 1.0 / hidden, dtype=c.dtype, device=c.device)
        mean = h_raw @ average  # [n, 1]
        centred = h_raw - mean
        rstd = ((centred * centred) @ average).add_(eps).rsqrt_()
        h_new = torch.addcmul(norm_bias, centred.mul_(rstd), norm_weight, out=h_out)
        gates = torch.addmm(gate_bias, h_new, gate_weight, out=gates_out).sigmoid_()  # [n, 2]
        return gates, h_new, c_new, (s, tanh_g, tanh_c, h_raw, mean, rstd)

    @staticmethod
    def forward(ctx, xh, c, fresh, h0, c0, weight, bias, norm_weight, norm_bias, gate_weight, gate_bias, eps):
        # fresh: [n] (or None), 1 where (h, c) holds (h0, c0): their gradient is the sum over those rows.
        # In-place steps on fresh tensors: autograd does not record inside a Function.
        out, h_new, c_new, (s, tanh_g, tanh_c, h_raw, mean, rstd) = MetaLSTMCell.compute(
            xh, c, weight, bias, norm_weight, norm_bias, gate_weight, gate_bias, eps
        )
        ctx.save_for_backward(
            xh, c, fresh, s, tanh_g, tanh_c, h_raw, mean, rstd, h_new, out, weight, norm_weight, norm_bias, gate_weight
        )
        ctx.set_materialize_grads(False)
        return out, h_new, c_new

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):
        xh, c, fresh, s, tanh_g, tanh_c, h_raw, mean, rstd, h_new, out, weight, norm_weight, norm_bias, gate_weight = (
            ctx.saved_tensors
        )
        # σ' and tanh' as aten's one-pass derivative kernels (``sigmoid_backward``, ``tanh_backward``), not as
        # chains of elementwise operations over [n, 4H]: this backward is most of a look-ahead's cost
        sigmoid_back, tanh_back = torch.ops.aten.sigmoid_backward, torch.ops.aten.tanh_backward
        hidden = c.shape[1]
        i, f, _, o = s.split(hidden, 1)
        d_gate_weight = d_gate_bias = d_norm_weight = d_norm_bias = None
        d_hn, d_c_new = d_h, d_c
        if d_out is not None:
            d_z = sigmoid_back(d_out, out)  # [n, 2]
            d_gate_weight, d_gate_bias = h_new.t() @ d_z, d_z.sum(0)
            d_hn = d_z @ gate_weight.t() if d_hn is None else torch.addmm(d_hn, d_z, gate_weight.t())
        d_pre = torch.empty_like(s)  # d of the pre-activations, doubled-g layout, before the σ' factor
        d_i, d_f, d_g, d_o = d_pre.split(hidden, 1)
        if d_hn is None:
            d_o.zero_()
        else:
            d_h_raw, d_norm_weight, d_norm_bias = torch.ops.aten.native_layer_norm_backward(
                d_hn, h_raw, [hidden], mean, rstd, norm_weight, norm_bias, [True, True, True]
            )
            torch.mul(d_h_raw, tanh_c, out=d_o)
            d_from_h = tanh_back(d_h_raw.mul_(o), tanh_c)  # through o tanh(c)
            d_c_new = d_from_h if d_c_new is None else d_from_h.add_(d_c_new)
        if d_c_new is None:
            return (None,) * 12
        torch.mul(d_c_new, tanh_g, out=d_i)
        torch.mul(d_c_new, c, out=d_f)
        torch.mul(d_c_new, i, out=d_g).mul_(2)  # tanh(z) = 2σ(2z) − 1 on the doubled pre-activation
        torch.ops.aten.sigmoid_backward.grad_input(d_pre, s, grad_input=d_pre)  # σ' = σ (1 − σ), in place
        d_xh = (d_pre @ weight.t()) if ctx.needs_input_grad[0] else None
        d_c_prev = d_c_new * f if ctx.needs_input_grad[1] or ctx.needs_input_grad[4] else None
        d_h0 = (fresh @ d_pre) @ weight[-hidden:].t() if ctx.needs_input_grad[3] else None  # Σ over fresh rows
        d_c0 = fresh @ d_c_prev if ctx.needs_input_grad[4] else None
        return (
            d_xh,
            d_c_prev if ctx.needs_input_grad[1] else None,
            None,
            d_h0,
            d_c0,
            xh.t() @ d_pre,
            d_pre.sum(0),
            d_norm_weight,
            d_norm_bias,
            d_gate_weight,
            d_gate_bias,
            None,
        )
