"""``--engine ray``: every task a Ray task, on a local Ray instance or on an existing cluster (``--address``).

Nothing assumes a shared filesystem (``pipeline.shipping``): the driver puts each file a task reads into Ray's
object store once (the prepared dataset is shared by every task; a node fetches it once), the task runs in a
private store on its worker, and the files it made come back as its return value, which the driver writes into
its own store. A task asks Ray for one CPU and, on CUDA, ``1 / engines.GPU_RUNS`` of a GPU. A task
whose worker is lost (killed, out of memory, a node gone) is not retried: it fails alone (``tasks.TaskLost``) and
``--retry-failed`` runs it again. On Ctrl-C the running tasks are cancelled; a run they had not finished resumes
from the last checkpoint the driver holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from melonbench.core.errors import MelonbenchError
from melonbench.pipeline import experiment
from melonbench.pipeline.engines import GPU_RUNS, INSTALL_RAY, Engine, setup_function, worker_threads
from melonbench.pipeline.shipping import inputs, land, run_in_private_store
from melonbench.pipeline.tasks import Task, TaskLost, run_task
from melonbench.store.paths import results_dir


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MelonbenchError(INSTALL_RAY) from None
    return ray


_connected_here = False  # whether connect() made this process's Ray connection (then the grid's end closes it)


def connect(engine: Engine) -> None:
    """Connect to the cluster at ``engine.address``, or start a local Ray instance, unless this process is
    connected already (a caller that runs several grids on one Ray instance, the tests).

    The grid disconnects when it ends (:meth:`RayBackend.close`) if this function connected, which stops a local
    instance.
    """
    global _connected_here
    ray = _ray()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    try:
        if engine.address is not None:
            ray.init(address=engine.address, **options)
        else:
            # "local": a new instance even where a cluster runs on this machine (ray.init alone would join it)
            ray.init(address="local", num_cpus=engine.jobs or os.cpu_count(), **options)
    except ConnectionError as exc:
        raise MelonbenchError(f"cannot reach the Ray cluster at {engine.address}: {exc}") from None
    _connected_here = True


def disconnect() -> None:
    """Close the connection :func:`connect` made (stopping a local instance it started); keep anyone else's."""
    global _connected_here
    if _connected_here:
        _ray().shutdown()
        _connected_here = False


def cluster_device(engine: Engine) -> str:
    """``cuda`` when the cluster has GPUs, else ``cpu`` (what ``--device auto`` means for a Ray grid)."""
    connect(engine)  # kept for the grid's tasks
    return "cuda" if _ray().cluster_resources().get("GPU", 0) > 0 else "cpu"


def run_shipped(task: Task, names: list[str], threads: int, setup: str | None, *blobs: bytes) -> Any:
    """The body of every Ray task: ``task`` in a private store holding ``names`` (their bytes in ``blobs``)."""
    torch.set_num_threads(threads)
    fn = setup_function(setup)
    if fn is not None:
        fn()
    files = dict(zip(names, blobs, strict=True))
    return run_in_private_store(files, lambda results: run_task(task, results, experiment.RunHooks()))


class RayBackend:
    """Ray tasks (``pipeline.executor.Backend``)."""

    def __init__(self, engine: Engine, tasks: list[Task], results: Path | None) -> None:
        ray = _ray()
        setup_function(engine.setup)
        self.ray, self.engine = ray, engine
        connect(engine)
        self.results = results or results_dir()
        self.threads = worker_threads(engine, 1)
        self.remote = ray.remote(run_shipped)
        self.capacity = max(1, int(ray.cluster_resources().get("CPU", 1) // self.threads))
        self.fingerprints = {
            name: experiment.dataset_fingerprint(experiment.load_or_generate(name))
            for name in {t.config.dataset for t in tasks}
        }
        self.refs: dict[tuple[Path, int, int], Any] = {}  # (file, size, mtime): the file's bytes, put once
        self.running: dict[Any, Task] = {}

    def _ref(self, path: Path) -> Any:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self.refs:
            self.refs[key] = self.ray.put(path.read_bytes())
        return self.refs[key]

    def submit(self, task: Task) -> None:
        files = inputs(task, self.results, self.fingerprints[task.config.dataset])
        gpu = task.config.device.startswith("cuda")
        options = {
            "num_cpus": self.threads,
            "num_gpus": 1 / GPU_RUNS if gpu else 0,
            "max_retries": 0,
            "name": task.key,
        }
        refs = [self._ref(path) for path in files.values()]
        ref = self.remote.options(**options).remote(task, list(files), self.threads, self.engine.setup, *refs)
        self.running[ref] = task

    def wait(self) -> list[tuple[Task, Any]]:
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        out = []
        for ref in ready:
            task = self.running.pop(ref)
            try:
                value, made, removed = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as exc:  # the task's code raised outside the run (its setup)
                out.append((task, RuntimeError(f"the Ray task running {task.key} failed: {exc.cause!r}")))
                continue
            except self.ray.exceptions.RayError as exc:  # its worker died, its node was lost
                out.append((task, TaskLost(f"the Ray task running {task.key} was lost ({type(exc).__name__})")))
                continue
            out.append((task, land(value, made, removed, self.results)))
        return out

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in self.running:
                self.ray.cancel(ref, force=True)
            self.running.clear()
        disconnect()
