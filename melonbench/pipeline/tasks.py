"""A grid as a list of tasks with their dependencies.

Three kinds of task make every online replay: the recommender's pre-training for ``(dataset, model, seed,
pre-training settings)``, a meta strategy's meta-model pre-training (on that checkpoint, for its settings), and
the replay itself. Each is cached by content hash wherever it runs, so running one twice costs a look-up. A task
names the keys of the tasks it needs; :func:`plan` lists each task once, after everything it needs, and an
executor (``pipeline.executor``: in this process, in worker processes, or as Ray tasks) runs them in an order that
honours ``needs``. :func:`cached` finds, without running anything, the tasks whose product the store already holds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from melonbench.core.config import RunConfig, config_hash, to_jsonable
from melonbench.pipeline import experiment
from melonbench.pipeline.meta_pretrain import meta_key_of, meta_path
from melonbench.pipeline.pretrain import checkpoint_key, checkpoint_path
from melonbench.strategies import get_strategy
from melonbench.strategies.base import parse_config

Kind = Literal["pretrain", "meta", "run"]


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of work.

    Attributes
    ----------
    key : str
        Identity (equal keys: the same work).
    kind : {"pretrain", "meta", "run"}
        What :func:`run_task` does with ``config``.
    config : RunConfig
        The run the task serves (a pre-training task reads its dataset, model, seed and ``pretrain``).
    needs : tuple[str, ...]
        Keys of the tasks that must finish first.
    tuning : dict | None
        A tuned run's provenance (``pipeline.tune.tuned_config``), written to its manifest; not part of the task's
        identity.
    """

    key: str
    kind: Kind
    config: RunConfig
    needs: tuple[str, ...] = ()
    tuning: dict[str, Any] | None = dataclasses.field(default=None, compare=False)


STAGES: dict[str, str] = {"pretrain": "pre-training", "meta": "meta pre-training", "run": "replay"}
"""The stage of a run (as its failure record names it) that each kind of task does."""


def _pretrain_key(c: RunConfig) -> str:
    return "pretrain-" + config_hash(c.dataset, c.model, c.seed, c.pretrain)


def _meta_key(c: RunConfig) -> str:
    settings = parse_config(get_strategy(c.strategy).Config, c.settings())  # spellings of one value agree
    return "meta-" + config_hash(_pretrain_key(c), c.strategy, to_jsonable(settings), c.batch_size)


def plan(runs: list[RunConfig], tunings: list[dict[str, Any] | None] | None = None) -> list[Task]:
    """The tasks of ``runs`` in an order that respects ``needs``: each pre-training and meta-model once, just
    before the first run that needs it. ``tunings``, aligned with ``runs``: each tuned run's provenance."""
    tasks: dict[str, Task] = {}
    for run, tuning in zip(runs, tunings or [None] * len(runs), strict=True):
        need = _pretrain_key(run)
        tasks.setdefault(need, Task(need, "pretrain", run))
        if get_strategy(run.strategy).meta:
            meta = _meta_key(run)
            tasks.setdefault(meta, Task(meta, "meta", run, (need,)))
            need = meta
        key = "run-" + config_hash(run)
        tasks.setdefault(key, Task(key, "run", run, (need,), tuning))
    return list(tasks.values())


def run_task(task: Task, results: Path | None, hooks: experiment.RunHooks) -> Any:
    """Do one task: a pre-training returns its checkpoint's path, a meta-model its cache key, a run its
    ``RunResult``. A failure raises (a run records it in its folder first, ``experiment.attempt_experiment``)."""
    c = task.config
    if task.kind == "pretrain":
        return experiment.pretrain_only(
            c.dataset, c.model, c.pretrain, c.seed, c.device, hooks, n_negatives=c.n_negatives
        ).path
    if task.kind == "meta":
        return experiment.meta_pretrain_only(c, hooks)
    return experiment.run_experiment(c, results, hooks, task.tuning)


def products(task: Task, fingerprint: str) -> list[Path]:
    """The cache files a task makes and the tasks after it read: a pre-training's checkpoint, a meta-model's file;
    none for a run (its folder is the product)."""
    c = task.config
    ckey = checkpoint_key(fingerprint, c.model, c.pretrain, c.seed)
    if task.kind == "pretrain":
        return [checkpoint_path(c.model, ckey)]
    if task.kind == "meta":
        config = parse_config(get_strategy(c.strategy).Config, c.settings())
        return [meta_path(c.strategy, meta_key_of(c.strategy, config, ckey, c.seed, c.batch_size))]
    return []


def cached(task: Task, results: Path | None, fingerprint: str) -> Any | None:
    """The result of ``task`` when the store already holds its product (a finished run, a cached checkpoint or
    meta-model), found without running anything; else None."""
    if task.kind == "run":
        return experiment.stored_run(task.config, results)[1]
    (path,) = products(task, fingerprint)
    return path if path.is_file() else None


class TaskLost(RuntimeError):
    """The process running a task ended without a result (killed, out of memory, a crash in native code, a lost
    node); a run's own failure record could not be written there."""


def record_not_run(task: Task, results: Path | None, stage: str, error: Exception) -> None:
    """Record a run task that did not finish and could not record why itself: one never started because a task it
    needs failed (``stage``: that task's, ``STAGES``), or one whose process was lost (``stage`` ``worker``)."""
    if task.kind == "run" and experiment.stored_run(task.config, results)[1] is None:
        experiment.record_not_run(task.config, results, stage, error)
