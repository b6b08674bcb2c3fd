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


@pytest.mark.parametrize("module", ["strategy_speed", "replay_speed"])
def test_speed_benchmarks_import_without_polars_or_platformdirs(module, tmp_path):
    env = {**os.environ, "MELONBENCH_HOME": str(tmp_path)}
    # strategy_speed imports melonbench lazily, in measure(): import what measure() and main() import
    code = BLOCK.format(module=module)
    if module == "strategy_speed":
        code += "from melonbench.history import History\nfrom melonbench.models import build_model\n"
        code += "from melonbench.negatives import sample_negatives\nfrom melonbench.strategies import STRATEGIES\n"
        code += "from melonbench.stream import Batch\nfrom melonbench.timing import Stopwatch\n"
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
