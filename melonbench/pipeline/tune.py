"""``melonbench tune``: choose a strategy's online hyper-parameters on the validation part only.

The paper tunes its "uncharted" settings on validation HR@5; we apply that procedure to every strategy, each over
the search space it declares (``strategies.space``) under the same budget. A *trial* is one point of the space; it
is scored by the mean over seeds ``0 … K−1`` of validation HR@5 (full ranking by default, sampled on request),
each seed a validation-only replay (``split=validation``) from that seed's shared checkpoint, under the leak-free
protocol whatever protocol the tuned runs later use. The test part is never replayed, and no value drawn for it
reaches a validation batch (tested by changing the test batches). The best trial wins; scores closer than half
an interaction's hit (``0.5 / (validation interactions × seeds)``) tie, and a tie goes to the smaller change from
the default (``strategies.space.distance``: the sum over axes of the change in decades), then to the lower values.

Trials are independent runs plus their dependencies (``pipeline.tasks``), run by an executor (``pipeline.executor``:
in this process, in worker processes or on Ray, ``TuneConfig.engine``); finished runs are cached, so an
interrupted tuning resumes from the trials already done, and a finished one (same dataset,
model, strategy, settings, pre-training, budget, seeds and ranking) is returned as stored (``store.tuning``).
``run --tuned`` / ``reproduce --tuned`` read the stored choice through :func:`tuned_config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from melonbench import __version__
from melonbench.core.config import PretrainConfig, RunConfig, config_hash, to_jsonable
from melonbench.core.errors import DivergenceError, MelonbenchError
from melonbench.pipeline import experiment
from melonbench.pipeline.engines import Engine
from melonbench.pipeline.executor import execute, resolve_device
from melonbench.pipeline.tasks import Task, plan
from melonbench.store.paths import results_dir
from melonbench.store.tuning import TuningStore
from melonbench.strategies import check_compatible, get_strategy
from melonbench.strategies.space import Point, at_edge, default_point, distance, settings, space_of, trials

RANKINGS = ("full", "sampled")


class NotTunedError(MelonbenchError):
    """``--tuned`` asked for a choice that ``melonbench tune`` has not stored."""


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """What to tune, and how.

    Attributes
    ----------
    base : RunConfig
        Dataset, model, strategy, fixed strategy settings (``--set``, not searched), device, batch size,
        negatives and pre-training; its split, protocol and seed are the tuning's own (validation, leak-free,
        ``0 … seeds−1``).
    budget : int
        At most this many trials (the default point always among them; ``strategies.space.trials``).
    seeds : int
        Seeds ``0 … seeds−1`` per trial; the objective is their mean.
    ranking : {"full", "sampled"}
        The HR@5 that is the objective.
    results : Path | None
        Result store (default ``$MELONBENCH_HOME/results``); the tuning lives in its ``tuning/`` folder.
    engine : Engine
        Where the trials' tasks run (``pipeline.executor``; default: one after another in this process).
    """

    base: RunConfig = RunConfig()
    budget: int = 16
    seeds: int = 2
    ranking: str = "full"
    results: Path | None = None
    engine: Engine = Engine()


@dataclasses.dataclass(frozen=True)
class Trial:
    """One scored point: its settings, its change from the default, and one score per seed (None: diverged)."""

    point: Point
    settings: tuple[tuple[str, str], ...]
    distance: float
    scores: tuple[float | None, ...]

    @property
    def score(self) -> float:
        """Mean over seeds; −inf when a seed diverged (never chosen)."""
        if any(s is None for s in self.scores):
            return -math.inf
        return sum(self.scores) / len(self.scores)  # type: ignore[arg-type]


def select(scored: list[Trial], tolerance: float) -> int:
    """Index of the chosen trial: the best score; within ``tolerance`` of it, the smallest distance from the
    default, then the lowest values (axis by axis)."""
    best = max(t.score for t in scored)
    tied = [i for i, t in enumerate(scored) if t.score >= best - tolerance]
    return min(tied, key=lambda i: (scored[i].distance, scored[i].point))


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """``status``: ``tuned``, ``already tuned`` or ``nothing to tune``; ``record``: what the store holds."""

    status: str
    record: dict[str, Any] | None
    path: Path | None


class TuneHooks:
    """Progress callbacks of a tuning; the defaults do nothing."""

    def start(self, label: str, total: int) -> None: ...
    def trial(self, done: int, total: int, trial: Trial, best: Trial | None) -> None: ...
    def task(self, task: Task) -> AbstractContextManager[experiment.RunHooks]:
        return contextlib.nullcontext(experiment.RunHooks())


def validation_base(config: RunConfig) -> RunConfig:
    """The run every trial starts from: validation only, leak-free, untuned."""
    return dataclasses.replace(config, split="validation", protocol="leakfree", tuned=None, seed=0, capture_lr_every=0)


def context_of(base: RunConfig, fingerprint: str) -> dict[str, Any]:
    """Everything a tuning's trials depend on besides the trial's values, the seeds, the budget and the ranking."""
    return {
        "dataset": base.dataset,
        "fingerprint": fingerprint,
        "model": base.model,
        "strategy": base.strategy,
        "settings": to_jsonable(base.strategy_params),
        "batch_size": base.batch_size,
        "n_negatives": base.n_negatives,
        "pretrain": to_jsonable(base.pretrain),
        "melonbench": __version__,
    }


def context_id(context: dict[str, Any]) -> str:
    return f"{context['dataset']}_{context['model']}_{context['strategy']}_{config_hash(context)[:10]}"


def record_name(budget: int, seeds: int, ranking: str) -> str:
    return f"budget{budget}-seeds{seeds}-{ranking}.json"


def check(config: TuneConfig) -> tuple[type, RunConfig]:
    """Every check that needs no data; returns the strategy class and the trials' base run."""
    cls = get_strategy(config.base.strategy)
    check_compatible(config.base.strategy, config.base.model)
    if config.ranking not in RANKINGS:
        raise MelonbenchError(f"--ranking must be full or sampled, got '{config.ranking}'")
    if config.seeds < 1:
        raise MelonbenchError("--seeds must be at least 1")
    trials(cls, config.budget)  # checks the budget and that a space is declared
    searched = {axis.name for axis in space_of(cls)}
    for key, _ in config.base.strategy_params:
        if key in searched:
            raise MelonbenchError(f"--set {key} is what tune searches for {config.base.strategy}: leave it out")
    base = validation_base(config.base)
    experiment.validate(base)
    return cls, base


