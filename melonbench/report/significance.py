"""Table 6: is a strategy's difference from Default (and MeLON's from every other strategy) real?

Every comparison is tested two ways, both labelled in the table: a paired t-test over batches (the paper's
style; pairs within a seed, pooled over seeds; batches are autocorrelated, so it is optimistic) and a paired
t-test over seeds (run means). The moving-block bootstrap interval of the mean per-batch difference accounts for
the autocorrelation. Holm's correction is applied across the whole table, separately for each unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from melonbench.report.model import RANKINGS, Cell, Table, fmt_p, model_label
from melonbench.report.runs import Failure, Run, aligned
from melonbench.report.stats import block_bootstrap_ci, block_length, holm, paired_ttest
from melonbench.report.tables import group, labels_of, models_of, seeds_asked, settings_of, strategy_order

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
            names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
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
                    xa = np.concatenate([sa[col] for sa, _ in series])
                    xb = np.concatenate([sb[col] for _, sb in series])
                    per_batch = paired_ttest(xa, xb)
                    per_seed = paired_ttest([ra.mean(col) for ra, _ in pairs], [rb.mean(col) for _, rb in pairs])
                    ci = block_bootstrap_ci(
                        [sa[col] - sb[col] for sa, sb in series], seed=bootstrap_seed, n_boot=n_boot
                    )
                    result[metric] = (per_batch, per_seed, ci)
                lines.append((setting, model, a, b, len(pairs), len(xa), result))
    if not lines:
        return None
    adj_batch = iter(holm([ln[6][m][0].pvalue for ln in lines for m in METRICS]))
    adj_seed = iter(holm([ln[6][m][1].pvalue for ln in lines for m in METRICS]))
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
            per_batch, _, (lo, hi) = result[metric]
            ci = "n/a" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
            row += [
                Cell(f"{per_batch.mean_diff:+.4f}"),
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
            "Δ: mean per-batch difference (first − second) over every paired test batch of every seed.",
            "p (batch): paired t-test over batches, pairs within a seed, pooled over seeds (the paper's unit; "
            "consecutive batches are autocorrelated, so this p-value is optimistic).",
            "p (seed): paired t-test over seeds of each run's mean (n = seeds).",
            *(
                ("Seeds k/n: both runs finished on k of the n seeds (the others failed or are missing).",)
                if any(line[4] < asked[line[0]] for line in lines)
                else ()
            ),
            "n/a: fewer than two pairs, or differences without variation (the t statistic is undefined).",
            "Both p columns are Holm-adjusted across this table (one family per unit: every comparison × metric).",
            f"95% CI: moving-block bootstrap of the mean per-batch difference, blocks of {block_text} consecutive "
            f"batches resampled within each seed, {n_boot} replicates, seed {bootstrap_seed}.",
        ),
    )
