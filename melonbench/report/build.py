"""``melonbench report``: the paper's tables and figures from the result store, with honest statistics.

Nothing is rerun: every number comes from the stored per-batch rows (``batches.parquet``) and manifests. The
tables are built once into a :class:`~melonbench.report.model.Report` and drawn by one of several pure renderers
(terminal, Markdown, LaTeX); figures go to PNG files. Failed runs (``failure.json``) are listed, never averaged.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from rich.console import Console

from melonbench.core.errors import MelonbenchError
from melonbench.report.cells import models_of, settings_of, short_of_seeds
from melonbench.report.model import Report, model_label
from melonbench.report.paper import paper_protocol
from melonbench.report.plots import write_plots
from melonbench.report.render import latex, markdown, terminal
from melonbench.report.runs import Failure, Run, load_failures, load_runs
from melonbench.report.significance import significance
from melonbench.report.tables import ablation, accuracy, agreement, failed_runs, has_groups, timing
from melonbench.report.tuned import tuned_settings
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import results_dir

Format = Literal["terminal", "markdown", "latex"]
RANKING_SETS = {"sampled": ("sampled",), "full": ("full",), "both": ("sampled", "full")}


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """Options of ``melonbench report``.

    Attributes
    ----------
    results : Path | None
        Result store to read (default ``$MELONBENCH_HOME/results``).
    datasets : tuple[str, ...]
        Only these datasets (default: every dataset in the store).
    ranking : {"sampled", "full", "both"}
        Ranking(s) of the accuracy, ablation and significance tables (agreement always shows both).
    format : {"terminal", "markdown", "latex"}
        ``terminal`` prints rich tables; the others produce text for a file.
    out : Path | None
        Write the Markdown/LaTeX there (atomically) instead of printing it.
    plots : Path | None
        Write the PNG figures into this folder.
    bootstrap_seed : int
        Seed of the block bootstrap (the same store and seed give the same intervals).
    n_boot : int
        Bootstrap replicates.
    """

    results: Path | None = None
    datasets: tuple[str, ...] = ()
    ranking: str = "both"
    format: Format = "terminal"
    out: Path | None = None
    plots: Path | None = None
    bootstrap_seed: int = 0
    n_boot: int = 2000


def build_report(
    runs: list[Run],
    ranking: str = "both",
    bootstrap_seed: int = 0,
    n_boot: int = 2000,
    failures: Sequence[Failure] = (),
) -> Report:
    """Every table of the report for ``runs``, and the ``failures`` among the same grid (listed, counted, never
    averaged: a cell with fewer seeds than its setting says so).

    Raises
    ------
    melonbench.report.runs.PairingError
        When runs that the significance table must pair were not replayed on the same stream, checkpoint,
        negatives and batches.
    """
    rankings = _rankings(ranking)
    tables = [accuracy(runs, r, failures) for r in rankings]
    warnings = []
    if has_groups(runs):
        tables += [accuracy(runs, r, failures, "warm_item") for r in rankings]
    else:
        warnings.append("no warm-item tables: some runs were made before batches.parquet had the warm/cold columns")
    tables += [t for t in (ablation(runs, r, failures) for r in rankings) if t is not None]
    tables += [t for t in (tuned_settings(runs, rankings),) if t is not None]
    failed_table = failed_runs(failures)
    if failed_table is not None:
        tables.append(failed_table)
    timing_table, timing_warnings = timing(runs, failures)
    warnings += timing_warnings
    tables.append(timing_table)
    tables += [t for t in (significance(runs, r, bootstrap_seed, n_boot, failures) for r in rankings) if t is not None]
    agreement_table, disagreements = agreement(runs, failures=failures)
    if agreement_table is not None:
        tables.append(agreement_table)
    paper_table = paper_protocol(runs)
    if paper_table is not None:
        tables.append(paper_table)
    units = [*runs, *failures]
    seeds = ", ".join(str(s) for s in sorted({r.seed for r in units}))
    count = f"{len(runs)} runs" + (f" finished, {len(failures)} failed" if failures else "")
    # Never claim every seed for every cell when some cell lacks one.
    seeds += " (cells marked k/n stand on fewer)" if short_of_seeds(runs, failures) else ""
    references = sorted({r.label for r in units if r.reference})
    header = (
        "melonbench report",
        f"{count}; datasets: {', '.join(settings_of(units))}; models: "
        f"{', '.join(model_label(m) for m in models_of(units))}"
        + (f"; references: {', '.join(references)}" if references else "")
        + f"; seeds: {seeds}.",
        "Headline: accuracy over all test interactions under the leak-free protocol. The warm-item tables (positive "
        "item seen before its batch) are a diagnostic: they leave out the new items that an ID-based model cannot "
        "rank, and that every real stream brings.",
        *(
            (
                "[paper protocol] rows reproduce two of the published code's four leaks, not all of it: see the table "
                "'What the paper protocol reproduces'.",
            )
            if paper_table is not None
            else ()
        ),
    )
    return Report(header=header, tables=tuple(tables), warnings=tuple(warnings + disagreements))


def _rankings(ranking: str) -> tuple[str, ...]:
    if ranking not in RANKING_SETS:
        raise MelonbenchError(f"--ranking must be full, sampled or both, got '{ranking}'")
    return RANKING_SETS[ranking]


def render(report: Report, format: Format) -> str:
    """The report as Markdown or LaTeX text."""
    if format == "markdown":
        return markdown(report)
    if format == "latex":
        return latex(report)
    raise MelonbenchError(f"cannot render format '{format}' as text (use markdown or latex)")


def make_report(options: ReportOptions, console: Console | None = None) -> Report:
    """Read the store, build the report, and print or write it (and the figures) as ``options`` ask.

    Returns the report, so that callers (``reproduce``) can render it again.
    """
    console = console or Console()
    _rankings(options.ranking)
    if options.out is not None and options.format == "terminal":
        raise MelonbenchError("--out needs --markdown or --latex (the terminal table is printed, not written)")
    root = options.results or results_dir()
    runs = load_runs(root, options.datasets)
    failures = load_failures(root, options.datasets, runs=runs)
    report = build_report(runs, options.ranking, options.bootstrap_seed, options.n_boot, failures)
    if options.format == "terminal":
        terminal(report, console)
    elif options.out is None:
        sys.stdout.write(render(report, options.format))  # plain text, so that it can be piped to a file
    else:
        atomic_write_bytes(options.out, render(report, options.format).encode())
    if options.plots is not None:
        paths = write_plots(runs, options.plots, _rankings(options.ranking))
        Console(stderr=True).print(f"{len(paths)} figures in {options.plots}", highlight=False)
    return report
