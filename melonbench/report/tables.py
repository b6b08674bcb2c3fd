"""The descriptive tables: accuracy (Table 2), ablation (Table 3), time per batch (Table 4), protocol agreement.

Each builder takes the loaded runs and returns a :class:`~melonbench.report.model.Table`. A cell's value is the
mean over seeds of each run's interaction-weighted mean over its reported split, ± the standard error over seeds.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

from melonbench.models import MODELS
from melonbench.report.model import (
    ABLATION,
    RANKINGS,
    Cell,
    Table,
    fmt_mean_se,
    fmt_seconds,
    incompatibility,
    mark_best,
    model_label,
    strategy_label,
    strategy_order,
)
from melonbench.report.runs import Run
from melonbench.report.stats import kendall_tau, mean_se

Cells = dict[tuple[str, str, str], list[Run]]


def group(runs: list[Run]) -> Cells:
    """Runs by (setting, model, strategy), each list sorted by seed."""
    out: Cells = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.seed):
        out[(run.setting, run.model, run.strategy)].append(run)
    return dict(out)


def settings_of(runs: list[Run]) -> list[str]:
    return sorted({r.setting for r in runs})


def models_of(runs: list[Run]) -> list[str]:
    known = list(MODELS)
    return sorted({r.model for r in runs}, key=lambda m: (known.index(m) if m in known else len(known), m))


def labels_of(runs: list[Run]) -> dict[str, str]:
    """Display label per strategy: the registry's, else the one stored in the run's manifest."""
    return {r.strategy: strategy_label(r.strategy, r.label) for r in runs}


def metric_ks(runs: list[Run], ranking: str) -> list[int]:
    """The cut-offs every run has for ``ranking`` (5, 10, 20 unless runs were made with other ``--k``)."""
    common = None
    for run in runs:
        ks = {int(c.split("@")[1]) for c in run.batches.columns if c.startswith(f"{ranking}_hr@")}
        common = ks if common is None else common & ks
    return sorted(common or ())


def seed_stat(cell: list[Run], column: str) -> tuple[float, float]:
    return mean_se([r.mean(column) for r in cell])


def accuracy(runs: list[Run], ranking: str) -> Table:
    """Table 2: rows = setting × strategy, columns = model × {HR, NDCG} × k; best bold, second underlined."""
    cells, labels, models = group(runs), labels_of(runs), models_of(runs)
    ks = metric_ks(runs, ranking)
    metrics = [(m, k) for m in ("hr", "ndcg") for k in ks]
    rows: list[tuple[Cell, ...]] = []
    na_notes: set[str] = set()
    missing = False
    for setting in settings_of(runs):
        names = strategy_order({s for (st, _, s) in cells if st == setting and s not in ABLATION[:2]})
        columns: list[list[Cell]] = []
        for model in models:
            for m, k in metrics:
                col = f"{ranking}_{m}@{k}"
                stats = [
                    seed_stat(cells[(setting, model, s)], col) if (setting, model, s) in cells else None for s in names
                ]
                marks = mark_best([st[0] if st else math.nan for st in stats])
                column = []
                for name, st, mark in zip(names, stats, marks, strict=True):
                    why = incompatibility(name, model)
                    if st is None and why:
                        na_notes.add(why)
                    missing |= st is None and not why
                    column.append(Cell(fmt_mean_se(*st), mark) if st else Cell("N/A" if why else "–"))
                columns.append(column)
        for i, name in enumerate(names):
            rows.append((Cell(setting if i == 0 else ""), Cell(labels[name]), *(c[i] for c in columns)))
    header = tuple(f"{m.upper() if m == 'hr' else 'NDCG'}@{k}" for m, k in metrics) * len(models)
    notes = (
        "Mean over seeds of each run's mean over its test batches (interaction-weighted) ± standard error over "
        "seeds; best in bold, second underlined (per dataset and column).",
        *(f"N/A: {why}." for why in sorted(na_notes)),
        *(("–: no finished runs.",) if missing else ()),
    )
    return Table(
        key=f"accuracy-{ranking}",
        title=f"Accuracy, {RANKINGS[ranking]}",
        columns=("Dataset", "Strategy", *header),
        groups=(("", 2), *((model_label(m), len(metrics)) for m in models)),
        rows=tuple(rows),
        notes=notes,
    )


def ablation(runs: list[Run], ranking: str) -> Table | None:
    """Table 3: HR@5 of MeLON's one-directional variants and MeLON itself; None when none of them was run."""
    cells = group(runs)
    present = [s for s in ABLATION if any(k[2] == s for k in cells)]
    if not present:
        return None
    labels = {s: strategy_label(s, labels_of(runs).get(s)) for s in ABLATION}
    rows = []
    for setting in settings_of(runs):
        for model in models_of(runs):
            if not any((setting, model, s) in cells for s in ABLATION):
                continue
            stats = [
                seed_stat(cells[(setting, model, s)], f"{ranking}_hr@5")
                if (setting, model, s) in cells
                else (math.nan, math.nan)
                for s in ABLATION
            ]
            marks = mark_best([m for m, _ in stats])
            rows.append(
                (
                    Cell(setting),
                    Cell(model_label(model)),
                    *(Cell(fmt_mean_se(*st), mk) for st, mk in zip(stats, marks, strict=True)),
                )
            )
    return Table(
        key=f"ablation-{ranking}",
        title=f"Ablation, HR@5, {RANKINGS[ranking]}",
        columns=("Dataset", "Model", *(labels[s] for s in ABLATION)),
        rows=tuple(rows),
        notes=(
            f"{labels['melon-i']}: interaction-wise rates only; {labels['melon-p']}: parameter-wise rates only. "
            "Mean ± standard error over seeds; best in bold.",
        ),
    )


