"""benchmarks/fused_tune.py, the tile sweep for the next GPU call, run here in Triton's interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

import requires
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fused_tune  # noqa: E402

from melonbench.strategies.melon import fused as melon_fused  # noqa: E402


def test_tiles_agree_with_dense_step_and_a_refused_tile_is_a_row(monkeypatch):
    requires.triton()
    seen = []  # the tile each fused call ran with
    apply = melon_fused.FusedDenseStep.apply
    monkeypatch.setattr(
        melon_fused.FusedDenseStep,
        "apply",
        lambda *a: seen.append((melon_fused.BLOCK, melon_fused.ROWS, melon_fused.TILED)) or apply(*a),
    )
    before = (melon_fused.BLOCK, melon_fused.ROWS, melon_fused.LAUNCH, melon_fused.TILED)
    tiles = "32x4x2,16x128x1,32x4x2t,48x4x2"
    args = ["--device", "cpu", "--rows", "6", "--columns", "45", "--tiles", tiles, "--repeats", "1"]
    dense, *tiles, refused = fused_tune.main(args)
    assert dense["tile"] == "DenseStep" and dense["error"] == 0.0
    for row in tiles:  # 45 columns over two blocks of 32 (or three of 16), 6 rows over one or two row blocks
        assert row["error"] <= 1e-5 and row["repeats"], row
    assert refused["tile"] == "48x4x2" and "power of 2" in refused["failure"]  # tl.arange needs powers of two
    assert sorted(set(seen)) == [(16, 128, False), (32, 4, False), (32, 4, True), (48, 4, False)]
    after = (melon_fused.BLOCK, melon_fused.ROWS, melon_fused.LAUNCH, melon_fused.TILED)
    assert after == before  # the sweep leaves the tile as it was


def test_inputs_have_padding_rows_and_unreached_weights():
    inputs = fused_tune.make_inputs(16, 200, 16, torch.device("cpu"))
    assert inputs["valid"].tolist() == [1.0] * 14 + [0.0] * 2
    assert (inputs["grads"][:, 0] == 0).all() and (inputs["grads"][:, 97] == 0).all()
    assert inputs["grads"].shape == (16, 200) and inputs["per_x"].shape == (16, 16)


def test_best_is_the_fastest_tile_that_agrees_and_repeats():
    rows = [
        {"tile": "DenseStep", "forward_ms": 1.0, "both_ms": 0.5, "error": 0.0, "repeats": True},  # not a tile
        {"tile": "32x128x2", "forward_ms": 1.0, "both_ms": 4.0, "error": 5e-7, "repeats": True},
        {"tile": "32x128x4", "forward_ms": 1.0, "both_ms": 3.0, "error": 2e-6, "repeats": True},  # the one
        {"tile": "64x128x8", "forward_ms": 1.0, "both_ms": 2.0, "error": 3e-4, "repeats": True},  # disagrees
        {"tile": "16x128x2t", "forward_ms": 1.0, "both_ms": 1.0, "error": 1e-7, "repeats": False},  # not repeatable
        {"tile": "48x4x2", "failure": "ValueError"},
    ]
    assert fused_tune.best(rows) == "32x128x4"
    assert fused_tune.best(rows[:1] + rows[3:]) is None


def test_set_tile_sets_the_module_constants(monkeypatch):
    for name in ("BLOCK", "ROWS", "TILED", "LAUNCH"):
        monkeypatch.setattr(melon_fused, name, getattr(melon_fused, name))  # restored after the test
    fused_tune.set_tile("64x256x8t")
    assert (melon_fused.BLOCK, melon_fused.ROWS, melon_fused.TILED) == (64, 256, True)
    assert melon_fused.LAUNCH == {"num_warps": 8, "enable_fp_fusion": True}
    fused_tune.set_tile("16x128x1")
    tile = (melon_fused.BLOCK, melon_fused.ROWS, melon_fused.TILED, melon_fused.LAUNCH["num_warps"])
    assert tile == (16, 128, False, 1)