def tune(config: TuneConfig, hooks: TuneHooks | None = None) -> TuneResult:
    """Run the trials (re-using finished ones), choose, and store every trial and the choice.

    Raises
    ------
    MelonbenchError
        Bad options (before any work), or a dataset that is not prepared.
    """
    hooks = hooks or TuneHooks()
    cls, base = check(config)
    config.engine.check()
    points = trials(cls, config.budget)
    if not points:
        return TuneResult("nothing to tune", None, None)
    base = dataclasses.replace(base, device=resolve_device(config.engine, base.device))
    dataset = experiment.load_or_generate(base.dataset)
    context = context_of(base, experiment.dataset_fingerprint(dataset))
    cid, name = context_id(context), record_name(config.budget, config.seeds, config.ranking)
    store = TuningStore((config.results or results_dir()) / "tuning")
    space = to_jsonable(space_of(cls))
    found = store.read(cid, name)
    if found is not None and found.get("status") == "finished" and found.get("space") == space:
        store.set_current(cid, name)
        return TuneResult("already tuned", found, store.folder(cid) / name)

    objective = f"{config.ranking}_hr@5"
    n_val = int(dataset.card["splits"]["validation"]["interactions"])
    tolerance = 0.5 / (max(n_val, 1) * config.seeds)
    runs: dict[RunConfig, tuple[int, int]] = {}
    for t, point in enumerate(points):
        for seed in range(config.seeds):
            trial_settings = base.strategy_params + settings(cls, point)
            runs[dataclasses.replace(base, seed=seed, strategy_params=trial_settings)] = (t, seed)
    scores: list[dict[int, float | None]] = [{} for _ in points]
    run_ids: list[dict[int, str]] = [{} for _ in points]
    scored: list[Trial | None] = [None] * len(points)
    record: dict[str, Any] = {
        "status": "running",
        "context": context,
        "options": {"budget": config.budget, "seeds": config.seeds, "ranking": config.ranking, "objective": objective},
        "space": space,  # a finished record over another grid (the code changed) is tuned again
        "default": dict(settings(cls, default_point(cls))),
        "tie_tolerance": tolerance,
        "device": experiment.resolve_device(base.device).type,
        "trials": [],
    }
    label = f"tune {base.strategy}/{base.model} on {base.dataset}"
    hooks.start(label, len(points))
    started = time.perf_counter()

    failures: list[Exception] = []

    def on_done(task: Task, result: Any) -> None:
        if task.kind != "run":
            return
        t, seed = runs[task.config]
        diverged = isinstance(result, DivergenceError)
        if isinstance(result, Exception) and not diverged:
            failures.append(result)  # a defect, not a score: reported once the other trials are done
            return
        scores[t][seed] = None if diverged else float(result.manifest["summary"][objective])
        if not diverged:
            run_ids[t][seed] = result.run_id
        if len(scores[t]) < config.seeds:
            return
        scored[t] = Trial(
            points[t],
            settings(cls, points[t]),
            distance(cls, points[t]),
            tuple(scores[t][s] for s in range(config.seeds)),
        )
        done = [s for s in scored if s is not None]
        best = done[select(done, tolerance)] if any(s.score > -math.inf for s in done) else None
        record["trials"] = [_trial_json(s, run_ids[i]) for i, s in enumerate(scored) if s is not None]
        store.write(cid, name, record)
        hooks.trial(len(done), len(points), scored[t], best)

    execute(plan(list(runs)), store.trial_runs(cid), config.engine, hooks.task, on_done)
    if failures:
        raise failures[0]
    final = [s for s in scored if s is not None]
    if all(s.score == -math.inf for s in final):
        raise DivergenceError(f"every trial of {base.strategy} diverged; the trial runs are in {store.trial_runs(cid)}")
    chosen = select(final, tolerance)
    record.update(
        status="finished",
        chosen={
            "trial": chosen,
            "settings": dict(final[chosen].settings),
            "score": final[chosen].score,
            "default_score": None if final[0].score == -math.inf else final[0].score,  # None: the default diverged
            "at_edge": at_edge(cls, final[chosen].point),
        },
        wall_s=time.perf_counter() - started,
    )
    path = store.write(cid, name, record)
    store.set_current(cid, name)
    return TuneResult("tuned", record, path)


