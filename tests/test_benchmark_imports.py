"""The speed benchmarks run on GPU machines that have PyTorch but not polars or platformdirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("polars", "platformdirs"):
            raise ImportError("no " + name + " on this machine")
sys.meta_path.insert(0, Block())
sys.path.insert(0, "benchmarks")
import {module}
"""


# what each benchmark imports of melonbench lazily (in functions), imported here too
LAZY = {
    "strategy_speed": ["online.determinism", "online.history", "models", "online.negatives", "strategies"]
    + ["online.stream", "online.timing"],
    "cuda_parity": ["online.determinism", "online.history", "models", "online.negatives", "strategies"]
    + ["strategies.base", "online.stream"],
    "replay_speed": [],
    "fused_tune": ["strategies.melon.fused", "strategies.melon.parts"],
}


@pytest.mark.parametrize("module", sorted(LAZY))
def test_speed_benchmarks_import_without_polars_or_platformdirs(module, tmp_path):
    env = {**os.environ, "MELONBENCH_HOME": str(tmp_path)}
    code = BLOCK.format(module=module) + "".join(f"import melonbench.{name}\n" for name in LAZY[module])
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # the blocker does bite: importing the data layer fails
    failing = subprocess.run(
        [sys.executable, "-c", BLOCK.format(module="melonbench.data.prepare")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "no polars on this machine" in failing.stderr
