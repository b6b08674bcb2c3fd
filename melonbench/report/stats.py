"""The statistics behind ``melonbench report``: means with standard errors, paired tests, a two-stage bootstrap,
Holm.

Every function is pure and works on plain numpy arrays; deciding *which* runs may be paired (same stream,
checkpoint, negatives and batches) is :func:`melonbench.report.runs.aligned`'s job. A run's mean is its
interaction-weighted mean over its batches (:func:`melonbench.online.groups.run_mean`), and every number of a
comparison refers to it. Two units of pairing are offered because the published one is fragile:

- **per batch** (the paper's style): the per-batch metric of strategy A and of strategy B on the same batch of the
  same seed form a pair; pairs of every seed are pooled into one weighted paired t-test (:func:`weighted_ttest`,
  weights = interactions). Consecutive batches are autocorrelated (the model carries over), so the nominal p-value
  is optimistic;
- **per seed**: each run's mean is one value, pairs are (A, B) on the same seed; honest but low-powered
  (5 seeds → 4 degrees of freedom).

The interval (:func:`seed_block_bootstrap_ci`) resamples seeds, then blocks of consecutive batches within each
drawn seed: it keeps both the seed-to-seed spread and the short-range dependence that the per-batch t-test ignores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


@dataclasses.dataclass(frozen=True)
class TTest:
    """A paired t-test of ``a - b``.

    Attributes
    ----------
    mean_diff : float
        Mean of the paired differences ``a - b``.
    statistic : float
        The t statistic (NaN when undefined).
    pvalue : float
        Two-sided p-value (NaN when undefined: fewer than two pairs, or every difference identical).
    n : int
        Number of pairs.
    """

    mean_diff: float
    statistic: float
    pvalue: float
    n: int


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / √n; NaN s.e. for a single value)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def paired_ttest(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TTest:
    """Two-sided paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``).

    Parameters
    ----------
    a, b : array-like
        Aligned values, ``a[i]`` paired with ``b[i]``.

    Returns
    -------
    TTest
        With NaN statistic and p-value when the test is undefined (n < 2, or differences that are all equal up to
        a relative 1e-12), instead of scipy's runtime warning.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {x.shape} and {y.shape}")
    diff = x - y
    mean = float(diff.mean()) if diff.size else math.nan
    # Differences equal up to rounding have no usable variance (scipy would warn of catastrophic cancellation).
    if diff.size < 2 or np.ptp(diff) <= 1e-12 * max(float(np.abs(diff).max()), 1e-300):
        return TTest(mean, math.nan, math.nan, int(diff.size))
    res = sps.ttest_rel(x, y)
    return TTest(mean, float(res.statistic), float(res.pvalue), int(diff.size))


def block_length(n: int) -> int:
    """Default moving-block length for a series of ``n`` batches: ⌈n^(1/3)⌉ (Künsch 1989's order), at least 1."""
    return max(1, math.ceil(n ** (1.0 / 3.0)))


def weighted_ttest(diffs: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray) -> TTest:
    """Two-sided t-test that the weighted mean of paired differences is 0 (a paired t-test with unequal weights).

    Parameters
    ----------
    diffs : array-like
        ``d_i``, one paired difference per unit (e.g. per batch: strategy A − strategy B).
    weights : array-like
        ``w_i > 0``, how much each unit counts (e.g. its interactions); only their ratios matter.

    Returns
    -------
    TTest
        ``mean_diff`` = ``Σ w d / Σ w``; ``statistic`` = ``mean_diff / √(σ² / Σ w)`` with
        ``σ² = Σ w (d − mean_diff)² / (m − 1)``, on ``m − 1`` degrees of freedom (``m`` units): the
        weighted-least-squares test of an intercept, where a unit's variance is σ² / w_i (a mean over w_i
        interactions). Equal weights give ``scipy.stats.ttest_rel``. NaN statistic and p-value when undefined,
        as :func:`paired_ttest`.
    """
    d, w = np.asarray(diffs, dtype=float), np.asarray(weights, dtype=float)
    if d.shape != w.shape or d.ndim != 1:
        raise ValueError(f"differences and weights need equal 1-D shapes, got {d.shape} and {w.shape}")
    if (w <= 0).any():
        raise ValueError("weights must be positive")
    mean = float(np.sum(w * d) / np.sum(w)) if d.size else math.nan
    if d.size < 2 or np.ptp(d) <= 1e-12 * max(float(np.abs(d).max()), 1e-300):
        return TTest(mean, math.nan, math.nan, int(d.size))
    var = float(np.sum(w * (d - mean) ** 2)) / (d.size - 1)
    t = mean / math.sqrt(var / float(np.sum(w)))
    return TTest(mean, t, float(2.0 * sps.t.sf(abs(t), d.size - 1)), int(d.size))


