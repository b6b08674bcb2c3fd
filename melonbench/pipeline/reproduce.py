"""``melonbench reproduce``: run the paper's whole grid on one dataset, then write its report.

The grid is every model × strategy × seed (seeds ``0 … N−1``); declared-incompatible pairs (SML on NCF) are not
run and show as N/A. The reference recommenders without learning (``pop``, ``recent-pop``: their ``count`` update)
run once per seed as well, and the report shows them as reference rows beside every model's strategies. The grid
becomes tasks (``pipeline.tasks``: each pre-training once, each meta-model, each run) that an executor runs
(``pipeline.executor``: in this process, in ``jobs`` worker processes, or on Ray; ``ReproduceConfig.engine``).
Finished runs are re-used as they are and interrupted ones resume from their last checkpoint: running
``reproduce`` again after a crash only does what is missing. A run that fails (a non-finite loss, any error of
its own, a failed pre-training it needs, a lost worker) is recorded in its folder and the grid goes on; a
recorded failure is not run again unless ``retry_failed`` asks for the failed runs alone. The report covers
exactly the grid's runs, failed ones included, and a summary ends the output.

With ``tuned``, every run takes the settings ``melonbench tune`` stored for its (model, strategy) (refused, naming
the commands to run, where one is missing; the tunings must share budget, seeds and ranking, so that every
strategy had the same chance), and the report adds the same grid's published-settings runs where the store has
them, so tuned and published settings appear side by side.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console

from melonbench.core.config import PrepareOptions, RunConfig
from melonbench.core.errors import IncompatibleError, MelonbenchError, NotPreparedError
from melonbench.core.registry import lookup
from melonbench.models import MODELS, is_reference
from melonbench.pipeline import experiment
from melonbench.pipeline.engines import Engine
from melonbench.pipeline.executor import execute, resolve_device
from melonbench.pipeline.tasks import Task, plan
from melonbench.pipeline.tune import NotTunedError, tune_command, tuned_config
from melonbench.report.build import RANKING_SETS, build_report, render
from melonbench.report.plots import write_plots
from melonbench.report.runs import Failure, load_failures, load_runs, to_failure
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import home, results_dir
from melonbench.store.results import RunStore
from melonbench.strategies import STRATEGIES, check_compatible, default_strategy, get_strategy
from melonbench.strategies.base import parse_config
from melonbench.strategies.space import describe


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
        Strategy names; None = every registered strategy that runs on a learned model.
    references : tuple[str, ...]
        Reference recommenders without learning, run with their ``count`` update (default ``pop`` and
        ``recent-pop``; empty for none).
    seeds : int
        Seeds ``0 … seeds−1`` (the paper: 5).
    ranking : {"sampled", "full", "both"}
        Ranking(s) of the report's tables.
    results : Path | None
        Result store (default ``$MELONBENCH_HOME/results``).
    out : Path | None
        Report folder (default ``$MELONBENCH_HOME/reports/<dataset>``): ``report.md``, ``report.tex``,
        ``figures/``.
    settings : tuple[tuple[str, str], ...]
        ``--set`` strategy settings as ``(key, value)``: a plain ``key`` reaches every strategy of the grid whose
        config has it, ``strategy:key`` reaches that strategy alone and wins over a plain one (see
        :func:`strategy_settings`).
    retry_failed : bool
        Run only the grid's failed runs again (the others are not touched); without it a recorded failure is
        reported as it is and not run again.
    tuned : bool
        Run every strategy with its stored tuned settings (``pipeline.tune.tuned_config``).
    engine : Engine
        Where the grid's tasks run (``pipeline.executor``; default: ``local`` with its default jobs).
    """

    base: RunConfig = RunConfig()
    models: tuple[str, ...] = ("bpr", "ncf")
    strategies: tuple[str, ...] | None = None
    references: tuple[str, ...] = ("pop", "recent-pop")
    seeds: int = 5
    ranking: str = "both"
    results: Path | None = None
    out: Path | None = None
    settings: tuple[tuple[str, str], ...] = ()
    retry_failed: bool = False
    tuned: bool = False
    engine: Engine = Engine()


