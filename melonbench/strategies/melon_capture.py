"""MeLON's learning-rate capture: the matrix W of the update just applied, one row per interaction.

Columns (``capture_layout``): ``slots`` — one per (slot, coordinate) of each interaction's own rows, then up to
``capture_dense`` evenly spaced dense weights; ``params`` — one per distinct (table, row, coordinate) the batch
touches (where x does not use the parameter, the rate MeLON defines for a zero gradient), then the dense
columns. Learning-rate gate only. See docs/melon.md ("Learning-rate capture").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from melonbench.strategies.melon import Melon
    from melonbench.strategies.melon_grads import TableSlots, Touched


def capture(strategy: Melon, touched: Touched, h: torch.Tensor | None, rates) -> torch.Tensor:
    """W of the update just applied: ``Float[B, C + P']`` (slots) or ``Float[B, Q + P']`` (params)."""
    n = touched.theta.shape[0]
    valid = torch.ones(n, device=touched.theta.device)
    loss_in = strategy._loss_input(touched, valid)
    if strategy.config.capture_layout == "slots":
        rows = rates[0]
    else:
        theta, grads = param_columns(strategy.layout, touched)
        if strategy.mode == "p":
            grads = (valid @ grads)[None]
        rows = torch.sigmoid(strategy._logits(h, theta, loss_in, grads))[..., 0].expand(n, theta.shape[1])
    p = touched.dense_theta.numel()
    if p == 0:
        return rows.contiguous()
    cols = torch.linspace(0, p - 1, min(p, strategy.config.capture_dense), device=rows.device).round().long()
    theta_d, grads_d = touched.dense_theta[cols][None], touched.dense_grads[:, cols]
    if strategy.mode == "p":
        grads_d = (valid @ grads_d)[None]
    dense = torch.sigmoid(strategy._logits(h, theta_d, loss_in, grads_d))[..., 0].expand(n, cols.shape[0])
    return torch.cat([rows, dense], 1)


def param_columns(layout: list[TableSlots], touched: Touched) -> tuple[torch.Tensor, torch.Tensor]:
    """One column per distinct (table, row, coordinate) the batch touches: ``θ [1, Q]``, ``∇ℓ_x [n, Q]``
    (zero where x does not use the parameter)."""
    thetas, grads = [], []
    for t, ids in zip(layout, touched.ids):
        n, d = ids.shape[0], t.dim
        uniq, inv = torch.unique(ids, return_inverse=True)  # inv [n, slots]
        full = touched.grads.new_zeros(n, uniq.shape[0], d)
        g = touched.grads[:, t.start : t.start + t.width].reshape(n, t.slots, d)
        full.index_put_((torch.arange(n, device=ids.device)[:, None].expand_as(inv), inv), g, accumulate=True)
        thetas.append(t.table.weight.detach()[uniq].reshape(1, -1))
        grads.append(full.reshape(n, -1))
    return torch.cat(thetas, 1), torch.cat(grads, 1)
