"""``melonbench reproduce``: run the paper's whole grid on one dataset, then write its report.

The grid is every model × strategy × seed (seeds ``0 … N−1``); declared-incompatible pairs (SML on NCF) are not
run and show as N/A. Each run goes through :func:`melonbench.pipeline.experiment.run_experiment`, so finished runs are
re-used as they are and interrupted ones resume from their last checkpoint: running ``reproduce`` again after a
crash only does what is missing. The report covers exactly the grid's runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from rich.console import Console

from melonbench.core.config import PrepareOptions, RunConfig
from melonbench.core.errors import IncompatibleError, MelonbenchError, NotPreparedError
from melonbench.core.registry import lookup
from melonbench.models import MODELS
from melonbench.pipeline import experiment
from melonbench.report.build import PROTOCOLS, build_report, render
from melonbench.report.plots import write_plots
from melonbench.report.runs import load_runs
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import home, results_dir
from melonbench.strategies import STRATEGIES, check_compatible


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """The grid and where its report goes.

    Attributes
    ----------
    base : RunConfig
        Every setting shared by the grid's runs (dataset, run protocol, device, pre-training, batch size, ...);
        its model, strategy and seed are replaced per run. Like ``melonbench run``, it captures no learning-rate
        matrices by default (set ``capture_lr_every`` for Figure 4); keeping the defaults equal means runs made
        with ``run`` are re-used here.
    models : tuple[str, ...]
        Recommenders (default BPR and NCF, as in the paper).
    strategies : tuple[str, ...] | None
        Strategy names; None = every registered strategy.
    seeds : int
        Seeds ``0 … seeds−1`` (the paper: 5).
    ranking : {"sampled", "full", "both"}
        Ranking protocol(s) of the report's tables.
    results : Path | None
        Result store (default ``$MELONBENCH_HOME/results``).
    out : Path | None
        Report folder (default ``$MELONBENCH_HOME/reports/<dataset>``): ``report.md``, ``report.tex``,
        ``figures/``.
    """

    base: RunConfig = RunConfig()
    models: tuple[str, ...] = ("bpr", "ncf")
    strategies: tuple[str, ...] | None = None
    seeds: int = 5
    ranking: str = "both"
    results: Path | None = None
    out: Path | None = None


@dataclasses.dataclass(frozen=True)
class ReproduceResult:
    """What ``reproduce`` did: every run's outcome, the pairs it skipped (with why) and the files it wrote."""

    runs: tuple[experiment.RunResult, ...]
    skipped: tuple[tuple[str, str, str], ...]
    report_files: tuple[Path, ...]
    figures: tuple[Path, ...]


Hooks = Callable[[str], AbstractContextManager[experiment.RunHooks]]


def grid(config: ReproduceConfig) -> tuple[list[RunConfig], list[tuple[str, str, str]]]:
    """The runs of the grid (model, then seed, then strategy: each checkpoint is made once, then shared) and the
    ``(strategy, model, reason)`` pairs left out as declared-incompatible. Unknown names raise before any work."""
    names = list(STRATEGIES) if config.strategies is None else list(config.strategies)
    for name in names:
        lookup("strategy", name, STRATEGIES)
    for model in config.models:
        lookup("model", model, MODELS)
    if config.seeds < 1:
        raise MelonbenchError("--seeds must be at least 1")
    runs, skipped = [], []
    for model in config.models:
        usable = []
        for name in names:
            try:
                check_compatible(name, model)
                usable.append(name)
            except IncompatibleError as exc:
                skipped.append((name, model, str(exc)))
        runs += [
            dataclasses.replace(config.base, model=model, strategy=name, seed=seed)
            for seed in range(config.seeds)
            for name in usable
        ]
    if not runs:
        raise MelonbenchError("nothing to run: every chosen strategy is incompatible with every chosen model")
    for run in runs:
        experiment.validate(run)
    return runs, skipped


def reproduce(config: ReproduceConfig, hooks: Hooks | None = None, console: Console | None = None) -> ReproduceResult:
    """Run the grid (skipping finished runs, resuming interrupted ones), then write the report and figures.

    Parameters
    ----------
    config : ReproduceConfig
        The grid.
    hooks : callable, optional
        ``hooks(label)`` returns a context manager yielding the progress hooks of one run (the CLI's rich bars).
    console : rich.console.Console, optional
        Where one line per run and the output paths are printed (default: nothing).
    """
    if config.ranking not in PROTOCOLS:
        raise MelonbenchError(f"--ranking must be full, sampled or both, got '{config.ranking}'")
    runs, skipped = grid(config)
    _ensure_prepared(config.base.dataset, console)
    say = console.print if console is not None else (lambda *a, **k: None)
    for name, model, reason in skipped:
        say(f"skipping {name} on {model}: {reason}", highlight=False)
    outcomes = []
    for run in runs:
        label = f"{run.strategy}/{run.model} seed {run.seed}"
        with hooks(label) if hooks is not None else contextlib.nullcontext(experiment.RunHooks()) as h:
            outcome = experiment.run_experiment(run, config.results, h)
        say(f"{label}: {outcome.status}", highlight=False)
        outcomes.append(outcome)

    root = config.results or results_dir()
    stored = load_runs(root, run_ids={o.run_id for o in outcomes})
    report = build_report(stored, config.ranking)
    out = config.out or (home() / "reports" / config.base.dataset)
    files = []
    for fmt, name in (("markdown", "report.md"), ("latex", "report.tex")):
        atomic_write_bytes(out / name, render(report, fmt).encode())  # type: ignore[arg-type]
        files.append(out / name)
    figures = write_plots(stored, out / "figures", PROTOCOLS[config.ranking])
    say(f"report: {files[0]} and {files[1]}; {len(figures)} figures in {out / 'figures'}", highlight=False)
    return ReproduceResult(tuple(outcomes), tuple(skipped), tuple(files), tuple(figures))


def _ensure_prepared(dataset: str, console: Console | None) -> None:
    """The synthetic default is prepared on demand (it needs no download); any other dataset must be prepared."""
    from melonbench.data.store import load_card

    try:
        load_card(dataset)
    except NotPreparedError:
        if dataset != "synthetic":
            raise
        from melonbench.data.prepare import prepare_dataset

        prepare_dataset("synthetic", PrepareOptions(), console=console)
