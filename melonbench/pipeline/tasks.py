"""A grid as a list of tasks with their dependencies, and the sequential loop that runs them.

Three kinds of task make every online replay: the recommender's pre-training for ``(dataset, model, seed,
pre-training settings)``, a meta strategy's meta-model pre-training (on that checkpoint, for its settings), and
the replay itself. Each is cached by content hash wherever it runs, so running one twice costs a look-up. A task
names the keys of the tasks it needs; :func:`plan` lists each task once, after everything it needs, so the
sequential :func:`execute` can run them in order. An executor that runs independent tasks in parallel (several
processes, a cluster) takes the same list and honours ``needs``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from melonbench.core.config import RunConfig, config_hash, to_jsonable
from melonbench.core.errors import DivergenceError
from melonbench.pipeline import experiment
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
    """

    key: str
    kind: Kind
    config: RunConfig
    needs: tuple[str, ...] = ()


def _pretrain_key(c: RunConfig) -> str:
    return "pretrain-" + config_hash(c.dataset, c.model, c.seed, c.pretrain)


def _meta_key(c: RunConfig) -> str:
    settings = parse_config(get_strategy(c.strategy).Config, c.settings())  # spellings of one value agree
    return "meta-" + config_hash(_pretrain_key(c), c.strategy, to_jsonable(settings), c.batch_size)


def plan(runs: list[RunConfig]) -> list[Task]:
    """The tasks of ``runs`` in an order that respects ``needs``: each pre-training and meta-model once, just
    before the first run that needs it."""
    tasks: dict[str, Task] = {}
    for run in runs:
        need = _pretrain_key(run)
        tasks.setdefault(need, Task(need, "pretrain", run))
        if get_strategy(run.strategy).meta:
            meta = _meta_key(run)
            tasks.setdefault(meta, Task(meta, "meta", run, (need,)))
            need = meta
        key = "run-" + config_hash(run)
        tasks.setdefault(key, Task(key, "run", run, (need,)))
    return list(tasks.values())


def run_task(task: Task, results: Path | None, hooks: experiment.RunHooks) -> Any:
    """Do one task: a pre-training returns its checkpoint, a meta-model its cache key, a run its ``RunResult``."""
    c = task.config
    if task.kind == "pretrain":
        return experiment.pretrain_only(
            c.dataset, c.model, c.pretrain, c.seed, c.device, hooks, n_negatives=c.n_negatives
        )
    if task.kind == "meta":
        return experiment.meta_pretrain_only(c, hooks)
    return experiment.run_experiment(c, results, hooks)


Hooks = Callable[[Task], AbstractContextManager[experiment.RunHooks]]


def execute(
    tasks: list[Task],
    results: Path | None = None,
    hooks: Hooks | None = None,
    on_done: Callable[[Task, Any], None] | None = None,
) -> dict[str, Any]:
    """Run ``tasks`` one after another in their order (``plan``'s); return every task's result by key.

    ``hooks(task)`` gives the progress hooks of one task; ``on_done(task, result)`` is called as each finishes.
    A task whose training diverged (:class:`DivergenceError`) has that error as its result, and so has every
    task that needs it (they are not run); the others go on. Any other exception stops the loop: what finished
    is cached, so running the same tasks again resumes.
    """
    done: dict[str, Any] = {}
    for task in tasks:
        missing = [k for k in task.needs if k not in done]
        if missing:
            raise ValueError(f"task {task.key} comes before what it needs: {', '.join(missing)}")
        failed = [done[k] for k in task.needs if isinstance(done[k], DivergenceError)]
        if failed:
            done[task.key] = failed[0]
        else:
            with hooks(task) if hooks is not None else contextlib.nullcontext(experiment.RunHooks()) as h:
                try:
                    done[task.key] = run_task(task, results, h)
                except DivergenceError as exc:
                    done[task.key] = exc
        if on_done is not None:
            on_done(task, done[task.key])
    return done
