"""melonbench.report.stats: values checked against scipy and against arithmetic done by hand (shown in comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from melonbench.report.stats import (
    block_length,
    holm,
    kendall_tau,
    mean_se,
    paired_ttest,
    weighted_ttest,
)
from melonbench.report.stats import seed_block_bootstrap_ci as block_bootstrap_ci

A = [0.31, 0.28, 0.35, 0.40, 0.22, 0.30, 0.27, 0.33]
B = [0.29, 0.27, 0.30, 0.41, 0.20, 0.25, 0.27, 0.30]


def test_paired_ttest_equals_scipy_ttest_rel_on_fixed_vectors():
    got = paired_ttest(A, B)
    want = sps.ttest_rel(A, B)
    assert got.pvalue == pytest.approx(want.pvalue, rel=1e-12)
    assert got.statistic == pytest.approx(want.statistic, rel=1e-12)
    assert got.n == 8
    # By hand: the differences are .02 .01 .05 -.01 .02 .05 0 .03, summing to 0.17, mean 0.02125.
    assert got.mean_diff == pytest.approx(0.02125)


def test_paired_ttest_on_a_hand_computed_example():
    # a − b = [1, 0, 2, 1]: mean 1, sample sd √(2/3), se √(2/3)/2 = 0.408248, t = 2.449490 with 3 df;
    # the two-sided p-value is 2·P(T3 > 2.449490), which the t distribution's survival function gives.
    got = paired_ttest([1, 2, 3, 4], [0, 2, 1, 3])
    assert got.statistic == pytest.approx(math.sqrt(6), rel=1e-9)  # 1 / (√(2/3)/2) = √6
    assert got.pvalue == pytest.approx(2 * sps.t.sf(math.sqrt(6), 3), rel=1e-9)
    assert 0.09 < got.pvalue < 0.10  # tables: t(3) = 2.353 at p = .10 and 3.182 at p = .05


def test_undefined_tests_give_nan_without_a_warning():
    # pytest turns warnings into errors here, so scipy's "precision loss" warning would fail this test.
    assert math.isnan(paired_ttest([0.5], [0.4]).pvalue)
    constant = paired_ttest([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # every difference is 0.1: zero variance
    assert math.isnan(constant.pvalue)
    assert constant.mean_diff == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_ttest([1, 2], [1, 2, 3])


def test_mean_and_standard_error():
    # [1, 2, 3, 4]: mean 2.5, sample variance (2.25+0.25+0.25+2.25)/3 = 5/3, se = √(5/3)/2 = 0.645497.
    mean, se = mean_se([1, 2, 3, 4])
    assert (mean, se) == pytest.approx((2.5, 0.6454972243679028))
    single = mean_se([0.3])
    assert single[0] == 0.3 and math.isnan(single[1])


def test_holm_by_hand():
    # Sorted: .005·4 = .02, .01·3 = .03, .03·2 = .06, .04·1 = .04 → running max keeps .06 for the last.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaNs are not part of the family (m = 2 here): .02·2 = .04, .04·1 = .04.
    out = holm([0.02, math.nan, 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1: .6·2 = 1.2
    assert holm([]) == []


def test_kendall_tau_by_hand():
    # Pairs (0,1) and (0,2) are ordered alike, (1,2) is not: (2 − 1) / 3.
    assert kendall_tau([3, 2, 1], [3, 1, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([0.1, 0.2, 0.3], [1, 2, 3]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau([1.0], [2.0]))


def test_block_length_is_the_cube_root_rounded_up():
    assert [block_length(n) for n in (1, 8, 9, 27, 28)] == [1, 2, 3, 3, 4]


def test_weighted_ttest_with_equal_weights_is_scipys_ttest_rel():
    d = np.subtract(A, B)
    for w in (np.ones(8), np.full(8, 256.0)):  # only the ratios of the weights matter
        got, want = weighted_ttest(d, w), sps.ttest_rel(A, B)
        assert got.statistic == pytest.approx(want.statistic, rel=1e-12)
        assert got.pvalue == pytest.approx(want.pvalue, rel=1e-12)
        assert got.mean_diff == pytest.approx(0.02125)


def test_weighted_ttest_on_a_hand_computed_example():
    # d = [1, 2, 4], w = [1, 1, 2]: mean (1 + 2 + 8) / 4 = 2.75; σ² = (1.75² + 0.75² + 2·1.25²) / 2 = 6.75 / 2 = 3.375;
    # se = √(3.375 / 4) = 0.918559; t = 2.75 / 0.918559 = 2.993821 on 2 df. For 2 df the t distribution has the
    # closed form P(T ≤ t) = 1/2 + t / (2√(2 + t²)): p = 1 − t / √(2 + t²) = 1 − 2.993821 / 3.311018 = 0.095802.
    got = weighted_ttest([1, 2, 4], [1, 1, 2])
    assert got.mean_diff == pytest.approx(2.75)
    assert got.statistic == pytest.approx(2.993821, rel=1e-6)
    assert got.pvalue == pytest.approx(0.095802, rel=1e-4)
    # The unweighted test of the same differences is another number: mean 7/3, sd 1.527525, t = 2.645751.
    assert paired_ttest([1, 2, 4], [0, 0, 0]).statistic == pytest.approx(2.645751, rel=1e-6)
    assert math.isnan(weighted_ttest([0.1, 0.1], [1, 3]).pvalue)
    with pytest.raises(ValueError, match="positive"):
        weighted_ttest([0.1, 0.2], [1, 0])


def old_block_bootstrap_ci(diffs, *, seed=0, n_boot=2000, level=0.95, block=None):
    """The report's interval before the seeds were resampled (melonbench up to issue 17), kept as the reference that
    the two-stage bootstrap must equal for one seed."""
    series = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    b = block or block_length(min(s.size for s in series))
    rng = np.random.Generator(np.random.PCG64(seed))
    total, count = np.zeros(n_boot), 0
    for s in series:
        size = min(b, s.size)
        n_blocks = math.ceil(s.size / size)
        starts = rng.integers(0, s.size - size + 1, size=(n_boot, n_blocks))
        idx = (starts[:, :, None] + np.arange(size)).reshape(n_boot, -1)[:, : s.size]
        total += s[idx].sum(axis=1)
        count += s.size
    lo, hi = np.quantile(total / count, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def test_with_one_seed_the_two_stage_bootstrap_is_the_block_bootstrap():
    rng = np.random.Generator(np.random.PCG64(11))
    series = rng.normal(0.02, 0.05, size=45)
    for seed in (0, 5):
        assert block_bootstrap_ci([series], seed=seed, n_boot=700) == old_block_bootstrap_ci(
            [series], seed=seed, n_boot=700
        )
    # equal weights of any size change nothing
    same = old_block_bootstrap_ci([series], n_boot=700)
    assert block_bootstrap_ci([series], [np.full(45, 256.0)], n_boot=700) == same


def test_seeds_that_differ_give_a_wide_interval_even_without_spread_within_a_seed():
    # Seed 0's differences are all 0, seed 1's all 1. Drawing 2 seeds with replacement gives a mean of 0, 0.5 or 1
    # with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5% quantiles are 0 and 1. Resampling batches within the
    # seeds alone (the old interval) sees no spread at all: [0.5, 0.5].
    diffs = [np.zeros(30), np.ones(30)]
    assert block_bootstrap_ci(diffs, n_boot=4000, seed=2) == pytest.approx((0.0, 1.0))
    assert old_block_bootstrap_ci(diffs, n_boot=4000, seed=2) == pytest.approx((0.5, 0.5))
    # Three seeds at 0, 0, 3: the mean is the number of draws of the third seed, Binomial(3, 1/3):
    # P(0) = 8/27 = 0.30 > 0.025 and P(3) = 1/27 = 0.037 > 0.025, so the interval is [0, 3].
    assert block_bootstrap_ci([np.zeros(20), np.zeros(20), np.full(20, 3.0)], n_boot=4000) == pytest.approx((0, 3))
    # Four seeds at 0, 0, 0, 4: the mean is the number of draws of the last seed, Binomial(4, 1/4): P(≤ 2) = 243/256
    # = 0.949 and P(≤ 3) = 255/256 = 0.996, so the 97.5% quantile is 3 draws, a mean of 3 (not 4: every replicate
    # averages four drawn seeds).
    four = [np.zeros(20), np.zeros(20), np.zeros(20), np.full(20, 4.0)]
    assert block_bootstrap_ci(four, n_boot=4000) == pytest.approx((0, 3))


def test_a_seeds_difference_is_its_interaction_weighted_mean():
    # One block as long as the series: every replicate is the seed's weighted mean, (0·3 + 1·1) / 4 = 0.25,
    # where the unweighted mean would be 0.5.
    assert block_bootstrap_ci([np.array([0.0, 1.0])], [np.array([3.0, 1.0])], block=2, n_boot=50) == pytest.approx(
        (0.25, 0.25)
    )
    # A batch without interactions weighs nothing.
    assert block_bootstrap_ci([np.array([0.2, 9.0])], [np.array([1.0, 0.0])], n_boot=50) == pytest.approx((0.2, 0.2))


def test_block_bootstrap_is_seeded_and_reproducible():
    rng = np.random.Generator(np.random.PCG64(7))
    diffs = [rng.normal(0.02, 0.05, size=40), rng.normal(0.02, 0.05, size=37)]
    first = block_bootstrap_ci(diffs, seed=3, n_boot=500)
    assert block_bootstrap_ci(diffs, seed=3, n_boot=500) == first
    assert block_bootstrap_ci(diffs, seed=4, n_boot=500) != first
    pooled = np.concatenate(diffs).mean()
    assert first[0] < pooled < first[1]


def test_block_bootstrap_degenerate_cases_have_known_answers():
    # One block as long as the series: every replicate is the series itself, so the interval is its mean.
    series = np.array([0.1, 0.3, 0.2, 0.6])
    assert block_bootstrap_ci([series], block=4, n_boot=50) == pytest.approx((0.3, 0.3))
    # A constant difference resamples to itself whatever the blocks.
    assert block_bootstrap_ci([np.full(10, 0.05)], n_boot=50) == pytest.approx((0.05, 0.05))
    assert all(math.isnan(v) for v in block_bootstrap_ci([np.array([])]))


def test_block_bootstrap_width_follows_the_spread():
    # Blocks of 1 on ±1 alternating values: each replicate mean is (#(+1) − #(−1)) / 40 with 40 fair coin flips,
    # standard deviation 1/√40 = 0.158, so the 95% interval is about ±0.31 (±1.96 sd), well inside ±0.5.
    series = np.tile([1.0, -1.0], 20)
    lo, hi = block_bootstrap_ci([series], block=1, n_boot=4000, seed=1)
    assert -0.4 < lo < -0.2 and 0.2 < hi < 0.4
