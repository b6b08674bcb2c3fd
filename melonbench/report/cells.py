"""Runs filed into table cells: one cell per (setting, model, row), the seeds it stands on, and its statistic.

Every table, the plots and the paired tests read stored runs through these helpers, so that a reference recommender
(``pop``, ``recent-pop``) stands beside the strategies of every learned model of its setting everywhere, and a cell
counts its seeds the same way in each of them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from melonbench.models import MODELS
from melonbench.report.model import strategy_label
from melonbench.report.runs import Failure, Run
from melonbench.report.stats import mean_se

Cells = dict[tuple[str, str, str], list[Run]]
Units = Sequence[Run | Failure]


def learned_models(units: Units) -> dict[str, list[str]]:
    """Per setting, its learned models (the column groups a reference row stands under)."""
    out: dict[str, set[str]] = defaultdict(set)
    for unit in units:
        if not unit.reference:
            out[unit.setting].add(unit.model)
    return {setting: sorted(models) for setting, models in out.items()}


def filed_under(unit: Run | Failure, learned: dict[str, list[str]]) -> list[str]:
    """The models a run is filed under: its own, or for a reference every learned model of its setting (``""``
    when the setting has none)."""
    return [unit.model] if not unit.reference else learned.get(unit.setting) or [""]


def group(runs: list[Run], failures: Sequence[Failure] = ()) -> Cells:
    """Runs by (setting, model, row), each list sorted by seed; row = the strategy, or a reference's name.

    A reference run is filed under every learned model of its setting (finished or failed; under model ``""`` when
    the setting has none), so that its row stands beside each model's strategies.
    """
    out: Cells = defaultdict(list)
    learned = learned_models([*runs, *failures])
    for run in sorted(runs, key=lambda r: r.seed):
        for model in filed_under(run, learned):
            out[(run.setting, model, run.row)].append(run)
    return dict(out)


def settings_of(runs: Units) -> list[str]:
    return sorted({r.setting for r in runs})


def models_of(runs: Units) -> list[str]:
    """The learned models (column groups), in registry order; ``""`` too when a setting has only references."""
    known = list(MODELS)
    learned = learned_models(runs)
    models = {m for unit in runs for m in filed_under(unit, learned)}
    return sorted(models, key=lambda m: (known.index(m) if m in known else len(known), m))


def labels_of(runs: Units) -> dict[str, str]:
    """Display label per row: the registry's strategy label, else the one stored with the run (a reference's own)."""
    return {r.row: strategy_label(r.row, r.label) if not r.reference else r.label for r in runs}


def seeds_asked(runs: Units) -> dict[str, int]:
    """Per setting, how many seeds each cell should stand on: every seed with a run, finished or failed, in it."""
    seeds: dict[str, set[int]] = defaultdict(set)
    for r in runs:
        seeds[r.setting].add(r.seed)
    return {setting: len(s) for setting, s in seeds.items()}


def failed_cells(failures: Sequence[Failure], runs: Sequence[Run] = ()) -> set[tuple[str, str, str]]:
    learned = learned_models([*runs, *failures])
    return {(f.setting, model, f.row) for f in failures for model in filed_under(f, learned)}


def short_of_seeds(runs: list[Run], failures: Sequence[Failure] = ()) -> bool:
    """Whether some attempted cell stands on fewer seeds than its setting has (the header must not claim them all)."""
    cells, asked = group(runs, failures), seeds_asked([*runs, *failures])
    attempted = set(cells) | failed_cells(failures, runs)
    return any(len(cells.get(key, ())) < asked[key[0]] for key in attempted)


def metric_ks(runs: list[Run], ranking: str) -> list[int]:
    """The cut-offs every run has for ``ranking`` (5, 10, 20 unless runs were made with other ``--k``)."""
    pattern = re.compile(rf"{ranking}_hr@(\d+)")
    common = None
    for run in runs:
        ks = {int(m.group(1)) for c in run.batches.columns if (m := pattern.fullmatch(c))}
        common = ks if common is None else common & ks
    return sorted(common or ())


def seed_stat(cell: list[Run], column: str) -> tuple[float, float]:
    return mean_se([r.mean(column) for r in cell])
