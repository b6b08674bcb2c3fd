"""benchmarks/strategy_speed.py: the profile after the timing stays within the stream's full batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import strategy_speed  # noqa: E402


def test_the_stream_has_26_full_online_batches():
    # 33,326 interactions, the last 20 % online (6,666 = 26 × 256 + 10): the short 27th is never timed or profiled
    assert strategy_speed.ONLINE_BATCHES == 26


def test_profile_takes_the_full_batches_left_and_says_when_none_are():
    cpu = torch.device("cpu")
    # 3 warm-up + 20 timed leave 3 full batches: profiled (a GPU run on 2026-11-28 crashed here on the short batch)
    row = strategy_speed._time_batches("default", "bpr", cpu, batches=20, warmup=3, settings=(), profile=2)
    assert "Self CPU time total" in row["profile"]
    row = strategy_speed._time_batches("default", "bpr", cpu, batches=23, warmup=3, settings=(), profile=2)
    assert row["profile"] == "no full batch left to profile after 3 + 23 of 26: lower --batches"


def test_fused_tile_reaches_the_child_processes():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "strategy_speed.py"
    args = ["--strategies", "default", "--models", "bpr", "--batches", "1", "--warmup", "1", "--fused-tile", "16x64x1t"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "measured default/bpr" in proc.stderr  # the child took the option (an unknown one would fail it)
    assert proc.stdout.rstrip().endswith("MeLON's fused dense step with the tile 16x64x1t")


def _row(strategy, model, update_ms, peak_gib):
    return {"strategy": strategy, "model": model, "update_s": update_ms / 1e3, "peak_bytes": peak_gib * 2**30}


def test_issue_20_targets_met_and_not_met():
    status = strategy_speed.target_status
    # MeLON: 2 ms (BPR), 4 ms (NCF); its settings and variants keep them
    assert status(_row("melon", "bpr", 1.9, 0.17)) == "met"
    assert status(_row("melon", "bpr", 2.1, 0.17)) == "not met (update 2.1 ms > 2 ms)"
    assert status(_row("melon@fused_role=false", "ncf", 3.9, 0.31)) == "met"
    assert status(_row("melon", "ncf", 12.2, 0.6)) == "not met (update 12.2 ms > 4 ms; peak 0.60 GiB > 0.5 GiB)"
    # every baseline: 2 ms (BPR), 3 ms (NCF)
    assert status(_row("mwnet", "ncf", 2.9, 0.2)) == "met"
    assert status(_row("mwnet", "ncf", 3.1, 0.2)) == "not met (update 3.1 ms > 3 ms)"
    assert status(_row("default", "bpr", 0.3, 0.51)) == "not met (peak 0.51 GiB > 0.5 GiB)"
    assert status(_row("count", "pop", 0.1, 0.0)) == "no target"


def test_json_rows_for_grid_scale(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "strategy_speed.py"
    out = tmp_path / "speed.json"
    args = ["--strategies", "default", "--models", "bpr", "--batches", "1", "--warmup", "1", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert (row["strategy"], row["model"], row["device"]) == ("default", "bpr", "cpu")
    assert row["update_s"] > 0 and "profile" not in row
