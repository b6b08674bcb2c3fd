"""``--engine local --jobs N``: N worker processes on this machine, each running one task at a time.

Workers are started with ``spawn`` (a fresh interpreter: a forked child of a process whose PyTorch thread pool
has started can hang), share the store through the filesystem (``MELONBENCH_HOME`` is inherited), and run every
task with ``threads`` intra-op threads. A worker that dies (killed, out of memory) fails its own task alone, with
a ``tasks.TaskLost`` naming it, and a fresh worker takes its place. On Ctrl-C the terminal interrupts the workers
too (one process group); :meth:`ProcessBackend.close` interrupts those still running (SIGINT, so that an atomic
write removes its temporary file) and ends any left after a grace period. Everything a task wrote before is
whole: an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from melonbench.pipeline.engines import setup_function, transportable
from melonbench.pipeline.experiment import RunHooks
from melonbench.pipeline.tasks import Task, TaskLost, run_task

GRACE_S = 10.0  # how long an interrupted worker may take to stop before it is killed


def serve(conn: Connection, threads: int, results: Path | None, setup: str | None) -> None:
    """A worker's loop: receive a task, run it, send back its result or its exception; ``None`` ends it."""
    import torch

    torch.set_num_threads(threads)
    fn = setup_function(setup)
    if fn is not None:
        fn()
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:
                return
            if task is None:
                return
            try:
                reply: tuple[str, Any] = ("ok", run_task(task, results, RunHooks()))
            except Exception as exc:
                reply = ("error", transportable(exc))
            conn.send(reply)
    except KeyboardInterrupt:  # Ctrl-C: the driver knows, and what was written is whole
        return


@dataclasses.dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    task: Task | None = None


class ProcessBackend:
    """``jobs`` spawned worker processes (``pipeline.executor.Backend``)."""

    def __init__(self, jobs: int, threads: int, results: Path | None, setup: str | None) -> None:
        setup_function(setup)  # a bad name fails here, in one line, not in every worker
        self.capacity, self.threads, self.results, self.setup = jobs, threads, results, setup
        self.context = multiprocessing.get_context("spawn")
        self.workers = [self._start() for _ in range(jobs)]

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=serve, args=(child, self.threads, self.results, self.setup), daemon=True, name="melonbench-worker"
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def submit(self, task: Task) -> None:
        worker = next(w for w in self.workers if w.task is None)
        worker.task = task
        worker.conn.send(task)

    def wait(self) -> list[tuple[Task, Any]]:
        busy = [w for w in self.workers if w.task is not None]
        ready = set(wait_any([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        out = []
        for worker in busy:
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            task, worker.task = worker.task, None
            assert task is not None
            try:
                if not worker.conn.poll():
                    raise EOFError
                _, value = worker.conn.recv()  # ("ok", result) or ("error", exception)
                out.append((task, value))
                continue
            except (EOFError, OSError):
                pass
            worker.process.join(GRACE_S)
            code = worker.process.exitcode
            out.append((task, TaskLost(f"the worker process running {task.key} died (exit code {code})")))
            self.workers[self.workers.index(worker)] = self._start()
        return out

    def close(self, cancel: bool) -> None:
        for worker in self.workers:
            if cancel and worker.process.is_alive() and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGINT)
            elif not cancel:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self.workers:
            worker.process.join(GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
