"""Bit-for-bit repeatable runs on CUDA.

On the CPU every kernel melonbench uses gives the same bits on every run. On CUDA some do not: ``index_add``
and friends sum with atomic additions, whose order changes from run to run (measured on an H200: MeLON-NCF's
per-batch NDCG moved by 9e-5 between two seeded runs). PyTorch has deterministic versions of these kernels;
:func:`deterministic` switches them on for a block and puts the previous setting back afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Run the block with PyTorch's deterministic algorithms when ``device`` is a CUDA device; else change nothing.

    ``warn_only``: an operation that has no deterministic CUDA kernel warns (naming itself) instead of stopping a
    run hours in. ``CUBLAS_WORKSPACE_CONFIG`` is set (unless the user set it) because PyTorch asks for it in
    deterministic mode; cuBLAS reads it when its first handle is made, so in a process that used cuBLAS before,
    PyTorch's check is satisfied but the setting only applies to new handles.
    """
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
