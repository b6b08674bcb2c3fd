"""Warm and cold interactions, and the one definition of a run's mean over its batches.

An interaction of batch B_t (stream positions ``start .. stop - 1``) is

- **warm-item** when its positive item occurs at a position ``< start``: in the pre-training part or in an earlier
  online batch; **cold-item** otherwise, i.e. the item's first interaction lies inside B_t. Every interaction of
  such an item in B_t is cold, not only its first: the model is updated between batches only, so while B_t is
  ranked no strategy has trained on the item yet, and a popularity count of it is still 0;
- **warm-user** / **cold-user** in the same way for its user.

Each batch stores every metric of every group (``{metric}_{group}``, e.g. ``sampled_hr@5_warm_item``: the mean over
the group's interactions, NaN when the group is empty) and the group's size (``n_{group}``). A run's mean of any
metric column is the **interaction-weighted** mean over its batches, :func:`run_mean`: weighted by ``n`` for the
columns over all interactions, by ``n_{group}`` for a group's columns, so that it equals the mean over the
interactions themselves and an empty group's NaN weighs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

GROUPS = ("warm_item", "cold_item", "warm_user", "cold_user")


def group_column(metric: str, group: str) -> str:
    """``sampled_hr@5`` + ``warm_item`` → ``sampled_hr@5_warm_item``."""
    return f"{metric}_{group}"


def count_column(group: str) -> str:
    """The column holding a group's number of interactions per batch: ``n_warm_item``, ..."""
    return f"n_{group}"


def weight_column(column: str) -> str:
    """The per-batch weight of a metric column in a run's mean: ``n_{group}`` for a group's column, else ``n``."""
    for group in GROUPS:
        if column.endswith(f"_{group}"):
            return count_column(group)
    return "n"


def group_masks(warm_items: torch.Tensor, warm_users: torch.Tensor) -> torch.Tensor:
    """``Float[G, B]`` membership of each interaction in each of :data:`GROUPS`, from ``Bool[B]`` warm flags."""
    return torch.stack([warm_items, ~warm_items, warm_users, ~warm_users]).float()


def group_means(values: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group means of per-interaction values, on the device.

    Parameters
    ----------
    values : Float[M, B]
        ``M`` metrics of the batch's ``B`` interactions.
    masks : Float[G, B]
        From :func:`group_masks`.

    Returns
    -------
    tuple[Float[G, M], Float[G]]
        The mean of each metric over each group (NaN for an empty group: 0 / 0) and the group sizes.
    """
    counts = masks.sum(dim=1)  # [G]
    sums = (masks[:, None, :] * values[None, :, :]).sum(dim=2)  # [G, M]
    return sums / counts[:, None], counts


def run_mean(values: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray) -> float:
    """A run's mean of one metric column: ``Σ w_b x_b / Σ w_b`` over the batches with ``w_b > 0``.

    Parameters
    ----------
    values : array-like
        The column's per-batch values (NaN allowed where the weight is 0: an empty group).
    weights : array-like
        Interactions behind each value (``n``, or ``n_{group}``; see :func:`weight_column`).

    Returns
    -------
    float
        NaN when no batch has a positive weight.
    """
    x, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = w > 0
    if not keep.any():
        return float("nan")
    return float(np.sum(x[keep] * w[keep]) / np.sum(w[keep]))
