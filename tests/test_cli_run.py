"""`melonbench run` / `pretrain` option parsing reaches the library exactly (the engine is patched out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.core.config import PretrainConfig, RunConfig
from melonbench.pipeline import experiment
from melonbench.pipeline.experiment import RunResult

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch):
    calls = []

    def fake_run(config, results_root=None, hooks=None):
        calls.append((config, results_root))
        return RunResult(
            f"run-{config.seed}",
            Path("/nowhere"),
            "finished",
            {"summary": {"sampled_hr@5": 0.5}, "config": {"strategy": config.strategy}},
        )

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    return calls


def test_defaults_give_the_default_run_config(captured):
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert captured == [(RunConfig(), None)]


def test_every_option_reaches_run_config(captured, tmp_path):
    args = [
        "run",
        "--dataset",
        "grocery",
        "--model",
        "ncf",
        "--strategy",
        "default",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--split",
        "validation",
        "--protocol",
        "paper",
        "--batch-size",
        "128",
        "--negatives",
        "49",
        "--k",
        "1",
        "--k",
        "50",
        "--set",
        "lr=0.01",
        "--sparse-updates",
        "--warmup",
        "2",
        "--checkpoint-every",
        "5",
        "--results",
        str(tmp_path),
        "--epochs",
        "3",
        "--lr",
        "0.005",
        "--weight-decay",
        "0",
        "--patience",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = RunConfig(
        dataset="grocery",
        model="ncf",
        strategy="default",
        seed=7,
        device="cpu",
        split="validation",
        protocol="paper",
        batch_size=128,
        n_negatives=49,
        ks=(1, 5, 10, 20, 50),
        warmup=2,
        strategy_params=(("lr", "0.01"), ("sparse", "true")),
        pretrain=PretrainConfig(epochs=3, lr=0.005, weight_decay=0.0, patience=2),
        checkpoint_every=5,
    )
    assert captured == [(expected, tmp_path)]


def test_seeds_runs_seeds_zero_to_n_minus_one(captured):
    result = runner.invoke(app, ["run", "--seeds", "3", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert [c.seed for c, _ in captured] == [0, 1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "defualt"], "Unknown strategy 'defualt'. Did you mean 'default'?"),
        (["--model", "ncff"], "Unknown model 'ncff'. Did you mean 'ncf'?"),
        (["--set", "lr"], "--set expects key=value"),
        (["--set", "momentum=0.9"], "unknown setting 'momentum'"),
        (["--strategy", "frozen", "--set", "lr=0.1"], "unknown setting 'lr' for FrozenConfig; it takes no settings"),
        (["--set", "lr=fast"], "setting 'lr' expects float"),
        (["--protocol", "sampled"], "--protocol must be leakfree or paper"),
        (["--strategy", "frozen", "--sparse-updates"], "--sparse-updates does not apply to 'frozen'"),
    ],
)
def test_bad_options_fail_before_any_work(captured, args, message):
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code != 0
    assert message in str(result.exception)
    assert captured == []


def test_a_real_end_to_end_run_from_nothing_prints_a_summary(tmp_path, monkeypatch):
    # No `prepare`: the synthetic default is generated on demand; pre-training (2 epochs) happens on demand too.
    monkeypatch.undo()  # the real engine, not a patched one
    result = runner.invoke(app, ["run", "--epochs", "2", "--results", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "online replay" in result.output and "default / bpr / 0" in result.output
    (run_dir,) = tmp_path.iterdir()
    import polars as pl

    rows = pl.read_parquet(run_dir / "batches.parquet")
    assert set(rows["split"].unique()) == {"validation", "test"}
    assert rows["batch"].to_list() == list(range(rows.height))
    again = runner.invoke(app, ["run", "--epochs", "2", "--results", str(tmp_path)], env={"COLUMNS": "200"})
    assert "already complete" in again.output
