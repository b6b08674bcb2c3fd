"""MeLON's learning-rate capture: the matrix W of the update just applied, one row per interaction.

Columns (``capture_layout``): ``slots`` — one per (slot, coordinate) of each interaction's own rows, then up to
``capture_dense`` evenly spaced dense weights; ``params`` — one per distinct (table, row, coordinate) the batch
touches (where x does not use the parameter, the rate MeLON defines for a zero gradient), then the dense
columns. Learning-rate gate only. See docs/melon.md ("Learning-rate capture").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from melonbench.strategies.melon.grads import TableSlots, Touched

Rate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (θ [1, Q], ∇ℓ [n or 1, Q]) -> lr gate [n or 1, Q]


def capture(
    touched: Touched,
    row_rates: torch.Tensor,
    rate: Rate,
    layout: list[TableSlots],
    *,
    batch_level: bool,
    columns: str,
    dense_cap: int,
) -> torch.Tensor:
    """W of the update just applied: ``Float[B, C + P']`` (slots) or ``Float[B, Q + P']`` (params).

    ``row_rates`` are the learning rates the update gave each interaction's own rows, ``[B, C]``; ``rate`` gives
    the learning-rate gate of other (θ, ∇ℓ) columns under the same meta-model and losses; ``batch_level`` (MeLON-P)
    feeds it the batch gradient of each parameter instead of each interaction's own.
    """
    n = touched.theta.shape[0]
    valid = torch.ones(n, device=touched.theta.device)
    if columns == "slots":
        rows = row_rates
    else:
        theta, grads = param_columns(layout, touched)
        if batch_level:
            grads = (valid @ grads)[None]
        rows = rate(theta, grads).expand(n, theta.shape[1])
    p = touched.dense_theta.numel()
    if p == 0:
        return rows.contiguous()
    cols = torch.linspace(0, p - 1, min(p, dense_cap), device=rows.device).round().long()
    theta_d, grads_d = touched.dense_theta[cols][None], touched.dense_grads[:, cols]
    if batch_level:
        grads_d = (valid @ grads_d)[None]
    dense = rate(theta_d, grads_d).expand(n, cols.shape[0])
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