@dataclasses.dataclass(frozen=True)
class ReproduceResult:
    """What ``reproduce`` did: the outcome of every run it ran or re-used, the pairs it skipped (with why), the files
    it wrote, and every failed run of the grid (failed now, or recorded earlier and not retried)."""

    runs: tuple[experiment.RunResult, ...]
    skipped: tuple[tuple[str, str, str], ...]
    report_files: tuple[Path, ...]
    figures: tuple[Path, ...]
    failures: tuple[Failure, ...] = ()


class GridHooks:
    """Progress of a grid; the defaults do nothing. ``task`` gives the hooks of a task run in this process."""

    def start(self, total: int) -> None: ...
    def finished(self, done: int, total: int, failed: int, elapsed_s: float) -> None: ...
    def task(self, task: Task) -> AbstractContextManager[experiment.RunHooks]:
        return nullcontext(experiment.RunHooks())


def grid(config: ReproduceConfig) -> tuple[list[RunConfig], list[tuple[str, str, str]]]:
    """The runs of the grid (model, then seed, then strategy: each checkpoint is made once, then shared; then the
    references, seed by seed) and the ``(strategy, model, reason)`` pairs left out as declared-incompatible. Unknown
    names, and settings that reach no strategy or do not convert, raise before any work."""
    learned = [m for m in config.models if not is_reference(m)] or list(config.models)
    default_names = [n for n, cls in STRATEGIES.items() if any(m in cls.supports for m in learned)]
    names = default_names if config.strategies is None else list(config.strategies)
    for name in names:
        lookup("strategy", name, STRATEGIES)
    params = strategy_settings(names, config.base.strategy_params + config.settings)
    for model in (*config.models, *config.references):
        lookup("model", model, MODELS)
    not_references = [m for m in config.references if not is_reference(m)]
    if not_references:
        raise MelonbenchError(
            f"--references takes recommenders without learning (pop, recent-pop), got {not_references}"
        )
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
            dataclasses.replace(config.base, model=model, strategy=name, seed=seed, strategy_params=params[name])
            for seed in range(config.seeds)
            for name in usable
        ]
    if not runs:
        raise MelonbenchError("nothing to run: every chosen strategy is incompatible with every chosen model")
    runs += [
        dataclasses.replace(config.base, model=ref, strategy=default_strategy(ref), seed=seed, strategy_params=())
        for seed in range(config.seeds)
        for ref in config.references
    ]
    for run in runs:
        experiment.validate(run)
    return runs, skipped