def timing(runs: list[Run]) -> tuple[Table, list[str]]:
    """Table 4: seconds per online batch (update median and 95th percentile, evaluation median) per model."""
    cells, labels, models = group(runs), labels_of(runs), models_of(runs)
    rows, warnings = [], []
    for setting in settings_of(runs):
        names = strategy_order({s for (st, _, s) in cells if st == setting})
        for i, name in enumerate(names):
            row = [Cell(setting if i == 0 else ""), Cell(labels[name])]
            for model in models:
                cell = cells.get((setting, model, name))
                if not cell:
                    row += [Cell("N/A" if incompatibility(name, model) else "–")] * 3
                    continue
                update = np.concatenate([r.timed()["update_s"].to_numpy() for r in cell])
                evals = np.concatenate([r.timed()["eval_s"].to_numpy() for r in cell])
                row += [
                    Cell(fmt_seconds(float(np.median(update)))),
                    Cell(fmt_seconds(float(np.percentile(update, 95)))),
                    Cell(fmt_seconds(float(np.median(evals)))),
                ]
            rows.append(tuple(row))
        for model in models:
            devices = {r.device for r in runs if r.setting == setting and r.model == model}
            if len(devices) > 1:
                warnings.append(
                    f"timing of {setting}/{model_label(model)} mixes devices "
                    f"({', '.join(sorted(devices))}): its seconds are not comparable"
                )
    devices = sorted({r.device for r in runs})
    table = Table(
        key="timing",
        title="Seconds per online batch",
        columns=("Dataset", "Strategy", *(("update median", "update p95", "eval median") * len(models))),
        groups=(("", 2), *((model_label(m), 3) for m in models)),
        rows=tuple(rows),
        notes=(
            f"Device: {'; '.join(devices)}.",
            "Pooled over every replayed batch (validation and test) of every seed, timing warm-up batches excluded; "
            "update = training negatives + the strategy's step; eval = ranking under both protocols.",
        ),
    )
    return table, warnings


def agreement(runs: list[Run], metrics: tuple[str, ...] = ("hr@5", "ndcg@10")) -> tuple[Table | None, list[str]]:
    """Do full and sampled ranking order the strategies the same way? Kendall τ-b of the two orderings.

    Returns the table (None when no setting × model has two strategies) and one warning per disagreement.
    """
    cells, labels = group(runs), labels_of(runs)
    rows, warnings = [], []
    for setting in settings_of(runs):
        for model in models_of(runs):
            names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
            if len(names) < 2:
                continue
            for metric in metrics:
                sampled = [seed_stat(cells[(setting, model, s)], f"sampled_{metric}")[0] for s in names]
                full = [seed_stat(cells[(setting, model, s)], f"full_{metric}")[0] for s in names]
                tau = kendall_tau(sampled, full)
                order_s, order_f = _order(names, sampled, labels), _order(names, full, labels)
                rows.append(
                    (
                        Cell(setting),
                        Cell(model_label(model)),
                        Cell(_metric_label(metric)),
                        Cell(order_s),
                        Cell(order_f),
                        Cell("n/a" if math.isnan(tau) else f"{tau:+.2f}"),
                    )
                )
                if order_s != order_f:
                    tau_text = "n/a" if math.isnan(tau) else f"{tau:+.2f}"
                    warnings.append(
                        f"{setting}/{model_label(model)}: full and sampled ranking order the strategies "
                        f"differently on {_metric_label(metric)} (Kendall τ = {tau_text}): "
                        f"full {order_f}; sampled {order_s}"
                    )
    if not rows:
        return None, []
    table = Table(
        key="agreement",
        title="Protocol agreement: strategy order under sampled vs full ranking",
        columns=("Dataset", "Model", "Metric", "Sampled order", "Full order", "Kendall τ"),
        rows=tuple(rows),
        label_columns=5,
        notes=(
            "Orders by mean over seeds, best first; Kendall τ-b between the two sets of means (1 = same order). "
            "Sampled metrics need not preserve the order of full ranking (Krichene & Rendle, KDD 2020).",
        ),
    )
    return table, warnings


def _order(names: list[str], values: list[float], labels: dict[str, str]) -> str:
    ranked = sorted(zip(values, names, strict=True), key=lambda vn: (-vn[0], names.index(vn[1])))
    out = labels[ranked[0][1]]
    for (prev, _), (value, name) in itertools.pairwise(ranked):
        out += (" = " if value == prev else " > ") + labels[name]
    return out


def _metric_label(metric: str) -> str:
    m, k = metric.split("@")
    return f"{'HR' if m == 'hr' else 'NDCG'}@{k}"
