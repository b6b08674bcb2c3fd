"""``melonbench reproduce``: the grid it builds, the options it passes on, and one real tiny end-to-end grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from melonbench import strategies
from melonbench.cli import app
from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig
from melonbench.core.errors import MelonbenchError, NotPreparedError, UnknownNameError
from melonbench.pipeline import reproduce as reproduce_module
from melonbench.pipeline.reproduce import ReproduceConfig, ReproduceResult, grid, reproduce
from melonbench.strategies.frozen import Frozen


class BprOnly(Frozen):
    name = "bpronly"
    label = "BPR-only"
    supports = frozenset({"bpr"})
    incompatibility = "a test strategy"


@pytest.fixture
def with_bpr_only(monkeypatch):
    monkeypatch.setitem(strategies.STRATEGIES, "bpronly", BprOnly)


def test_grid_orders_model_seed_strategy_and_skips_declared_incompatible_pairs(with_bpr_only):
    runs, skipped = grid(ReproduceConfig(models=("bpr", "ncf"), strategies=("default", "bpronly"), seeds=2))
    assert [(r.model, r.seed, r.strategy) for r in runs] == [
        ("bpr", 0, "default"),
        ("bpr", 0, "bpronly"),
        ("bpr", 1, "default"),
        ("bpr", 1, "bpronly"),
        ("ncf", 0, "default"),
        ("ncf", 1, "default"),
        # the references without learning, once per seed, with their count update
        ("pop", 0, "count"),
        ("recent-pop", 0, "count"),
        ("pop", 1, "count"),
        ("recent-pop", 1, "count"),
    ]
    assert [(s, m) for s, m, _ in skipped] == [("bpronly", "ncf")]
    assert "a test strategy" in skipped[0][2]
    assert all(dataclasses.replace(r, model="bpr", strategy="default", seed=0) == RunConfig() for r in runs)


def test_all_means_every_registered_strategy_of_the_learned_models(with_bpr_only):
    runs, _ = grid(ReproduceConfig(models=("bpr",), seeds=1, references=()))
    assert [r.strategy for r in runs] == [s for s in strategies.STRATEGIES if s != "count"]


def test_references_can_be_left_out_and_must_be_references():
    runs, _ = grid(ReproduceConfig(models=("bpr",), strategies=("default",), seeds=1, references=("recent-pop",)))
    assert [(r.model, r.strategy) for r in runs] == [("bpr", "default"), ("recent-pop", "count")]
    with pytest.raises(MelonbenchError, match="--references takes recommenders without learning"):
        grid(ReproduceConfig(references=("bpr",)))
    with pytest.raises(UnknownNameError, match="Unknown model 'popp'"):
        grid(ReproduceConfig(references=("popp",)))


def test_bad_grids_fail_before_any_work(monkeypatch, with_bpr_only):
    monkeypatch.setattr(reproduce_module.experiment, "run_experiment", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(UnknownNameError, match="Unknown strategy 'frozn'. Did you mean 'frozen'?"):
        reproduce(ReproduceConfig(strategies=("default", "frozn")))
    with pytest.raises(UnknownNameError, match="Unknown model 'bpx'"):
        reproduce(ReproduceConfig(models=("bpx",)))
    with pytest.raises(MelonbenchError, match="nothing to run: every chosen strategy is incompatible"):
        reproduce(ReproduceConfig(models=("ncf",), strategies=("bpronly",)))
    with pytest.raises(MelonbenchError, match="--seeds must be at least 1"):
        reproduce(ReproduceConfig(seeds=0))
    with pytest.raises(MelonbenchError, match="--ranking must be full, sampled or both"):
        reproduce(ReproduceConfig(ranking="paper"))
    with pytest.raises(NotPreparedError, match="dataset 'grocery' is not prepared"):
        reproduce(ReproduceConfig(base=RunConfig(dataset="grocery")))


def test_cli_options_reach_the_reproduce_config(monkeypatch, tmp_path):
    calls = []

    def fake(config, hooks=None, console=None):
        calls.append(config)
        return ReproduceResult((), (), (), ())

    monkeypatch.setattr(reproduce_module, "reproduce", fake)
    args = [
        "reproduce",
        "--dataset",
        "grocery",
        "--models",
        "bpr",
        "--strategies",
        "default, frozen",
        "--seeds",
        "3",
        "--protocol",
        "paper",
        "--ranking",
        "sampled",
        "--device",
        "cpu",
        "--capture-lr",
        "10",
        "--results",
        str(tmp_path / "r"),
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "4",
        "--set",
        "default:lr=0.01",
        "--set",
        "cuda_graphs=false",
        "--retry-failed",
        "--references",
        "recent-pop",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    base = RunConfig(
        dataset="grocery", device="cpu", protocol="paper", capture_lr_every=10, pretrain=PretrainConfig(epochs=4)
    )
    assert calls == [
        ReproduceConfig(
            base=base,
            models=("bpr",),
            strategies=("default", "frozen"),
            references=("recent-pop",),
            seeds=3,
            ranking="sampled",
            results=tmp_path / "r",
            out=tmp_path / "o",
            settings=(("default:lr", "0.01"), ("cuda_graphs", "false")),
            retry_failed=True,
        )
    ]
    assert CliRunner().invoke(app, ["reproduce"]).exit_code == 0
    assert calls[-1] == ReproduceConfig()
    assert CliRunner().invoke(app, ["reproduce", "--references", "none"]).exit_code == 0
    assert calls[-1] == ReproduceConfig(references=())


def test_set_strategy_key_reaches_that_strategy_alone_and_plain_keys_every_strategy_that_has_them():
    settings = (("default:lr", "0.01"), ("cuda_graphs", "false"), ("lr", "0.5"), ("melon:meta_lr", "0.002"))
    runs, _ = grid(
        ReproduceConfig(models=("bpr",), strategies=("default", "frozen", "melon"), seeds=1, settings=settings)
    )
    params = {r.strategy: r.strategy_params for r in runs if r.strategy != "count"}  # the references take none
    assert {r.strategy_params for r in runs if r.strategy == "count"} == {()}
    # default: its own lr wins over the plain one (given later); frozen has no settings; melon has no lr.
    assert params == {
        "default": (("cuda_graphs", "false"), ("lr", "0.01")),
        "frozen": (),
        "melon": (("cuda_graphs", "false"), ("meta_lr", "0.002")),
    }
    # no --set: no strategy_params, so the run ids of existing grids do not change
    assert {r.strategy_params for r in grid(ReproduceConfig(models=("bpr",), seeds=1))[0]} == {()}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (("defualt:lr", "0.01"), "Unknown strategy 'defualt'. Did you mean 'default'?"),
        (
            ("melon:meta_lr", "0.01"),
            r"--set melon:meta_lr=0.01: strategy 'melon' is not in this grid \(default, frozen\)",
        ),
        (("default:lrr", "0.01"), "unknown setting 'lrr' for DefaultConfig; valid: cuda_graphs, lr, sparse"),
        (("meta_lr", "0.01"), "--set meta_lr=0.01: no strategy of this grid has a setting 'meta_lr'"),
        (("default:lr", "fast"), "setting 'lr' expects float, got 'fast'"),
    ],
)
def test_bad_set_fails_before_any_work(monkeypatch, setting, message):
    monkeypatch.setattr(reproduce_module.experiment, "attempt_experiment", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(MelonbenchError, match=message):
        reproduce(ReproduceConfig(models=("bpr",), strategies=("default", "frozen"), settings=(setting,)))


def test_cli_prints_a_bad_set_as_one_line(monkeypatch, capsys):
    from melonbench import cli

    monkeypatch.setattr("sys.argv", ["melonbench", "reproduce", "--strategies", "default", "--set", "melon:lr=1"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "strategy 'melon' is not in this grid (default)" in err


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory) -> Path:
    """A small synthetic stream (about 9k interactions, 1k users, 300 items), prepared once."""
    from melonbench.data.prepare import prepare_dataset

    home = tmp_path_factory.mktemp("reproduce_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MELONBENCH_HOME", str(home))
        options = PrepareOptions(core=5, split=(70.0, 10.0, 20.0), params=(("users", "1000"), ("items", "300")))
        prepare_dataset("synthetic", options)
    return home


def test_a_tiny_grid_runs_reports_and_is_skipped_when_run_again(tiny_home, monkeypatch):
    monkeypatch.setenv("MELONBENCH_HOME", str(tiny_home))
    base = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8))
    config = ReproduceConfig(
        base=base, models=("bpr",), strategies=("default", "frozen"), references=("pop",), seeds=2, ranking="sampled"
    )
    first = reproduce(config)
    assert [o.status for o in first.runs] == ["finished"] * 6
    out = tiny_home / "reports" / "synthetic"
    assert first.report_files == (out / "report.md", out / "report.tex")
    markdown = (out / "report.md").read_text()
    assert "6 runs; datasets: synthetic; models: BPR; references: Pop; seeds: 0, 1." in markdown
    assert "| synthetic | BPR | Frozen vs Default | 2 |" in markdown
    assert "|  | Pop | " in markdown and "Pop vs" not in markdown  # a reference row, never paired
    assert "\\begin{tabular}" in (out / "report.tex").read_text()
    assert sorted(p.name for p in first.figures) == [
        "per-batch_synthetic_bpr_sampled.png",
        "quality-cost_synthetic_bpr_sampled.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in first.figures)

    second = reproduce(config)
    assert [o.status for o in second.runs] == ["already complete"] * 6
    assert [o.run_id for o in second.runs] == [o.run_id for o in first.runs]
    assert (out / "report.md").read_text() == markdown  # same stored runs + seeded bootstrap → same report
