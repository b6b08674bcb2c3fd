"""benchmarks/grid_scale.py: a tiny grid's breakdown accounts for its measured time, and the extrapolation from a
quick grid to the full one does the arithmetic worked out by hand below."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from grid_scale import PHASES, RunFigures, extrapolate, main  # noqa: E402


def test_a_tiny_grid_breakdown_adds_up_to_its_measured_time(tmp_path, monkeypatch):
    monkeypatch.setenv("MELONBENCH_HOME", str(tmp_path / "unused"))
    out = tmp_path / "figures.json"
    argv = ["--quick", "--scale", "0.003", "--models", "bpr", "--strategies", "default,metasgd", "--epochs", "2"]
    work = tmp_path / "work"
    figures = main(
        [*argv, "--references", "pop", "--device", "cpu", "--workdir", str(work), "--json", str(out), "--keep"]
    )

    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    # ranking and update are the runs' own timing columns, summed
    stored = {}
    for run in (Path(figures["store"]) / "grid-results").iterdir():
        config = json.loads((run / "manifest.json").read_text())["config"]
        batches = pl.read_parquet(run / "batches.parquet")
        stored[(config["strategy"], config["model"])] = batches["eval_s"].sum(), batches["update_s"].sum()
    runs = {(r["strategy"], r["model"]): r for r in figures["runs"]}
    for pair, (ranking, update) in stored.items():
        assert (runs[pair]["ranking"], runs[pair]["update"]) == pytest.approx((ranking, update), rel=1e-12), pair
    phases = figures["breakdown_s"]
    assert list(phases) == list(PHASES)
    assert all(seconds >= 0 for seconds in phases.values()), phases
    for phase in ("prepare", "pre-training", "meta pre-training", "replay: ranking", "replay: update", "report"):
        assert phases[phase] > 0, phase
    # The phases are timed apart from the total (their own clocks, and the runs' batches.parquet columns): what
    # they miss is the grid's loop between runs. Tolerance: 2 % of the total and 0.2 s of scheduling noise.
    assert abs(figures["unattributed_s"]) <= 0.02 * figures["total_s"] + 0.2, figures
    assert set(runs) == {("default", "bpr"), ("metasgd", "bpr"), ("count", "pop")}
    assert runs[("default", "bpr")]["pretrain_epochs"] == 2  # trained here, then cached for metasgd
    assert runs[("metasgd", "bpr")]["pretrain_epochs"] == 0
    assert runs[("metasgd", "bpr")]["meta_epochs"] == 1  # --quick: one meta epoch
    assert figures["stream"]["users"] == 182  # round(60,543 × 0.003): every simulated user is kept
    assert figures["full_grid"]["seeds"] == 5


def _run(strategy, model, load, pretrain, epochs, epoch_s, setup, meta, meta_epochs, ranking, update, other):
    return RunFigures(
        strategy, model, 0, load, pretrain, epochs, epoch_s, setup, meta, meta_epochs, ranking, update, other, 10
    )


MEASURED = [  # a quick grid: seed 0 of default (trains BPR, draws the negatives), melon, and the pop reference
    _run("default", "bpr", 3.0, 12.0, 2, 5.0, 0.5, 0.0, 0, 1.0, 2.0, 0.5),
    _run("melon", "bpr", 1.0, 0.4, 0, 0.0, 0.5, 30.0, 1, 1.0, 10.0, 0.5),
    _run("count", "pop", 1.0, 0.2, 0, 0.0, 0.0, 0.0, 0, 0.5, 0.1, 0.5),
]
GRID = [(s, "bpr", seed) for seed in (0, 1) for s in ("default", "melon", "mwnet", "eals")]
GRID += [("count", "pop", seed) for seed in (0, 1)]
PER_BATCH = {("default", "bpr"): 0.001, ("eals", "bpr"): 0.002, ("melon", "bpr"): 0.010, ("mwnet", "bpr"): 0.004}


def test_extrapolation_to_the_full_grid_matches_the_hand_computation():
    estimate, notes = extrapolate(
        MEASURED, GRID, {"melon", "mwnet"}, {"melon": 3, "mwnet": 3}, 10, 7.0, 0.3, 4.0, PER_BATCH
    )
    expected = {
        "prepare": 7.0,
        "grid set-up": 0.3,
        # every run pays the others' median load (1 s); each seed's first run 2 s more (the negatives): 10·1 + 2·2
        "load": 14.0,
        # per seed: BPR trained once, 12 s measured + 8 more epochs of 5 s = 52; 3 cached loads of 0.4; pop 0.2
        "pre-training": 2 * (52.0 + 3 * 0.4 + 0.2),
        "set-up": 2 * (0.5 * 4 + 0.0),
        # melon 30 s per epoch × 3; mwnet as melon × 0.004 / 0.010
        "meta pre-training": 2 * (90.0 + 36.0),
        "replay: ranking": 2 * (1.0 * 4 + 0.5),
        # default 2, melon 10, mwnet 10 × 0.4, eals as default × 0.002 / 0.001, pop 0.1
        "replay: update": 2 * (2.0 + 10.0 + 4.0 + 4.0 + 0.1),
        "replay: other": 2 * (0.5 * 4 + 0.5),
        "report": 4.0 * 10 / 3,  # it reads every run: 10 runs instead of 3
    }
    assert estimate == pytest.approx(expected, abs=1e-9)
    assert sum(estimate.values()) == pytest.approx(451.633333333, abs=1e-6)
    assert notes == [
        "eals/bpr: default's figures, update and meta pre-training × 2.00 (per-batch update)",
        "mwnet/bpr: melon's figures, update and meta pre-training × 0.40 (per-batch update)",
    ]


def test_without_per_batch_figures_a_stand_in_is_taken_unscaled():
    estimate, notes = extrapolate(MEASURED, GRID, {"melon", "mwnet"}, {"melon": 3, "mwnet": 3}, 10, 7.0, 0.3, 4.0)
    assert estimate["meta pre-training"] == pytest.approx(2 * (90.0 + 90.0))
    assert estimate["replay: update"] == pytest.approx(2 * (2.0 + 10.0 + 10.0 + 2.0 + 0.1))
    assert notes == ["eals/bpr: default's figures, unscaled", "mwnet/bpr: melon's figures, unscaled"]


def test_the_fresh_store_is_removed_afterwards_unless_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MELONBENCH_HOME", str(tmp_path / "unused"))
    argv = ["--scale", "0.003", "--models", "bpr", "--strategies", "default", "--references", "none", "--seeds", "1"]
    figures = main([*argv, "--epochs", "1", "--device", "cpu", "--workdir", str(tmp_path / "work")])
    assert not Path(figures["store"]).exists()
    assert "full_grid" not in figures  # nothing to extrapolate without --quick