def seed_block_bootstrap_ci(
    diffs: Sequence[np.ndarray],
    weights: Sequence[np.ndarray] | None = None,
    *,
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
    block: int | None = None,
) -> tuple[float, float]:
    """Percentile interval of the mean difference over seeds by a two-stage (hierarchical) bootstrap.

    Parameters
    ----------
    diffs : sequence of 1-D arrays
        One series of per-batch differences (A − B) per seed, in batch order.
    weights : sequence of 1-D arrays, optional
        Interactions behind each batch (default: 1 each). A seed's difference is its weighted mean
        ``Σ n_b d_b / Σ n_b``, as a run's mean is interaction-weighted; batches of weight 0 are left out.
    seed : int
        Seed of the resampling generator (numpy PCG64): the same inputs and seed give the same interval.
    n_boot : int
        Bootstrap replicates.
    level : float
        Coverage of the two-sided interval.
    block : int, optional
        Block length; default :func:`block_length` of the shortest series.

    Returns
    -------
    tuple[float, float]
        ``(low, high)``; NaNs when there is nothing to resample.

    Notes
    -----
    Each replicate (1) draws ``S`` seeds with replacement out of the ``S`` given, then (2) for each drawn seed
    rebuilds its series from blocks of ``block`` consecutive batches whose starts are drawn uniformly (with
    replacement), truncated to the series' length, and takes its weighted mean; the replicate is the mean of these
    ``S`` seed means. Stage 1 carries the seed-to-seed spread into the interval, stage 2 the within-seed spread
    with its short-range dependence. With one seed, stage 1 has nothing to draw and the interval is that seed's
    moving-block bootstrap. With few seeds the interval is narrow rather than wide: resampling ``S`` values sees
    ``(S − 1) / S`` of their variance.
    """
    series = []
    for i, d in enumerate(diffs):
        d = np.asarray(d, dtype=float)
        w = np.ones_like(d) if weights is None else np.asarray(weights[i], dtype=float)
        keep = w > 0
        if keep.any():
            series.append((d[keep], w[keep]))
    if not series:
        return math.nan, math.nan
    n_seeds = len(series)
    b = block or block_length(min(d.size for d, _ in series))
    rng = np.random.Generator(np.random.PCG64(seed))
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else np.zeros((n_boot, 1), dtype=int)
    seed_means = np.empty((n_boot, n_seeds))
    for k, (d, w) in enumerate(series):
        slots = picks == k  # [n_boot, S]: where seed k was drawn
        draws = int(slots.sum())
        if draws == 0:
            continue
        size = min(b, d.size)
        n_blocks = math.ceil(d.size / size)
        starts = rng.integers(0, d.size - size + 1, size=(draws, n_blocks))  # [draws, n_blocks]
        idx = (starts[:, :, None] + np.arange(size)).reshape(draws, -1)[:, : d.size]  # [draws, len(d)]
        seed_means[slots] = (d[idx] * w[idx]).sum(axis=1) / w[idx].sum(axis=1)
    means = seed_means.mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaNs are left out of the family and stay NaN).

    The i-th smallest of m p-values becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b between two scorings of the same items (NaN for fewer than two items or constant input)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(sps.kendalltau(a, b).statistic)
