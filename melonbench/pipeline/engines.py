"""How a grid's tasks are run (:class:`Engine`: the options ``--engine``, ``--jobs``, ``--address``) and what every
worker shares, whichever engine starts it: how many workers by default, how many threads each, the setup it calls
first, and how an exception travels back to the driver."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import traceback
from collections.abc import Callable

from melonbench.core.errors import MelonbenchError
from melonbench.pipeline import experiment

ENGINES = ("local", "ray")
INSTALL_RAY = "--engine ray needs Ray, which is not installed here: pip install 'melonbench[ray]'"

GPU_RUNS = 4
"""Runs that share one GPU by default (local jobs on a CUDA machine; each Ray task asks for 1/GPU_RUNS of a GPU). A
replay step at the paper's sizes launches many small kernels and leaves the GPU idle between them, so a few runs
interleave on it; each holds its dataset and models (well under 2 GiB for the paper's datasets). Not measured yet:
``benchmarks/grid_speed.py --device cuda --engines local:1,local:2,local:4,local:8`` does."""


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
    setup : str | None
        ``module:function`` called once in every worker before its first task, e.g. to register a strategy that
        is not part of melonbench (workers import melonbench afresh and know only its registry).
    """

    name: str = "local"
    jobs: int | None = None
    address: str | None = None
    setup: str | None = None

    def check(self) -> None:
        """One-line errors for options that cannot work, before any work."""
        if self.name not in ENGINES:
            raise MelonbenchError(f"--engine must be local or ray, got '{self.name}'")
        if self.jobs is not None and self.jobs < 1:
            raise MelonbenchError(f"--jobs must be at least 1, got {self.jobs}")
        if self.address is not None and self.name != "ray":
            raise MelonbenchError("--address names a Ray cluster: use it with --engine ray")
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
    second process only adds a copy of the data; benchmarks/grid_speed.py), else half the cores, each worker with
    two threads (a batch's tensors are too small for more threads to help much; more runs at once do). CUDA:
    ``GPU_RUNS`` runs share the GPU, at most one per core.
    """
    cores = cores or os.cpu_count() or 1
    if device != "cpu" and experiment.resolve_device(device).type == "cuda":
        return max(1, min(GPU_RUNS, cores))
    return 1 if cores <= 2 else cores // 2


def worker_threads(engine: Engine, jobs: int, cores: int | None = None) -> int:
    """PyTorch intra-op threads of each task in a worker: 1 for a Ray task (it asks Ray for one CPU), else the
    machine's cores shared by the jobs. A run's results do not depend on it, only its speed."""
    if engine.name == "ray":
        return 1
    return max(1, (cores or os.cpu_count() or 1) // jobs)


def setup_function(setup: str | None) -> Callable[[], object] | None:
    """The callable named ``module:function`` (None for none); a one-line error when it cannot be found."""
    if setup is None:
        return None
    module, _, name = setup.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise MelonbenchError(f"worker setup '{setup}' cannot be found ({type(exc).__name__}: {exc})") from None


def transportable(exc: Exception) -> Exception:
    """``exc`` as it can cross a process boundary, with its traceback as a note (the receiver has none)."""
    exc.add_note("raised in a worker, where its traceback read:\n" + "".join(traceback.format_exception(exc)))
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
