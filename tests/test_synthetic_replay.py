"""End to end on the built-in synthetic drifting stream: online updates must pay off, and it must show drift.

Random ranking gives HR@5 = 5/100 = 0.05 under the sampled protocol (1 positive among 100 candidates).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig
from melonbench.data.prepare import prepare_dataset
from melonbench.pipeline.experiment import run_experiment

PRETRAIN = PretrainConfig(epochs=20, patience=5)


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    home = tmp_path_factory.mktemp("synthetic_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MELONBENCH_HOME", str(home))
        prepare_dataset("synthetic", PrepareOptions())
        base = RunConfig(dataset="synthetic", pretrain=PRETRAIN)
        configs = {
            "frozen": dataclasses.replace(base, strategy="frozen"),
            "default": dataclasses.replace(base, strategy="default"),
            "default-lr0.01": dataclasses.replace(base, strategy="default", strategy_params=(("lr", "0.01"),)),
        }
        return {name: run_experiment(config, home / "results") for name, config in configs.items()}


def test_default_beats_a_frozen_model_and_both_beat_random(synthetic_runs):
    frozen = synthetic_runs["frozen"].manifest["summary"]
    default = synthetic_runs["default"].manifest["summary"]
    tuned = synthetic_runs["default-lr0.01"].manifest["summary"]
    for protocol in ("sampled", "full"):
        # The paper's online lr (1e-3, one Adam step per batch) moves the model little: a small but real gain
        # (same negatives, same checkpoint: the comparison is paired) ...
        assert default[f"{protocol}_hr@5"] > frozen[f"{protocol}_hr@5"], protocol
        # ... and a larger online step adapts clearly (measured on seed 0: sampled HR@5 0.216 frozen, 0.220
        # default, 0.267 with lr 0.01).
        assert tuned[f"{protocol}_hr@5"] > frozen[f"{protocol}_hr@5"] + 0.01, protocol
    assert frozen["sampled_hr@5"] > 0.05 + 0.05


def test_a_frozen_model_degrades_over_the_online_part(synthetic_runs):
    import polars as pl

    rows = pl.read_parquet(synthetic_runs["frozen"].path / "batches.parquet").filter(pl.col("split") == "test")
    hr = rows["sampled_hr@5"].to_numpy()
    quarter = len(hr) // 4
    assert np.mean(hr[:quarter]) > np.mean(hr[-quarter:]) + 0.05  # measured on seed 0: 0.275 vs 0.172
