"""What a run stores per online batch (a row of ``batches.parquet``, the learning-rate capture) and the run summary
made from those rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from melonbench.online.groups import GROUPS, count_column, run_mean, weight_column
from melonbench.online.replay import BatchOutcome
from melonbench.store.atomic import atomic_save_npy

RANK_RTOL = 1e-6


def numerical_rank(w: torch.Tensor) -> int:
    """Singular values above ``RANK_RTOL · σ_max``, computed in float64.

    W is computed in float32: rounding a rank-1 product ``a bᵀ`` perturbs it by at most about ``6e-8 · σ_max``
    (‖E‖₂ ≤ ‖E‖_F ≤ 2⁻²⁴ ‖W‖_F), well below the tolerance, while the tolerance of ``torch.linalg.matrix_rank``
    (``σ_max · max(B, P) · ε``) grows with the thousands of columns and would hide real structure.
    """
    s = torch.linalg.svdvals(w.detach().double())
    if s.numel() == 0 or s[0] == 0:
        return 0
    return int((s > RANK_RTOL * s[0]).sum())


def capture_learning_rates(strategy, folder: Path, index: int) -> int | None:
    """Save the strategy's last learning-rate matrix W as ``lr/batch_NNNNN.npy``; return its numerical rank."""
    w = strategy.captured_lr
    if w is None:
        return None
    w = w.detach().float()
    atomic_save_npy(folder / "lr" / f"batch_{index:05d}.npy", w.cpu().numpy())
    return numerical_rank(w)


def batch_row(
    outcome: BatchOutcome, values: np.ndarray, names: list[str], ts: np.ndarray, warmup: bool
) -> dict[str, Any]:
    """One row of ``batches.parquet``: where the batch lies in the stream, its metrics (``values`` named by
    ``names``, the warm/cold counts as integers), its timings and whether it is a warm-up batch."""
    row: dict[str, Any] = {
        "batch": outcome.index,
        "split": outcome.split,
        "start": outcome.start,
        "n": outcome.stop - outcome.start,
        "first_ts": int(ts[outcome.start]),
        "last_ts": int(ts[outcome.stop - 1]),
    }
    row.update({name: float(v) for name, v in zip(names, values)})
    row["cold_users"] = int(row["cold_users"])
    for group in GROUPS:
        row[count_column(group)] = int(row[count_column(group)])
    row.update(eval_s=outcome.eval_s, update_s=outcome.update_s, warmup=warmup)
    return row


def progress_hr5(rows: list[dict[str, Any]]) -> float:
    """The sampled HR@5 that progress shows: the run mean (interaction-weighted, as :func:`summarise`) over the
    replayed batches of the split being replayed now, the last row's; after the last batch of the reported split it
    equals the summary's ``sampled_hr@5``."""
    split = rows[-1]["split"]
    part = [r for r in rows if r["split"] == split]
    if "sampled_hr@5" not in part[0]:
        return float("nan")
    return run_mean([r["sampled_hr@5"] for r in part], [r[weight_column("sampled_hr@5")] for r in part])


def summarise(rows: list[dict[str, Any]], split: str, untimed: set[int] | None = None) -> dict[str, float]:
    """The run's mean (:func:`~melonbench.online.groups.run_mean`, interaction-weighted) of every metric over the
    reported split, the size of each warm/cold group, and median timings.

    The medians leave out the batches in ``untimed`` (default: those flagged ``warmup``), unless that is all of them.
    """
    part = [r for r in rows if r["split"] == split]
    if not part:
        return {}
    keys = [k for k in part[0] if k.startswith(("sampled_", "full_"))] + ["loss"]
    out = {k: run_mean([r[k] for r in part], [r[weight_column(k)] for r in part]) for k in keys}
    out.update({count_column(g): float(sum(r[count_column(g)] for r in part)) for g in GROUPS})
    timed = [r for r in rows if not (r["batch"] in untimed if untimed is not None else r["warmup"])] or rows
    out["median_eval_s"] = float(np.median([r["eval_s"] for r in timed]))
    out["median_update_s"] = float(np.median([r["update_s"] for r in timed]))
    out["batches"] = float(len(part))
    return out
