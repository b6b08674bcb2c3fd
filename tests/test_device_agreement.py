"""benchmarks/device_agreement.py's comparison: a difference above the tolerance, or a run that failed on one device
only, is flagged and counted; equal stores are not."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from device_agreement import compare  # noqa: E402


def store(values: dict) -> dict:
    return {key: (v if isinstance(v, str) else {"sampled_hr@5": v, "full_hr@5": v / 10}) for key, v in values.items()}


def test_equal_stores_agree(capsys):
    cpu = store({("bpr", "default", 0): 0.20, ("bpr", "default", 1): 0.22})
    assert compare({"cpu": cpu, "cuda": dict(cpu)}, 0.01) == 0
    assert "0 (run, metric) pairs" in capsys.readouterr().out


def test_a_difference_beyond_the_tolerance_and_a_one_sided_failure_are_counted(capsys):
    cpu = store({("bpr", "melon", 0): 0.300, ("bpr", "melon", 1): 0.320, ("bpr", "frozen", 0): 0.05})
    cuda = store({("bpr", "melon", 0): 0.315, ("bpr", "melon", 1): "failed: diverged", ("bpr", "frozen", 0): 0.05})
    # melon seed 0: |Δ| 0.015 > 0.01 on sampled (full: 0.0015, within); seed 1: failed on CUDA only, both metrics
    assert compare({"cpu": cpu, "cuda": cuda}, 0.01) == 3
    out = capsys.readouterr().out
    assert "0.0150 *" in out and "0.0015" in out and "3 (run, metric) pairs" in out
