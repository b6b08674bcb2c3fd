"""Table 6: is a strategy's difference from Default (and MeLON's from every other strategy) real?

Every number of a comparison refers to one definition of a run's mean, the interaction-weighted mean over its test
batches (as in the accuracy table): Δ is the difference of the two strategies' run means, averaged over seeds.
It is tested two ways, both labelled in the table: a paired t-test over batches (the paper's style; pairs within a
seed, weighted by interactions, pooled over seeds; batches are autocorrelated, so it is optimistic) and a paired
t-test over seeds (run means). The interval is a two-stage bootstrap of Δ (seeds, then blocks of batches within each
drawn seed), so it holds the seed-to-seed spread too. Holm's correction is applied across the whole table,
separately for each unit. Reference rows (pop, recent-pop) are not compared: they share no checkpoint to pair on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from melonbench.report.cells import group, labels_of, models_of, seeds_asked, settings_of
from melonbench.report.model import RANKINGS, Cell, Table, fmt_p, model_label, strategy_order
from melonbench.report.runs import Failure, Run, aligned
from melonbench.report.stats import block_length, holm, paired_ttest, seed_block_bootstrap_ci, weighted_ttest

METRICS = ("hr@5", "ndcg@5")


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """Every strategy vs Default, then MeLON vs every strategy other than Default (``(a, b)`` tests a − b)."""
    pairs = [(s, "default") for s in names if s != "default"] if "default" in names else []
    if "melon" in names:
        pairs += [("melon", s) for s in names if s not in ("default", "melon")]
    return pairs


def significance(
    runs: list[Run], ranking: str, bootstrap_seed: int = 0, n_boot: int = 2000, failures: Sequence[Failure] = ()
) -> Table | None:
    """Build the significance table for ``ranking`` (``sampled`` or ``full``); None when nothing is compared.

    The *Seeds* column reads ``k/n`` when only ``k`` of the setting's ``n`` seeds have both runs finished.

    Raises
    ------
    melonbench.report.runs.PairingError
        When two runs of the same setting, model and seed cannot be paired (see :func:`aligned`).
    """
    cells, labels, asked = group(runs), labels_of(runs), seeds_asked([*runs, *failures])
    lines = []  # (setting, model, a, b, n_seeds, n_batches, {metric: (ttest_batch, ttest_seed, ci)})
    blocks = set()
    for setting in settings_of(runs):
        for model in models_of(runs):
            names = strategy_order(
                {s for (st, mo, s) in cells if st == setting and mo == model and not cells[(st, mo, s)][0].reference}
            )
            for a, b in comparisons(names):
                by_seed_b = {r.seed: r for r in cells[(setting, model, b)]}
                pairs = [(ra, by_seed_b[ra.seed]) for ra in cells[(setting, model, a)] if ra.seed in by_seed_b]
                if not pairs:
                    continue
                cols = [f"{ranking}_{m}" for m in METRICS]
                series = [aligned(ra, rb, cols) for ra, rb in pairs]
                blocks.add(block_length(min(len(sa[cols[0]]) for sa, _ in series)))
                result = {}
                for metric, col in zip(METRICS, cols, strict=True):
                    diffs = [sa[col] - sb[col] for sa, sb in series]
                    # aligned() checked that both runs have the same batches, hence the same interactions per batch
                    weights = [ra.weights(col) for ra, _ in pairs]
                    per_seed = paired_ttest([ra.mean(col) for ra, _ in pairs], [rb.mean(col) for _, rb in pairs])
                    # each seed's batches weigh n_b / N_seed: every seed counts once, so the mean is Δ
                    per_batch = weighted_ttest(np.concatenate(diffs), np.concatenate([w / w.sum() for w in weights]))
                    ci = seed_block_bootstrap_ci(diffs, weights, seed=bootstrap_seed, n_boot=n_boot)
                    result[metric] = (per_seed.mean_diff, per_batch, per_seed, ci)
                lines.append((setting, model, a, b, len(pairs), sum(len(d) for d in diffs), result))
    if not lines:
        return None
    adj_batch = iter(holm([ln[6][m][1].pvalue for ln in lines for m in METRICS]))
    adj_seed = iter(holm([ln[6][m][2].pvalue for ln in lines for m in METRICS]))
    rows = []
    for setting, model, a, b, n_seeds, n_batches, result in lines:
        row = [
            Cell(setting),
            Cell(model_label(model)),
            Cell(f"{labels[a]} vs {labels[b]}"),
            Cell(str(n_seeds) if n_seeds >= asked[setting] else f"{n_seeds}/{asked[setting]}"),
            Cell(str(n_batches)),
        ]
        for metric in METRICS:
            delta, _, _, (lo, hi) = result[metric]
            ci = "n/a" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
            row += [
                Cell(f"{delta:+.4f}"),
                Cell(fmt_p(next(adj_batch))),
                Cell(fmt_p(next(adj_seed))),
                Cell(ci),
            ]
        rows.append(tuple(row))
    block_text = ", ".join(str(b) for b in sorted(blocks))
    return Table(
        key=f"significance-{ranking}",
        title=f"Paired tests, {RANKINGS[ranking]}",
        columns=(
            "Dataset",
            "Model",
            "Comparison",
            "Seeds",
            "Batches",
            *(("Δ", "p (batch)", "p (seed)", "95% CI") * len(METRICS)),
        ),
        groups=(("", 5), *((m.upper(), 4) for m in METRICS)),
        rows=tuple(rows),
        label_columns=3,
        notes=(
            "A run's mean is its interaction-weighted mean over its test batches (as in the accuracy table); Δ, both "
            "tests and the interval all refer to it.",
            "Δ: first − second, the difference of the two run means averaged over seeds.",
            "p (batch): paired t-test over batches, weighted by interactions (each seed's batches together weigh as "
            "much as one seed, so its mean is Δ), pooled over seeds (the paper's unit; consecutive batches are "
            "autocorrelated, so this p-value is optimistic).",
            "p (seed): paired t-test over seeds of each run's mean (n = seeds).",
            *(
                ("Seeds k/n: both runs finished on k of the n seeds (the others failed or are missing).",)
                if any(line[4] < asked[line[0]] for line in lines)
                else ()
            ),
            "n/a: fewer than two pairs, or differences without variation (the t statistic is undefined).",
            "Both p columns are Holm-adjusted across this table (one family per unit: every comparison × metric).",
            f"95% CI: two-stage bootstrap of Δ: seeds drawn with replacement, then within each drawn seed blocks of "
            f"{block_text} consecutive batches; {n_boot} replicates, seed {bootstrap_seed}. It includes the "
            "seed-to-seed spread (with one seed: that seed's block bootstrap).",
        ),
    )
