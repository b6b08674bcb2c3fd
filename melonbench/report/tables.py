"""The descriptive tables: accuracy (Table 2), ablation (Table 3), time per batch (Table 4), protocol agreement.

Each builder takes the loaded runs (and the failed ones) and returns a :class:`~melonbench.report.model.Table`. A
cell's value is the mean over seeds of each run's interaction-weighted mean over its reported split, ± the standard
error over seeds. A cell that stands on fewer seeds than its setting's (every seed with a finished or failed run)
says how many, ``(k/n)``; a cell whose every run failed says ``failed``; :func:`failed_runs` lists each failure.
A reference recommender without learning (``pop``, ``recent-pop``) is one row, shown beside the strategies of every
learned model of its setting.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from melonbench.models import MODELS
from melonbench.report.cells import (
    failed_cells,
    group,
    labels_of,
    metric_ks,
    models_of,
    seed_stat,
    seeds_asked,
    settings_of,
)
from melonbench.report.model import (
    ABLATION,
    FAILED_NOTE,
    RANKINGS,
    SEEDS_NOTE,
    Cell,
    Table,
    fmt_mean_se,
    fmt_seconds,
    fmt_seeds,
    incompatibility,
    mark_best,
    model_label,
    strategy_label,
    strategy_order,
)
from melonbench.report.runs import Failure, Run
from melonbench.report.stats import kendall_tau

ACCURACY_GROUPS = {"": "all interactions", "warm_item": "warm-item interactions"}


def accuracy(runs: list[Run], ranking: str, failures: Sequence[Failure] = (), interactions: str = "") -> Table:
    """Table 2: rows = setting × strategy (references last), columns = model × {HR, NDCG} × k; best bold, second
    underlined among every row of a setting.

    Parameters
    ----------
    interactions : {"", "warm_item"}
        ``""``: over all interactions (the headline); ``warm_item``: over the interactions whose positive item
        occurred before its batch (columns ``{metric}_warm_item``, weighted by ``n_warm_item``).
    """
    units = [*runs, *failures]
    cells, labels, models = group(runs, failures), labels_of(units), models_of(units)
    failed, asked = failed_cells(failures, runs), seeds_asked(units)
    ks = metric_ks(runs, ranking)
    metrics = [(m, k) for m in ("hr", "ndcg") for k in ks]
    suffix = f"_{interactions}" if interactions else ""
    rows: list[tuple[Cell, ...]] = []
    na_notes: set[str] = set()
    missing = short = all_failed = False
    references = ", ".join(sorted({r.label for r in units if r.reference}))
    for setting in settings_of(units):
        names = strategy_order({s for (st, _, s) in {*cells, *failed} if st == setting})
        columns: list[list[Cell]] = []
        for model in models:
            for m, k in metrics:
                col = f"{ranking}_{m}@{k}{suffix}"
                stats = [
                    seed_stat(cells[(setting, model, s)], col) if (setting, model, s) in cells else None for s in names
                ]
                marks = mark_best([st[0] if st else math.nan for st in stats])
                column = []
                for name, st, mark in zip(names, stats, marks, strict=True):
                    why = incompatibility(name, model)
                    if st is None and why:
                        na_notes.add(why)
                    lost = st is None and (setting, model, name) in failed
                    missing |= st is None and not why and not lost
                    all_failed |= lost
                    if st:
                        k = len(cells[(setting, model, name)])
                        short |= k < asked[setting]
                        column.append(Cell(fmt_mean_se(*st) + fmt_seeds(k, asked[setting]), mark))
                    else:
                        column.append(Cell("failed" if lost else "N/A" if why else "–"))
                columns.append(column)
        for i, name in enumerate(names):
            rows.append((Cell(setting if i == 0 else ""), Cell(labels[name]), *(c[i] for c in columns)))
    header = tuple(f"{m.upper() if m == 'hr' else 'NDCG'}@{k}" for m, k in metrics) * len(models)
    over = "each run's mean over its test batches (interaction-weighted)"
    if interactions:
        over = (
            "each run's mean over the test interactions whose positive item occurred before its batch (in the "
            "pre-training part or an earlier online batch; weighted by their number per batch)"
        )
    notes = (
        f"Mean over seeds of {over} ± standard error over seeds.",
        "Best in bold, second underlined, per dataset and column among every row shown: reference rows and "
        "MeLON's ablation variants included.",
        *(
            (
                f"{references}: references without learning, scoring an item by its number of interactions so far "
                "(Pop) or among the last W (Recent-pop); ties count against the positive, so an item without "
                "interactions ranks below every other (docs/protocol.md).",
            )
            if references
            else ()
        ),
        *(_group_sizes(runs) if interactions else ()),
        *(f"N/A: {why}." for why in sorted(na_notes)),
        *(("–: no finished runs.",) if missing else ()),
        *((SEEDS_NOTE,) if short else ()),
        *((FAILED_NOTE,) if all_failed else ()),
    )
    headline = " (headline)" if not interactions else ""
    return Table(
        key=f"accuracy-{ranking}" + (f"-{interactions.replace('_', '-')}" if interactions else ""),
        title=f"Accuracy, {RANKINGS[ranking]}, {ACCURACY_GROUPS[interactions]}{headline}",
        columns=("Dataset", "Strategy", *header),
        groups=(("", 2), *((model_label(m), len(metrics)) for m in models)),
        rows=tuple(rows),
        notes=notes,
    )


def _group_sizes(runs: list[Run]) -> tuple[str, ...]:
    """How many test interactions each setting's warm-item table covers (the same for every run of a stream)."""
    out = []
    for setting in settings_of(runs):
        part = next(r for r in runs if r.setting == setting).reported()
        warm, total = int(part["n_warm_item"].sum()), int(part["n"].sum())
        share = f" ({100 * warm / total:.1f} %)" if total else ""
        out.append(f"{setting}: {warm:,} of {total:,} test interactions are warm-item{share}.")
    return tuple(out)


