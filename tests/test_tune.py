"""`melonbench tune` end to end on a tiny synthetic stream: never the test part, reuse and resume, `--tuned`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from melonbench import cli
from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig
from melonbench.core.errors import MelonbenchError
from melonbench.pipeline import experiment
from melonbench.pipeline import tune as tune_module
from melonbench.pipeline.reproduce import ReproduceConfig, reproduce
from melonbench.pipeline.tune import NotTunedError, TuneConfig, TuneHooks, tune, tuned_config
from melonbench.report.build import build_report
from melonbench.report.runs import load_runs
from melonbench.store.paths import datasets_dir

# 3.5k interactions, 400 users, 80 items; 528 validation interactions in 9 batches of 64
TINY = PrepareOptions(
    core=5, split=(70.0, 15.0, 15.0), params=(("users", "400"), ("items", "80"), ("max_activity", "40"))
)
BASE = RunConfig(device="cpu", batch_size=64, n_negatives=20, pretrain=PretrainConfig(epochs=1, dim=8))
TIMINGS = ("eval_s", "update_s", "warmup")


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory) -> Path:
    from melonbench.data.prepare import prepare_dataset

    home = tmp_path_factory.mktemp("tune_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MELONBENCH_HOME", str(home))
        prepare_dataset("synthetic", TINY)
    return home


@pytest.fixture
def home(tiny_home, monkeypatch) -> Path:
    monkeypatch.setenv("MELONBENCH_HOME", str(tiny_home))
    return tiny_home


def _with_other_test_batches(name: str) -> None:
    """A copy of the tiny dataset whose test interactions are shuffled into other (user, item) pairs."""
    src, dst = datasets_dir() / "synthetic", datasets_dir() / name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("negatives"))
    frame = pl.read_parquet(dst / "interactions.parquet")
    test = np.flatnonzero(frame["split"].cast(pl.Utf8).to_numpy() == "test")
    rng = np.random.default_rng(7)
    users, items = frame["user"].to_numpy().copy(), frame["item"].to_numpy().copy()
    users[test], items[test] = users[rng.permutation(test)], items[rng.permutation(test)]
    assert (users[test] != frame["user"].to_numpy()[test]).mean() > 0.9
    frame = frame.with_columns(pl.Series("user", users, dtype=pl.Int32), pl.Series("item", items, dtype=pl.Int32))
    frame.write_parquet(dst / "interactions.parquet")  # the card names no checksum: the fingerprint is the file's


def _trial_batches(result, results: Path) -> list[pl.DataFrame]:
    context = f"{result.record['context']['dataset']}_bpr_default_"
    (folder,) = (results / "tuning").glob(context + "*")
    return [
        pl.read_parquet(folder / "runs" / run_id / "batches.parquet").drop(TIMINGS)
        for trial in result.record["trials"]
        for run_id in trial["runs"]
    ]


def _record_statuses(monkeypatch) -> list[str]:
    """The status of every run the engine is asked for, in order."""
    statuses, real = [], experiment.run_experiment

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        statuses.append(result.status)
        return result

    monkeypatch.setattr(experiment, "run_experiment", recording)
    return statuses


def test_changing_the_test_batches_cannot_change_the_choice(home, tmp_path):
    _with_other_test_batches("altered")
    config = TuneConfig(base=BASE, budget=4, seeds=1, results=tmp_path / "r")
    a = tune(config)
    b = tune(dataclasses.replace(config, base=dataclasses.replace(BASE, dataset="altered")))
    assert a.record["context"]["fingerprint"] != b.record["context"]["fingerprint"]  # nothing was shared
    scores = [t["scores"] for t in a.record["trials"]]
    assert len({s[0] for s in scores}) > 1, "the trials must differ for the comparison to mean something"
    assert [t["scores"] for t in b.record["trials"]] == scores
    assert b.record["chosen"] == a.record["chosen"]
    # every validation batch of every trial, both rankings, bit for bit; no test batch was replayed
    for fa, fb in zip(_trial_batches(a, tmp_path / "r"), _trial_batches(b, tmp_path / "r"), strict=True):
        assert fa.equals(fb)
        assert set(fa["split"]) == {"validation"}


def test_the_record_holds_every_trial_and_the_choice(home, tmp_path):
    result = tune(TuneConfig(base=BASE, budget=3, seeds=2, results=tmp_path))
    record = result.record
    assert result.status == "tuned" and record["status"] == "finished"
    assert [t["settings"] for t in record["trials"]] == [{"lr": "0.001"}, {"lr": "0.03"}, {"lr": "0.3"}]
    assert record["tie_tolerance"] == pytest.approx(0.5 / (528 * 2))
    for trial in record["trials"]:
        assert len(trial["scores"]) == 2 and trial["score"] == pytest.approx(np.mean(trial["scores"]))
        for seed, run_id in enumerate(trial["runs"]):
            manifest = json.loads((result.path.parent / "runs" / run_id / "manifest.json").read_text())
            assert manifest["config"]["split"] == "validation" and manifest["config"]["seed"] == seed
            assert manifest["summary"]["full_hr@5"] == trial["scores"][seed]
    best = max(t["score"] for t in record["trials"])
    assert record["chosen"]["score"] == best
    assert record["chosen"]["default_score"] == record["trials"][0]["score"]
    assert json.loads((result.path.parent / "current.json").read_text()) == {"record": result.path.name}


def test_a_finished_tuning_is_reused_and_an_interrupted_one_resumes(home, tmp_path, monkeypatch):
    config = TuneConfig(base=BASE, budget=3, seeds=1, ranking="sampled", results=tmp_path / "whole")
    whole = tune(config)

    class StopAfterOne(TuneHooks):
        def trial(self, done, total, trial, best):
            if done == 1:
                raise KeyboardInterrupt

    cut = dataclasses.replace(config, results=tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        tune(cut, StopAfterOne())
    (partial,) = (tmp_path / "cut" / "tuning").glob("*/budget3-seeds1-sampled.json")
    assert json.loads(partial.read_text())["status"] == "running"
    statuses = _record_statuses(monkeypatch)
    resumed = tune(cut)
    # the first trial was done before the stop: found in the store, it is not started again
    assert statuses == ["finished", "finished"]
    assert resumed.record["trials"] == whole.record["trials"]
    assert resumed.record["chosen"] == whole.record["chosen"]

    def no_work(*args, **kwargs):
        raise AssertionError("a finished tuning must not run anything")

    monkeypatch.setattr(experiment, "run_experiment", no_work)
    again = tune(cut)
    assert again.status == "already tuned" and again.record == resumed.record


def test_tuned_refuses_without_a_stored_tuning_and_names_the_command(home, tmp_path):
    config = dataclasses.replace(BASE, strategy="eals", strategy_params=(("scale", "loss"),))
    with pytest.raises(NotTunedError) as info:
        tuned_config(config, tmp_path)
    assert str(info.value).endswith(
        "run `melonbench tune -d synthetic -m bpr -s eals --epochs 1 --batch-size 64 --negatives 20 --set scale=loss` "
        "first"
    )
    with pytest.raises(MelonbenchError, match="--set w_new conflicts with --tuned"):
        tuned_config(dataclasses.replace(config, strategy_params=(("w_new", "2"),)), tmp_path)
    frozen, provenance = tuned_config(dataclasses.replace(BASE, strategy="frozen"), tmp_path)
    assert frozen.tuned == () and provenance == {"note": "nothing to tune"}
    grid = ReproduceConfig(
        base=BASE, models=("bpr",), strategies=("default", "frozen", "eals"), seeds=1, results=tmp_path, tuned=True
    )
    with pytest.raises(
        NotTunedError, match=r"no stored tuning for 2 .*-s default --epochs 1.*; `melonbench tune .*-s eals"
    ):
        reproduce(grid)


def test_tunings_with_different_budgets_are_refused_in_one_grid(home, tmp_path):
    tune(TuneConfig(base=BASE, budget=1, seeds=1, results=tmp_path))
    tune(TuneConfig(base=dataclasses.replace(BASE, strategy="eals"), budget=2, seeds=1, results=tmp_path))
    grid = ReproduceConfig(base=BASE, models=("bpr",), strategies=("default", "eals"), seeds=1, results=tmp_path)
    with pytest.raises(MelonbenchError, match="stored tunings differ .*budget 1, 1 seeds.*budget 2, 1 seeds"):
        reproduce(dataclasses.replace(grid, tuned=True))


def test_cli_run_tuned_refuses_in_one_line(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["melonbench", "run", "--tuned", "--epochs", "1", "--results", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        "no finished tuning of default" in err and "`melonbench tune -d synthetic -m bpr -s default --epochs 1`" in err
    )


def test_tuned_runs_record_their_values_and_the_report_marks_them(home, tmp_path):
    results = tmp_path / "results"
    tuning = tune(TuneConfig(base=BASE, budget=3, seeds=1, results=results))
    chosen = tuning.record["chosen"]["settings"]
    grid = ReproduceConfig(
        base=BASE, models=("bpr",), strategies=("default", "frozen"), references=("pop",), seeds=1, results=results
    )
    published = reproduce(dataclasses.replace(grid, out=tmp_path / "published"))
    tuned = reproduce(dataclasses.replace(grid, tuned=True, out=tmp_path / "tuned"))

    manifests = {o.manifest["config"]["strategy"]: o.manifest for o in tuned.runs}
    assert manifests["default"]["config"]["tuned"] == [[k, v] for k, v in chosen.items()]
    assert manifests["default"]["strategy"]["config"]["lr"] == float(chosen["lr"])
    assert manifests["default"]["tuning"]["budget"] == 3 and manifests["default"]["tuning"]["values"] == chosen
    assert manifests["frozen"]["config"]["tuned"] == [] and manifests["count"]["config"]["tuned"] == []
    assert {o.run_id for o in tuned.runs}.isdisjoint({o.run_id for o in published.runs})  # tuned: another run

    runs = load_runs(results)
    assert sorted(r.setting for r in runs) == ["synthetic"] * 3 + ["synthetic [tuned]"] * 3  # pop in both blocks
    report = build_report(runs, "full")
    table = next(t for t in report.tables if t.key == "tuned")
    rows = {row[2].text: [c.text for c in row] for row in table.rows}
    assert sorted(rows) == ["Default", "Frozen"]  # a reference without learning is no strategy to tune
    hr = {
        (o.manifest["config"]["strategy"], bool(o.manifest["config"].get("tuned") is not None)): o.manifest["summary"][
            "full_hr@5"
        ]
        for o in (*published.runs, *tuned.runs)
    }
    default_val = tuning.record["chosen"]["default_score"]
    assert rows["Default"] == [
        "synthetic [tuned]",
        "BPR",
        "Default",
        ", ".join(f"{k}={v}" for k, v in chosen.items()),
        "budget 3, 1 seeds, full",
        f"{default_val:.4f} → {tuning.record['chosen']['score']:.4f}",
        f"{hr[('default', False)]:.4f}",
        f"{hr[('default', True)]:.4f}",
    ]
    assert rows["Frozen"][3:5] == ["nothing to tune", "nothing to tune"]
    assert rows["Frozen"][6] == rows["Frozen"][7]  # Frozen tuned is Frozen
    markdown = (tmp_path / "tuned" / "report.md").read_text()
    assert "| synthetic [tuned] | Default |" in markdown and "| synthetic | Default |" in markdown


def test_frozen_has_nothing_to_tune(home, tmp_path):
    result = tune(TuneConfig(base=dataclasses.replace(BASE, strategy="frozen"), results=tmp_path))
    assert result.status == "nothing to tune" and result.record is None
    assert not (tmp_path / "tuning").exists()
    out = CliRunner().invoke(cli.app, ["tune", "-s", "frozen", "--results", str(tmp_path)])
    assert out.exit_code == 0 and "frozen has no online settings to tune" in out.output


def test_bad_options_fail_before_any_work(home, tmp_path):
    for config, message in (
        (TuneConfig(base=BASE, ranking="both"), "--ranking must be full or sampled"),
        (TuneConfig(base=BASE, seeds=0), "--seeds must be at least 1"),
        (TuneConfig(base=BASE, budget=0), "--budget must be at least 1"),
        (
            TuneConfig(base=dataclasses.replace(BASE, strategy_params=(("lr", "0.1"),))),
            "--set lr is what tune searches",
        ),
        (TuneConfig(base=dataclasses.replace(BASE, model="ncf", strategy="sml")), "does not support model 'ncf'"),
    ):
        with pytest.raises(MelonbenchError, match=message):
            tune(config)


def test_cli_options_reach_the_tune_config(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        tune_module,
        "tune",
        lambda config, hooks=None: calls.append(config) or tune_module.TuneResult("nothing to tune", None, None),
    )
    args = ["tune", "-d", "g1", "-m", "ncf", "-s", "eals", "--budget", "5", "--seeds", "3", "--ranking", "sampled"]
    args += ["--set", "scale=loss", "--device", "cpu", "--batch-size", "64", "--negatives", "49", "--epochs", "2"]
    args += ["--results", str(tmp_path)]
    out = CliRunner().invoke(cli.app, args)
    assert out.exit_code == 0, out.output
    base = RunConfig(
        dataset="g1",
        model="ncf",
        strategy="eals",
        device="cpu",
        batch_size=64,
        n_negatives=49,
        strategy_params=(("scale", "loss"),),
        pretrain=PretrainConfig(epochs=2),
    )
    assert calls == [TuneConfig(base=base, budget=5, seeds=3, ranking="sampled", results=tmp_path)]


def test_tune_list_prints_every_space():
    out = CliRunner().invoke(cli.app, ["tune", "--list"])
    assert out.exit_code == 0
    for name in ("default", "eals", "w_new", "mwnet", "melon-p", "s2meta", "transfer_lr", "nothing to tune"):
        assert name in out.output


def test_report_takes_ranking_and_no_longer_protocol(monkeypatch):
    from melonbench.report import build

    calls = []
    monkeypatch.setattr(build, "make_report", lambda options, console=None: calls.append(options))
    assert CliRunner().invoke(cli.app, ["report", "--ranking", "sampled"]).exit_code == 0
    assert calls[0].ranking == "sampled"
    assert CliRunner().invoke(cli.app, ["report", "--protocol", "sampled"]).exit_code == 2


def test_untuned_runs_keep_their_ids_and_tuned_ones_differ():
    import torch

    from melonbench.core.config import to_jsonable

    assert "tuned" not in to_jsonable(RunConfig(), hashing=True)  # hashed as before `tuned` existed
    assert to_jsonable(RunConfig(tuned=()), hashing=True)["tuned"] == []
    cpu = torch.device("cpu")
    ids = {experiment.run_id_for(RunConfig(tuned=t), "f", cpu) for t in (None, (), (("lr", "0.01"),))}
    assert len(ids) == 3
    by_hand = experiment.run_id_for(RunConfig(strategy_params=(("lr", "0.01"),)), "f", cpu)
    assert by_hand not in ids, "a tuned run is not the run of the same --set (the report tells them apart)"


def test_a_changed_grid_is_tuned_again_on_the_runs_already_made(home, tmp_path, monkeypatch):
    from melonbench.strategies.default import Default
    from melonbench.strategies.space import Axis

    monkeypatch.setattr(Default, "space", (Axis("lr", (1e-3, 1e-1)),))
    first = tune(TuneConfig(base=BASE, seeds=1, results=tmp_path))
    tuned_config(BASE, tmp_path)  # found
    monkeypatch.setattr(Default, "space", (Axis("lr", (1e-3, 1e-2, 1e-1)),))
    with pytest.raises(NotTunedError, match="searched another grid than default declares now"):
        tuned_config(BASE, tmp_path)
    statuses = _record_statuses(monkeypatch)
    second = tune(TuneConfig(base=BASE, seeds=1, results=tmp_path))
    assert second.status == "tuned" and len(second.record["trials"]) == 3
    assert statuses == ["finished"]  # the two points of the old grid are found in the store, not run
    assert second.record["trials"][2]["scores"] == first.record["trials"][1]["scores"]