def _trial_json(trial: Trial, run_ids: dict[int, str]) -> dict[str, Any]:
    return {
        "settings": dict(trial.settings),
        "distance": trial.distance,
        "scores": list(trial.scores),
        "score": None if trial.score == -math.inf else trial.score,
        "runs": [run_ids.get(s) for s in range(len(trial.scores))],
    }


def tuned_config(config: RunConfig, results: Path | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """``config`` with the stored choice of its strategy's settings, and where the choice came from.

    The tuning must match the run's dataset, model, strategy, ``--set`` settings, pre-training, batch size and
    negatives; the one finished last is used. A strategy with nothing to tune gets ``tuned=()``.

    Raises
    ------
    NotTunedError
        No finished tuning matches; the message names the ``melonbench tune`` command to run.
    """
    cls = get_strategy(config.strategy)
    space = space_of(cls)
    if not space:
        return dataclasses.replace(config, tuned=()), {"note": "nothing to tune"}
    for key, _ in config.strategy_params:
        if key in {axis.name for axis in space}:
            raise MelonbenchError(f"--set {key} conflicts with --tuned: tune chooses {key} for {config.strategy}")
    base = validation_base(config)
    dataset = experiment.load_or_generate(base.dataset)
    cid = context_id(context_of(base, experiment.dataset_fingerprint(dataset)))
    found = TuningStore((results or results_dir()) / "tuning").current(cid)
    if found is None:
        raise NotTunedError(
            f"no finished tuning of {config.strategy} for {config.model} on {config.dataset} with these settings: "
            f"run `{tune_command(config)}` first"
        )
    name, record = found
    if record.get("space") != to_jsonable(space):
        raise NotTunedError(
            f"the stored tuning of {config.strategy} for {config.model} on {config.dataset} searched another grid "
            f"than {config.strategy} declares now: run `{tune_command(config)}` again"
        )
    values = tuple((k, str(v)) for k, v in record["chosen"]["settings"].items())
    provenance = {
        "record": f"{cid}/{name}",
        **record["options"],
        "validation_score": record["chosen"]["score"],
        "default_validation_score": record["chosen"]["default_score"],
        "tuned_on": record["device"],
    }
    return dataclasses.replace(config, tuned=values), provenance


def tune_command(config: RunConfig) -> str:
    """The ``melonbench tune`` command that makes the tuning ``config`` needs (its non-default options only)."""
    parts = ["melonbench tune", f"-d {config.dataset}", f"-m {config.model}", f"-s {config.strategy}"]
    default = PretrainConfig()
    for flag, field in (("--epochs", "epochs"), ("--lr", "lr"), ("--weight-decay", "weight_decay")):
        if getattr(config.pretrain, field) != getattr(default, field):
            parts.append(f"{flag} {getattr(config.pretrain, field):g}")
    if config.pretrain.patience != default.patience:
        parts.append(f"--patience {config.pretrain.patience}")
    if config.batch_size != RunConfig.batch_size:
        parts.append(f"--batch-size {config.batch_size}")
    if config.n_negatives != RunConfig.n_negatives:
        parts.append(f"--negatives {config.n_negatives}")
    parts += [f"--set {k}={v}" for k, v in config.strategy_params]
    return " ".join(parts)