def has_groups(runs: list[Run]) -> bool:
    """Whether every run stores the warm/cold columns (runs made before they existed do not)."""
    return all("n_warm_item" in r.batches.columns for r in runs)


def ablation(runs: list[Run], ranking: str, failures: Sequence[Failure] = ()) -> Table | None:
    """Table 3: HR@5 of MeLON's one-directional variants and MeLON itself; None when none of them was run."""
    units = [*runs, *failures]
    cells, failed, asked = group(runs, failures), failed_cells(failures, runs), seeds_asked(units)
    present = [s for s in ABLATION if any(k[2] == s for k in {*cells, *failed})]
    if not present:
        return None
    labels = {s: strategy_label(s, labels_of(units).get(s)) for s in ABLATION}
    rows = []
    notes = set()
    for setting in settings_of(units):
        for model in models_of(units):
            if not any((setting, model, s) in {*cells, *failed} for s in ABLATION):
                continue
            stats = [
                seed_stat(cells[(setting, model, s)], f"{ranking}_hr@5")
                if (setting, model, s) in cells
                else (math.nan, math.nan)
                for s in ABLATION
            ]
            marks = mark_best([m for m, _ in stats])
            row = [Cell(setting), Cell(model_label(model))]
            for s, st, mk in zip(ABLATION, stats, marks, strict=True):
                k = len(cells.get((setting, model, s), ()))
                if k:
                    row.append(Cell(fmt_mean_se(*st) + fmt_seeds(k, asked[setting]), mk))
                    notes |= {SEEDS_NOTE} if k < asked[setting] else set()
                elif (setting, model, s) in failed:
                    row.append(Cell("failed"))
                    notes.add(FAILED_NOTE)
                else:
                    row.append(Cell("–"))
            rows.append(tuple(row))
    return Table(
        key=f"ablation-{ranking}",
        title=f"Ablation, HR@5, {RANKINGS[ranking]}",
        columns=("Dataset", "Model", *(labels[s] for s in ABLATION)),
        rows=tuple(rows),
        notes=(
            f"{labels['melon-i']}: interaction-wise rates only; {labels['melon-p']}: parameter-wise rates only. "
            "Mean ± standard error over seeds; best in bold.",
            *(n for n in (SEEDS_NOTE, FAILED_NOTE) if n in notes),
        ),
    )


