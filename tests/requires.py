"""Optional dependencies of the tests: skipped where the package is optional, a failure where it is promised."""

from __future__ import annotations

import importlib
import platform
import sys
from types import ModuleType

import pytest

# Where pyproject.toml's dev extra installs Triton (``sys_platform == 'linux' and platform_machine == 'x86_64'``).
TRITON_PLATFORMS = {("linux", "x86_64")}


def triton(system: str = sys.platform, machine: str = platform.machine()) -> ModuleType:
    """Import Triton, whose kernels are MeLON's CUDA default (``strategies/melon/fused.py``).

    On Linux x86-64 the dev extra installs it, so a missing Triton there fails the test instead of skipping
    it: CI must never pass without having run the fused kernels' tests. Elsewhere the test is skipped.
    """
    try:
        return importlib.import_module("triton")
    except ImportError:
        if (system, machine) in TRITON_PLATFORMS:
            pytest.fail(
                f"Triton is not installed, but the dev extra installs it on {system} {machine} and the fused kernels' "
                "tests need it: pip install -e '.[dev]'",
                pytrace=False,
            )
        pytest.skip(f"Triton is not installed (the dev extra installs it on Linux x86-64 only, not {system} {machine})")
