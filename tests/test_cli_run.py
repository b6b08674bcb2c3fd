"""`melonbench run` / `pretrain` option parsing reaches the library exactly (the engine is patched out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.core.config import PretrainConfig, RunConfig
from melonbench.core.errors import MelonbenchError
from melonbench.pipeline import experiment
from melonbench.pipeline.experiment import RunResult

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch):
    calls = []

    def fake_run(config, results_root=None, hooks=None, tuning=None):
        calls.append((config, results_root) if tuning is None else (config, results_root, tuning))
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


def test_tuned_runs_every_seed_with_the_stored_choice(captured, monkeypatch, tmp_path):
    from melonbench.pipeline import tune

    asked = []

    def fake_tuned(config, results):
        asked.append((config, results))
        return RunConfig(tuned=(("lr", "0.01"),)), {"budget": 16}

    monkeypatch.setattr(tune, "tuned_config", fake_tuned)
    result = runner.invoke(app, ["run", "--tuned", "--seeds", "2", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert asked == [(RunConfig(), tmp_path)]
    tuned = RunConfig(tuned=(("lr", "0.01"),))
    assert captured == [
        (tuned, tmp_path, {"budget": 16}),
        (RunConfig(seed=1, tuned=tuned.tuned), tmp_path, {"budget": 16}),
    ]
    assert "tuned settings: lr=0.01" in result.output


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


def test_help_lists_every_option():
    # typer before 0.15.4 allowed click 8.2, under which --help raised (one reason for pyproject's lower bound)
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(option in result.output for option in ("--checkpoint-every", "--seeds", "--warmup", "--capture-lr"))


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
        (["--strategy", "frozen", "--sparse-updates"], "--sparse-updates does not apply to 'frozen'"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
        (["--seeds", "0"], "--seeds must be at least 1 (it runs seeds 0..N-1), got 0"),
        (["--seeds", "-1"], "--seeds must be at least 1 (it runs seeds 0..N-1), got -1"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0 (the online replay starts from a pre-trained model)"),
        (["--patience", "0"], "--patience must be at least 1, got 0"),
        (["--lr", "0"], "--lr must be positive, got 0.0"),
        (["--weight-decay", "-1"], "--weight-decay must be zero or positive, got -1.0"),
        (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["--capture-lr", "-2"], "--capture-lr must be at least 0, got -2 (0 turns capture off)"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--negatives", "0"], "--negatives must be at least 1, got 0"),
        (["--k", "0"], "every cut-off k must be at least 1, got 0, 5, 10, 20"),
    ],
)
def test_bad_options_fail_before_any_work(captured, args, message):
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, MelonbenchError)
    assert message in str(result.exception)
    assert captured == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--patience", "0"], "--patience must be at least 1, got 0"),
    ],
)
def test_bad_pretrain_options_fail_before_any_work(monkeypatch, args, message):
    calls = []
    monkeypatch.setattr(experiment, "pretrain_only", lambda *a, **k: calls.append(a))
    result = runner.invoke(app, ["pretrain", *args])
    assert isinstance(result.exception, MelonbenchError) and message in str(result.exception)
    assert calls == []


def test_a_real_end_to_end_run_from_nothing_prints_a_summary(tmp_path, melonbench_home):
    # No `prepare`: the synthetic default is generated on demand; pre-training (2 epochs) happens on demand too.
    # The real engine (this test does not ask for `captured`), in the per-test store.
    result = runner.invoke(app, ["run", "--epochs", "2", "--results", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "online replay" in result.output and "default / bpr / 0" in result.output
    (run_dir,) = tmp_path.iterdir()
    import polars as pl

    rows = pl.read_parquet(run_dir / "batches.parquet")
    assert set(rows["split"].unique()) == {"validation", "test"}
    assert rows["batch"].to_list() == list(range(rows.height))
    # What does not change a result is not part of the run's identity: the same run, already complete
    neutral = ["--checkpoint-every", "7", "--warmup", "0", "--set", "lr=1e-3"]
    again = runner.invoke(app, ["run", "--epochs", "2", "--results", str(tmp_path), *neutral], env={"COLUMNS": "200"})
    assert "already complete" in again.output
    assert [p.name for p in tmp_path.iterdir()] == [run_dir.name]
    assert {p.name for p in melonbench_home.iterdir()} >= {"datasets", "checkpoints"}  # made here, not elsewhere