def strategy_settings(
    names: list[str], settings: tuple[tuple[str, str], ...]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """The ``--set`` settings that reach each strategy of a grid, sorted by key (so that their order on the command
    line does not change a run's identity).

    ``key=value`` reaches every strategy in ``names`` whose config has ``key``; ``strategy:key=value`` reaches that
    strategy alone and wins over a plain setting of the same key, wherever it stands; a later setting of the same
    key and reach wins over an earlier one.

    Raises
    ------
    MelonbenchError
        For an unknown strategy name (with a suggestion), a strategy that is not in the grid, a plain key that no
        strategy of the grid has, a key the named strategy does not have, or a value that does not convert.
    """
    fields = {n: {f.name for f in dataclasses.fields(get_strategy(n).Config)} for n in names}
    plain: dict[str, str] = {}
    targeted: dict[str, dict[str, str]] = defaultdict(dict)
    for key, value in settings:
        target, sep, field = key.partition(":")
        if sep:
            target, field = target.strip(), field.strip()
            lookup("strategy", target, STRATEGIES)
            if target not in names:
                raise MelonbenchError(
                    f"--set {key}={value}: strategy '{target}' is not in this grid ({', '.join(names)})"
                )
            targeted[target][field] = value
        elif any(key in f for f in fields.values()):
            plain[key] = value
        else:
            raise MelonbenchError(
                f"--set {key}={value}: no strategy of this grid has a setting '{key}' "
                f"(strategies: {', '.join(names)}; `strategy:{key}=…` names one)"
            )
    out = {}
    for name in names:
        merged = {k: v for k, v in plain.items() if k in fields[name]} | targeted[name]
        out[name] = tuple(sorted(merged.items()))
        parse_config(get_strategy(name).Config, out[name])  # a key it lacks, a value that does not convert
    return out


def reproduce(
    config: ReproduceConfig, hooks: GridHooks | None = None, console: Console | None = None
) -> ReproduceResult:
    """Run the grid (skipping finished runs, resuming interrupted ones, recording failed ones and going on), then
    write the report and figures, and print a summary (finished / reused / failed, each failure's reason).

    Parameters
    ----------
    config : ReproduceConfig
        The grid.
    hooks : GridHooks, optional
        The grid's progress (runs done of total, failures, elapsed) and the hooks of each task run in this process
        (the CLI's rich bars).
    console : rich.console.Console, optional
        Where one line per run, the output paths and the summary are printed (default: nothing). With
        ``MELONBENCH_DEBUG=1`` the summary shows the traceback of each unexpected failure.

    A ``KeyboardInterrupt`` stops the grid at once (the workers too): nothing is recorded for the interrupted
    runs, which resume from their last checkpoint next time.
    """
    if config.ranking not in RANKING_SETS:
        raise MelonbenchError(f"--ranking must be full, sampled or both, got '{config.ranking}'")
    config.engine.check()
    hooks = hooks or GridHooks()
    runs, skipped = grid(config)
    device = resolve_device(config.engine, config.base.device)
    runs = [dataclasses.replace(run, device=device) for run in runs]  # as the workers see it (Ray: the cluster)
    _ensure_prepared(config.base.dataset, console)
    tunings: list[dict[str, Any] | None] = [None] * len(runs)
    if config.tuned:
        runs, tunings = with_tuned(runs, config.results)

    def say(line: str) -> None:  # one line each, never wrapped (paths, reasons), never read as markup
        if console is not None:
            console.print(line, highlight=False, markup=False, soft_wrap=True)

    for name, model, reason in skipped:
        say(f"skipping {name} on {model}: {reason}")
    root = config.results or results_dir()
    run_ids = _run_ids(runs)
    outcomes: list[experiment.RunResult] = []
    failures: list[Failure] = []
    earlier = untouched = 0
    chosen: list[int] = []
    labels: dict[RunConfig, tuple[str, str]] = {}
    for i, (run, run_id) in enumerate(zip(runs, run_ids, strict=True)):
        label = f"{run.strategy}/{run.model} seed {run.seed}" + (f" ({describe(run.tuned)})" if run.tuned else "")
        store = RunStore(root / run_id)
        record = store.failure()
        if record is not None and not config.retry_failed:
            failures.append(to_failure(record, store.path))
            earlier += 1
            say(f"{label}: {failures[-1].what()} (recorded earlier; --retry-failed runs it again)")
            continue
        if record is None and config.retry_failed:
            untouched += 1
            continue
        chosen.append(i)
        labels[run] = (label, run_id)

    started, finished = time.perf_counter(), [0, 0]  # runs done, of which failed
    hooks.start(len(chosen))

    def on_done(task: Task, result: Any) -> None:
        if task.kind != "run":
            return
        label, run_id = labels[task.config]
        if isinstance(result, BaseException):
            record = RunStore(root / run_id).failure()
            if record is None:  # failed before its folder was known (it cannot be reported as a run)
                raise result
            failures.append(to_failure(record, root / run_id))
            say(f"{label}: {failures[-1].what()}")
            finished[1] += 1
        else:
            outcomes.append(result)
            say(f"{label}: {result.status}")
        finished[0] += 1
        hooks.finished(finished[0], len(chosen), finished[1], time.perf_counter() - started)

    tasks = plan([runs[i] for i in chosen], [tunings[i] for i in chosen])
    execute(tasks, config.results, config.engine, hooks.task, on_done)

    files: list[Path] = []
    figures: list[Path] = []
    # with --tuned, the same grid's published-settings runs too, where the store has them: side by side
    report_ids = set(run_ids) | (
        set(_run_ids([dataclasses.replace(r, tuned=None) for r in runs])) if config.tuned else set()
    )
    if any(RunStore(root / run_id).is_complete() for run_id in report_ids):
        stored = load_runs(root, run_ids=report_ids)
        report = build_report(stored, config.ranking, failures=load_failures(root, run_ids=set(run_ids), runs=stored))
        out = config.out or (home() / "reports" / config.base.dataset)
        for fmt, name in (("markdown", "report.md"), ("latex", "report.tex")):
            atomic_write_bytes(out / name, render(report, fmt).encode())  # type: ignore[arg-type]
            files.append(out / name)
        figures = write_plots(stored, out / "figures", RANKING_SETS[config.ranking])
        say(f"report: {files[0]} and {files[1]}; {len(figures)} figures in {out / 'figures'}")
    else:
        say("no report: no run of the grid has finished")
    result = ReproduceResult(tuple(outcomes), tuple(skipped), tuple(files), tuple(figures), tuple(failures))
    for line in summary(result, earlier, untouched, tracebacks=bool(os.environ.get("MELONBENCH_DEBUG"))):
        say(line)
    return result


def summary(result: ReproduceResult, earlier: int = 0, untouched: int = 0, tracebacks: bool = False) -> list[str]:
    """The lines that end ``reproduce``: counts, then one line per failure (with its traceback if asked)."""
    finished = sum(o.status != "already complete" for o in result.runs)
    reused = len(result.runs) - finished
    counts = f"{finished} finished, {reused} reused, {len(result.failures)} failed"
    extra = [f"{earlier} of them recorded earlier"] if earlier else []
    extra += [f"{untouched} other runs not touched"] if untouched else []
    lines = [f"grid: {counts}" + (f" ({'; '.join(extra)})" if extra else "")]
    for f in result.failures:
        where = f"; traceback in {f.folder / 'failure.json'}" if f.unexpected and not tracebacks else ""
        lines.append(f"failed: {f.strategy}/{f.model} seed {f.seed}: {f.what()}{where}")
        if f.unexpected and tracebacks:
            lines.append(f.traceback.rstrip())
    if result.failures:
        lines.append("run the same command with --retry-failed to run the failed runs again")
    return lines


def _run_ids(runs: list[RunConfig]) -> list[str]:
    """The result-store id of every run of the grid (one dataset and device for all of them)."""
    dataset = experiment.load_or_generate(runs[0].dataset)
    fingerprint = experiment.dataset_fingerprint(dataset)
    device = experiment.resolve_device(runs[0].device)
    return [experiment.run_id_for(run, fingerprint, device) for run in runs]


def with_tuned(runs: list[RunConfig], results: Path | None) -> tuple[list[RunConfig], list[dict[str, Any] | None]]:
    """Every run with its stored tuned settings, and where each choice came from.

    Raises
    ------
    NotTunedError
        Naming the ``melonbench tune`` command of every (model, strategy) without a stored tuning.
    MelonbenchError
        When the stored tunings differ in budget, seeds or ranking.
    """
    chosen: dict[tuple[str, str], tuple[RunConfig, dict[str, Any]]] = {}
    missing: dict[tuple[str, str], RunConfig] = {}
    for run in runs:
        key = (run.model, run.strategy)
        if key not in chosen and key not in missing:
            try:
                chosen[key] = tuned_config(run, results)
            except NotTunedError:
                missing[key] = run
    if missing:
        commands = "; ".join(f"`{tune_command(run)}`" for run in missing.values())
        raise NotTunedError(f"--tuned: no stored tuning for {len(missing)} strategy/model pair(s); run {commands}")
    options = {
        f"budget {p['budget']}, {p['seeds']} seeds, {p['ranking']} ranking" for _, p in chosen.values() if "budget" in p
    }
    if len(options) > 1:
        raise MelonbenchError(
            f"--tuned: the stored tunings differ ({'; '.join(sorted(options))}); tune every strategy with the same "
            "--budget, --seeds and --ranking"
        )
    tuned = [chosen[(run.model, run.strategy)] for run in runs]
    return [dataclasses.replace(r, tuned=c.tuned) for r, (c, _) in zip(runs, tuned, strict=True)], [p for _, p in tuned]


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
