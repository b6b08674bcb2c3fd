"""Honest wall-clock timing of device work, and peak device memory.

On CUDA, kernels run asynchronously: a timer read right after a launch measures the launch, not the work. The
:class:`Stopwatch` therefore synchronises the device before starting and before stopping each section. On the
CPU no synchronisation is needed.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator, Sequence

import torch


class Stopwatch:
    """Accumulates seconds per named section.

    Parameters
    ----------
    device : torch.device | str
        The device whose work is timed.

    Examples
    --------
    >>> sw = Stopwatch("cpu")
    >>> with sw.section("eval"):
    ...     pass
    >>> sorted(sw.pop())
    ['eval']
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the body and add its seconds to ``name`` (also when the body raises)."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        """Return the seconds accumulated per section since the last call, and start again from zero."""
        seconds, self._seconds = self._seconds, {}
        return seconds


def device_name(device: torch.device) -> str:
    """The device a figure was measured on, in words: the GPU's name, or the CPU's architecture and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """Peak memory allocated by tensors on a CUDA device since the last reset; ``None`` on other devices."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start measuring :func:`peak_memory_bytes` afresh (no effect on other devices than CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def untimed_batches(warmup: int, resumed_at: Sequence[int] = ()) -> set[int]:
    """Batches left out of the timing medians: the first ``warmup`` of the run and of each resumed process.

    A run flags its own first ``warmup`` batches in its rows (the ``warmup`` column, the same whether or not it was
    interrupted, so a resumed run's rows equal an uninterrupted one's); a process that resumed at batch ``r`` warms
    up again (allocations, compilation, CUDA graph capture), so batches ``r … r + warmup − 1`` are left out too.
    """
    return {start + i for start in (0, *resumed_at) for i in range(warmup)}
