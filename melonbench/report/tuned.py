"""The tuned-settings table: what ``melonbench tune`` chose for each tuned row, and tuned beside published.

Tuned runs form their own setting (``grocery [tuned]``) in every table, so a strategy tuned on validation is
compared with the others tuned the same way. This table lists, per tuned (setting, model, strategy), the chosen
values and how they were chosen, the validation objective of the default and the chosen settings, and the test
HR@5 of the published (default) settings beside the tuned ones wherever the store holds both.
"""

from __future__ import annotations

import math

from melonbench.report.cells import group, labels_of, models_of, seed_stat, settings_of
from melonbench.report.model import RANKINGS, Cell, Table, fmt_mean_se, model_label, strategy_order
from melonbench.report.runs import Run, setting_label
from melonbench.strategies.space import describe


def tuned_settings(runs: list[Run], rankings: tuple[str, ...]) -> Table | None:
    """One row per tuned (setting, model, strategy); None when no strategy run is tuned.

    The references without learning (``pop``, ``recent-pop``) have nothing to tune and no row here.
    """
    tuned = [r for r in runs if r.tuned is not None and not r.reference]
    if not tuned:
        return None
    cells, labels = group(runs), labels_of(runs)
    rows = []
    for setting in settings_of(tuned):
        for model in models_of(tuned):
            names = strategy_order({r.strategy for r in tuned if r.setting == setting and r.model == model})
            for name in names:
                cell = cells[(setting, model, name)]
                first = cell[0]
                published = cells.get((_published(first), model, name))
                row = [
                    Cell(setting),
                    Cell(model_label(model)),
                    Cell(labels[name]),
                    Cell(" / ".join(sorted({describe(r.tuned or {}) for r in cell}))),
                    Cell(_how(first)),
                    Cell(_validation(first)),
                ]
                for ranking in rankings:
                    column = f"{ranking}_hr@5"
                    row.append(Cell(fmt_mean_se(*seed_stat(published, column)) if published else "–"))
                    row.append(Cell(fmt_mean_se(*seed_stat(cell, column))))
                rows.append(tuple(row))
    return Table(
        key="tuned",
        title="Tuned settings: chosen on validation HR@5, with the published settings beside them",
        columns=(
            "Dataset",
            "Model",
            "Strategy",
            "Tuned settings",
            "Tuning",
            "Validation HR@5, default → tuned",
            *(("published", "tuned") * len(rankings)),
        ),
        groups=(("", 6), *((f"test HR@5, {ranking} ranking", 2) for ranking in rankings)),
        rows=tuple(rows),
        label_columns=6,
        notes=(
            "Tuned settings: chosen by `melonbench tune` on the validation part only (mean HR@5 over its seeds; a "
            "tie goes to the smaller change from the default); each tuned row's other settings are the defaults.",
            "Tuning: trials budget, seeds and the objective's ranking. Published: the same strategy with its default "
            "(published) settings, from the same store; –: not in the store.",
            *(f"{ranking}: {RANKINGS[ranking]}." for ranking in rankings),
        ),
    )


def _published(run: Run) -> str:
    return setting_label(run.dataset, run.manifest["config"]["protocol"], run.split)


def _how(run: Run) -> str:
    tuning = run.manifest.get("tuning") or {}
    if "budget" not in tuning:
        return "nothing to tune" if not run.tuned else "–"
    return f"budget {tuning['budget']}, {tuning['seeds']} seeds, {tuning['ranking']}"


def _validation(run: Run) -> str:
    tuning = run.manifest.get("tuning") or {}
    default, chosen = tuning.get("default_validation_score"), tuning.get("validation_score")
    if chosen is None or math.isnan(chosen):
        return "–"
    return f"{'diverged' if default is None else f'{default:.4f}'} → {chosen:.4f}"