def timing(runs: list[Run], failures: Sequence[Failure] = ()) -> tuple[Table, list[str]]:
    """Table 4: seconds per online batch (update median and 95th percentile, evaluation median) per model."""
    units = [*runs, *failures]
    cells, labels, models = group(runs, failures), labels_of(units), models_of(units)
    failed, asked = failed_cells(failures, runs), seeds_asked(units)
    rows, warnings, notes = [], [], set()
    for setting in settings_of(units):
        names = strategy_order({s for (st, _, s) in {*cells, *failed} if st == setting})
        for i, name in enumerate(names):
            row = [Cell(setting if i == 0 else ""), Cell(labels[name])]
            for model in models:
                cell = cells.get((setting, model, name))
                if not cell:
                    lost = (setting, model, name) in failed
                    notes |= {FAILED_NOTE} if lost else set()
                    row += [Cell("failed" if lost else "N/A" if incompatibility(name, model) else "–")] * 3
                    continue
                update = np.concatenate([r.timed()["update_s"].to_numpy() for r in cell])
                evals = np.concatenate([r.timed()["eval_s"].to_numpy() for r in cell])
                seeds = fmt_seeds(len(cell), asked[setting])
                notes |= {SEEDS_NOTE} if seeds else set()
                row += [
                    Cell(fmt_seconds(float(np.median(update))) + seeds),
                    Cell(fmt_seconds(float(np.percentile(update, 95))) + seeds),
                    Cell(fmt_seconds(float(np.median(evals))) + seeds),
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
            *(n for n in (SEEDS_NOTE, FAILED_NOTE) if n in notes),
        ),
    )
    return table, warnings


def agreement(
    runs: list[Run], metrics: tuple[str, ...] = ("hr@5", "ndcg@10"), failures: Sequence[Failure] = ()
) -> tuple[Table | None, list[str]]:
    """Do full and sampled ranking order the strategies the same way? Kendall τ-b of the two orderings.

    Returns the table (None when no setting × model has two strategies) and one warning per disagreement. A
    strategy that stands on fewer seeds than its setting's is labelled with its count, e.g. ``MeLON (4/5)``.
    """
    cells, asked, plain = group(runs, failures), seeds_asked([*runs, *failures]), labels_of(runs)
    rows, warnings, short = [], [], False
    for setting in settings_of(runs):
        for model in models_of(runs):
            names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
            if len(names) < 2:
                continue
            counts = {name: len(cells[(setting, model, name)]) for name in names}
            labels = {name: plain[name] + fmt_seeds(counts[name], asked[setting]) for name in names}
            short |= min(counts.values()) < asked[setting]
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
        wrap=(3, 4),  # each a whole order of strategies: wider than a page in one line
        notes=(
            "Orders by mean over seeds, best first; Kendall τ-b between the two sets of means (1 = same order). "
            "Sampled metrics need not preserve the order of full ranking (Krichene & Rendle, KDD 2020).",
            *((SEEDS_NOTE,) if short else ()),
        ),
    )
    return table, warnings


def failed_runs(failures: Sequence[Failure]) -> Table | None:
    """One row per failed run: where and why it failed (``diverged at batch 7``); None when nothing failed."""
    if not failures:
        return None
    order = {name: i for i, name in enumerate(strategy_order({f.strategy for f in failures}))}
    known = list(MODELS)
    rows = tuple(
        (
            Cell(f.setting),
            Cell(model_label(f.model)),
            Cell(strategy_label(f.strategy, f.label)),
            Cell(str(f.seed)),
            Cell(f.what()),
        )
        for f in sorted(
            failures,
            key=lambda f: (
                f.setting,
                known.index(f.model) if f.model in known else len(known),
                order[f.strategy],
                f.seed,
            ),
        )
    )
    return Table(
        key="failures",
        title="Failed runs",
        columns=("Dataset", "Model", "Strategy", "Seed", "What happened"),
        rows=rows,
        label_columns=5,
        notes=("A failed run counts in no mean; the failure.json in its folder keeps the reason and the traceback.",),
    )


def _order(names: list[str], values: list[float], labels: dict[str, str]) -> str:
    ranked = sorted(zip(values, names, strict=True), key=lambda vn: (-vn[0], names.index(vn[1])))
    out = labels[ranked[0][1]]
    for (prev, _), (value, name) in itertools.pairwise(ranked):
        out += (" = " if value == prev else " > ") + labels[name]
    return out


def _metric_label(metric: str) -> str:
    m, k = metric.split("@")
    return f"{'HR' if m == 'hr' else 'NDCG'}@{k}"
