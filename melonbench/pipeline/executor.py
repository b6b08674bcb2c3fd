"""Executors: run a grid's tasks (``pipeline.tasks``) in an order that honours their needs, here or elsewhere.

``reproduce`` and ``tune`` hand their tasks to :func:`execute` with an :class:`Engine`:

- ``local`` with one job: one task after another in this process (with each task's progress bars);
- ``local`` with N jobs: N worker processes on this machine (``pipeline.local_engine``), sharing the store;
- ``ray``: every task a Ray task on a local Ray instance or an existing cluster (``pipeline.ray_engine``), with no
  shared filesystem: the files a task reads travel through Ray's object store and the files it makes come back.

Whatever the engine, the guarantees are the same. A task whose product the store already holds (a finished run, a
cached checkpoint) is not run, and neither is a pre-training that no unfinished run needs; so running a grid again
after an interruption does only what is missing. A task that fails does not stop the others: its result is the
exception, every task that needs it is not run and gets the same exception, and a run that was not started that
way is recorded as failed in the failed task's stage (``tasks.record_not_run``), as is a run whose worker was lost
(``tasks.TaskLost``: killed, out of memory). A run's per-batch results do not
depend on the engine (tests/test_engines.py compares them bit for bit). Ctrl-C (``KeyboardInterrupt``) stops the
workers and raises; what had finished is in the store, written atomically, and the rest resumes next time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from melonbench.pipeline import experiment
from melonbench.pipeline.engines import Engine, default_jobs, worker_threads
from melonbench.pipeline.tasks import STAGES, Task, TaskLost, cached, record_not_run, run_task
from melonbench.store.paths import results_dir

Hooks = Callable[[Task], AbstractContextManager[experiment.RunHooks]]


class Backend(Protocol):
    """What the loop of :func:`execute` needs from an engine."""

    capacity: int  # how many tasks may run at once

    def submit(self, task: Task) -> None: ...

    def wait(self) -> list[tuple[Task, Any]]:
        """Block until at least one submitted task has finished; its result, or the exception it raised."""
        ...

    def close(self, cancel: bool) -> None:
        """Release the workers; ``cancel``: stop the running tasks first (Ctrl-C)."""
        ...


class _InProcess:
    """One task at a time in this process, with its progress hooks."""

    capacity = 1

    def __init__(self, results: Path | None, hooks: Hooks | None) -> None:
        self.results, self.hooks, self.queue = results, hooks, []

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def wait(self) -> list[tuple[Task, Any]]:
        task = self.queue.pop(0)
        with self.hooks(task) if self.hooks is not None else contextlib.nullcontext(experiment.RunHooks()) as h:
            try:
                return [(task, run_task(task, self.results, h))]
            except Exception as exc:
                return [(task, exc)]

    def close(self, cancel: bool) -> None:
        self.queue.clear()


def resolve_device(engine: Engine, device: str) -> str:
    """The device a grid's tasks run on, as the workers see it: ``auto`` on Ray becomes ``cuda`` when the cluster
    has GPUs (the driver may have none), else ``cpu``; the local engine resolves it as a run does."""
    if device != "auto":
        return device
    if engine.name == "ray":
        from melonbench.pipeline import ray_engine

        return ray_engine.cluster_device(engine)
    return experiment.resolve_device(device).type


def execute(
    tasks: list[Task],
    results: Path | None = None,
    engine: Engine | None = None,
    hooks: Hooks | None = None,
    on_done: Callable[[Task, Any], None] | None = None,
) -> dict[str, Any]:
    """Run ``tasks`` (``plan``'s order) with ``engine`` (default: local, one job); return every task's result.

    A task's result is what ``tasks.run_task`` returns (for one found in the store, ``tasks.cached``'s), or the
    exception it raised; a task whose need failed is not run and has that exception as its result.
    ``on_done(task, result)`` is called, in this process, as each task finishes (the found ones first, in order);
    ``hooks(task)`` gives the progress hooks of a task run in this process (one job only).
    """
    engine = engine or Engine()
    engine.check()
    by_key = {task.key: task for task in tasks}
    for task in tasks:
        missing = [k for k in task.needs if k not in by_key]
        if missing:
            raise ValueError(f"task {task.key} needs tasks that are not in the grid: {', '.join(missing)}")
    done: dict[str, Any] = {}
    origin: dict[str, Task] = {}  # the task whose failure a failed or skipped task carries
    todo = _still_to_do(tasks, results or results_dir(), done)
    for task in tasks:
        if task.key in done and on_done is not None:
            on_done(task, done[task.key])
    if not todo:
        return done
    backend = _backend(engine, todo, results, hooks)
    waiting, running = list(todo), 0
    try:
        while waiting or running:
            ready = [t for t in waiting if all(k in done for k in t.needs)]
            for task in ready:
                failed = [k for k in task.needs if isinstance(done[k], BaseException)]
                if failed:
                    waiting.remove(task)
                    done[task.key], origin[task.key] = done[failed[0]], origin[failed[0]]
                    record_not_run(task, results, STAGES[origin[task.key].kind], done[task.key])
                    if on_done is not None:
                        on_done(task, done[task.key])
                elif running < backend.capacity:
                    waiting.remove(task)
                    backend.submit(task)
                    running += 1
            if not running:
                if waiting and not ready:  # cannot happen with plan()'s tasks; never spin on a broken list
                    raise ValueError(f"tasks wait for each other: {', '.join(t.key for t in waiting)}")
                continue
            for task, result in backend.wait():
                running -= 1
                done[task.key] = result
                origin[task.key] = task
                if isinstance(result, TaskLost):
                    record_not_run(task, results, "worker", result)
                if on_done is not None:
                    on_done(task, result)
    except BaseException:
        backend.close(cancel=True)
        raise
    backend.close(cancel=False)
    return done


def _still_to_do(tasks: list[Task], results: Path, done: dict[str, Any]) -> list[Task]:
    """The tasks to run, in order; fills ``done`` with those the store already holds. A pre-training or meta-model
    that only finished runs need is neither run nor looked up."""
    fingerprints: dict[str, str] = {}
    wanted: set[str] = set()
    for task in reversed(tasks):  # runs first: what they need comes before them
        if task.kind != "run" and task.key not in wanted:
            continue
        name = task.config.dataset
        if name not in fingerprints:
            fingerprints[name] = experiment.dataset_fingerprint(experiment.load_or_generate(name))
        found = cached(task, results, fingerprints[name])
        if found is not None:
            done[task.key] = found
        else:
            wanted.update(task.needs)
    return [t for t in tasks if t.key not in done and (t.kind == "run" or t.key in wanted)]


def _backend(engine: Engine, tasks: list[Task], results: Path | None, hooks: Hooks | None) -> Backend:
    if engine.name == "ray":
        from melonbench.pipeline import ray_engine

        return ray_engine.RayBackend(engine, tasks, results)
    device = tasks[0].config.device
    jobs = min(engine.jobs or default_jobs(device), len(tasks))
    if jobs == 1 and engine.setup is None:
        return _InProcess(results, hooks)
    from melonbench.pipeline import local_engine

    return local_engine.ProcessBackend(jobs, worker_threads(engine, jobs), results, engine.setup)
