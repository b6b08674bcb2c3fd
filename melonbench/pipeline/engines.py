"""How a grid's tasks are run (:class:`Engine`, the options ``--engine``, ``--jobs``, ``--address``) and the rules
for what a worker gets: how many workers by default, how many threads each."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

from melonbench.core.errors import MelonbenchError
from melonbench.pipeline import experiment

ENGINES = ("local", "ray")
INSTALL_RAY = "--engine ray needs Ray, which is not installed here: pip install 'melonbench[ray]'"

GPU_RUNS = 4
"""Runs that share one GPU by default (local jobs on a CUDA machine; Ray's GPU fraction is 1/GPU_RUNS). A replay
step at the paper's sizes launches many small kernels (a MeLON-NCF batch: about 10 ms of kernels in 30 ms on an
H100) and leaves the GPU idle between them, so a few runs interleave on it; each holds its dataset and models
(well under 2 GiB for the paper's datasets). ``benchmarks/grid_speed.py --device cuda`` measures the choice."""


@dataclasses.dataclass(frozen=True)
class Engine:
    """How a grid's tasks are run.

    Attributes
    ----------
    name : {"local", "ray"}
        Worker processes on this machine, or Ray tasks.
    jobs : int | None
        ``local``: worker processes (None: :func:`default_jobs`; 1 runs every task in this process). ``ray``
        without ``address``: the CPUs of the local Ray instance (None: every core); with ``address``: ignored, the
        cluster's resources decide.
    address : str | None
        ``ray`` only: the address of a running Ray cluster (``ray start --head`` prints it; ``auto`` finds a local
        one). None starts a local Ray instance for the grid and stops it afterwards.
    threads : int | None
        PyTorch intra-op threads of each task in a worker (None: the cores divided by the jobs for ``local``, 1 for
        ``ray``). A run's results do not depend on it (tests/test_engines.py), only its speed.
    gpu_share : float | None
        ``ray`` only, for runs on CUDA: the fraction of a GPU each task asks for (None: ``1 / GPU_RUNS``).
    setup : str | None
        ``module:function`` called once in every worker before its first task, e.g. to register a strategy that
        is not part of melonbench (workers import melonbench afresh and know only its registry).
    """

    name: str = "local"
    jobs: int | None = None
    address: str | None = None
    threads: int | None = None
    gpu_share: float | None = None
    setup: str | None = None

    def check(self) -> None:
        """One-line errors for options that cannot work, before any work."""
        if self.name not in ENGINES:
            raise MelonbenchError(f"--engine must be local or ray, got '{self.name}'")
        if self.jobs is not None and self.jobs < 1:
            raise MelonbenchError(f"--jobs must be at least 1, got {self.jobs}")
        if self.address is not None and self.name != "ray":
            raise MelonbenchError("--address names a Ray cluster: use it with --engine ray")
        if self.threads is not None and self.threads < 1:
            raise MelonbenchError(f"threads per task must be at least 1, got {self.threads}")
        if self.gpu_share is not None and not 0 < self.gpu_share <= 1:
            raise MelonbenchError(f"the GPU share of a task must lie in (0, 1], got {self.gpu_share}")
        if self.setup is not None and ":" not in self.setup:
            raise MelonbenchError(f"a worker setup is module:function, got '{self.setup}'")
        if self.name == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise MelonbenchError(INSTALL_RAY) from None


def default_jobs(device: str, cores: int | None = None) -> int:
    """Worker processes of ``--engine local`` when ``--jobs`` is not given.

    CPU: 1 on a machine with at most 2 cores (one run already keeps two cores busy with its own threads, and a
    second process only adds a copy of the data), else half the cores, each worker with two threads (a batch's
    tensors are too small for more threads to help much; more runs at once do). CUDA: ``GPU_RUNS`` runs share
    the GPU, at most one per core.
    """
    cores = cores or os.cpu_count() or 1
    if device != "cpu" and experiment.resolve_device(device).type == "cuda":
        return max(1, min(GPU_RUNS, cores))
    return 1 if cores <= 2 else cores // 2


def worker_threads(engine: Engine, jobs: int, cores: int | None = None) -> int:
    """Intra-op threads of each task in a worker: ``engine.threads``, else the cores shared by the jobs."""
    if engine.threads is not None:
        return engine.threads
    if engine.name == "ray":
        return 1
    return max(1, (cores or os.cpu_count() or 1) // jobs)


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for a block (a worker's private store), and put the old value back."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
