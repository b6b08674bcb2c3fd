"""A grid survives its failures: a failed run is recorded (never taken for a finished one), the grid goes on, the
report lists it and counts the seeds each cell lacks, and ``--retry-failed`` runs it alone."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from melonbench import strategies
from melonbench.cli import app
from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig
from melonbench.core.errors import DivergenceError
from melonbench.pipeline import experiment
from melonbench.pipeline import reproduce as reproduce_module
from melonbench.pipeline.reproduce import ReproduceConfig, reproduce
from melonbench.store.results import FAILURE, RunStore, read_failures, read_runs
from melonbench.strategies.default import Default

runner = CliRunner()
# The tiny stream below has 4 validation and 8 test batches of 256 (indices 0-11).
BROKEN_AT = 5


class Diverge(Default):
    """Default, except that on the seeds in ``broken_seeds`` the loss of online batch ``broken_at`` is NaN."""

    name = "diverge"
    label = "Diverge"
    broken_seeds: ClassVar[frozenset[int]] = frozenset({0})
    broken_at: ClassVar[int] = BROKEN_AT

    def online_step(self, batch, history):
        losses = super().online_step(batch, history)
        if self.seed in self.broken_seeds and batch.index == self.broken_at:
            return losses * float("nan")
        return losses


class Crash(Default):
    """A defect: a plain ``RuntimeError`` (not a MelonbenchError) at online batch 2."""

    name = "crash"
    label = "Crash"

    def online_step(self, batch, history):
        if batch.index == 2:
            raise RuntimeError("index 7 is out of bounds\nsecond line of the message")
        return super().online_step(batch, history)


class Interrupt(Default):
    """Ctrl-C at online batch 2."""

    name = "interrupt"
    label = "Interrupt"

    def online_step(self, batch, history):
        if batch.index == 2:
            raise KeyboardInterrupt
        return super().online_step(batch, history)


@pytest.fixture
def tiny_home(melonbench_home: Path) -> Path:
    """A small synthetic stream (about 9k interactions, 1k users, 300 items); preparing it takes 0.1 s."""
    from melonbench.data.prepare import prepare_dataset

    options = PrepareOptions(core=5, split=(70.0, 10.0, 20.0), params=(("users", "1000"), ("items", "300")))
    prepare_dataset("synthetic", options)
    return melonbench_home


@pytest.fixture
def test_strategies(monkeypatch):
    for cls in (Diverge, Crash, Interrupt):
        monkeypatch.setitem(strategies.STRATEGIES, cls.name, cls)
    # Figures prove nothing here (tests/test_reproduce.py draws them) and take a second per grid.
    monkeypatch.setattr(reproduce_module, "write_plots", lambda *args, **kwargs: [])


@pytest.fixture
def attempts(monkeypatch) -> list[tuple[str, int, str]]:
    """``(strategy, seed, status)`` of every run ``reproduce`` hands to the experiment (``failed`` for a failure)."""
    seen: list[tuple[str, int, str]] = []
    real = experiment.attempt_experiment

    def spy(config, *args, **kwargs):
        seen.append((config.strategy, config.seed, "started"))
        outcome = real(config, *args, **kwargs)
        seen[-1] = (config.strategy, config.seed, getattr(outcome, "status", "failed"))
        return outcome

    monkeypatch.setattr(reproduce_module.experiment, "attempt_experiment", spy)
    return seen


def _folders(results: Path) -> dict[tuple[str, int], Path]:
    """Run folders by (strategy, seed), from the run ids."""
    out = {}
    for folder in results.iterdir():
        parts = folder.name.split("_")
        out[(parts[2], int(parts[3].removeprefix("seed")))] = folder
    return out


def test_a_failed_run_is_recorded_the_grid_goes_on_and_retry_failed_runs_it_alone(
    tiny_home, test_strategies, attempts, tmp_path, monkeypatch
):
    results, out = tmp_path / "results", tmp_path / "report"
    args = ["reproduce", "--models", "bpr", "--strategies", "default,diverge", "--seeds", "2", "--device", "cpu"]
    args += ["--references", "none"]
    args += ["--epochs", "1", "--ranking", "sampled", "--results", str(results), "--out", str(out)]

    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    done = "finished"
    # the grid went on after the failure
    assert attempts == [("default", 0, done), ("diverge", 0, "failed"), ("default", 1, done), ("diverge", 1, done)]
    assert "diverge/bpr seed 0: diverged at batch 5" in first.output
    assert "grid: 3 finished, 0 reused, 1 failed" in first.output
    assert "failed: diverge/bpr seed 0: diverged at batch 5" in first.output
    folders = _folders(results)
    failed = folders[("diverge", 0)]
    assert sorted(p.name for p in failed.iterdir()) == [FAILURE]  # no checkpoint (every 50 batches), no result
    assert [m["config"]["strategy"] for m, _ in read_runs(results)].count("diverge") == 1
    record = json.loads((failed / FAILURE).read_text())
    assert (record["status"], record["stage"], record["batch"]) == ("failed", "replay", BROKEN_AT)
    assert record["diverged"] and not record["unexpected"] and record["error"] == "DivergenceError"
    # Nothing was checkpointed: the message names no folder (issue 16: it named one that did not exist).
    assert record["reason"] == f"the loss became non-finite at online batch {BROKEN_AT}"

    markdown = (out / "report.md").read_text()
    assert "3 runs finished, 1 failed; datasets: synthetic; models: BPR; seeds: 0, 1 (cells marked k/n" in markdown
    assert "## Failed runs" in markdown and "| synthetic | BPR | Diverge | 0 | diverged at batch 5 |" in markdown
    diverge_row = next(line for line in markdown.splitlines() if line.startswith("|  | Diverge |"))
    assert diverge_row.count("(1/2)") == 6  # every HR/NDCG column of the accuracy table stands on seed 1 alone
    # the same from the stored results, with `report`
    shown = runner.invoke(app, ["report", str(results), "--markdown"])
    assert shown.exit_code == 0, shown.output
    assert "| synthetic | BPR | Diverge | 0 | diverged at batch 5 |" in shown.output

    # Run again as it is: the finished runs are re-used, the recorded failure is reported, not repeated.
    attempts.clear()
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert attempts == []  # the finished runs are found in the store: nothing is started, nothing pre-trained
    assert "grid: 0 finished, 3 reused, 1 failed (1 of them recorded earlier)" in again.output
    assert "diverge/bpr seed 0: diverged at batch 5 (recorded earlier; --retry-failed runs it again)" in again.output

    # --retry-failed runs that run alone, and leaves the others untouched.
    finished = {key: (f / "batches.parquet").stat().st_mtime_ns for key, f in folders.items() if key != ("diverge", 0)}
    attempts.clear()
    retry = runner.invoke(app, [*args, "--retry-failed"])
    assert retry.exit_code == 1 and attempts == [("diverge", 0, "failed")]
    assert (failed / FAILURE).is_file() and not (failed / "batches.parquet").exists()

    # Fixed, the retried run finishes and replaces the failure record.
    monkeypatch.setattr(Diverge, "broken_seeds", frozenset())
    attempts.clear()
    fixed = runner.invoke(app, [*args, "--retry-failed"])
    assert fixed.exit_code == 0, fixed.output
    assert attempts == [("diverge", 0, "finished")]
    assert "grid: 1 finished, 0 reused, 0 failed (3 other runs not touched)" in fixed.output
    assert not (failed / FAILURE).exists() and RunStore(failed).is_complete()
    assert {key: (folders[key] / "batches.parquet").stat().st_mtime_ns for key in finished} == finished
    # Fixed, Diverge is Default: the same seed gives the same batches, so the retry started afresh.
    retried = pl.read_parquet(failed / "batches.parquet")
    reference = pl.read_parquet(folders[("default", 0)] / "batches.parquet")
    assert retried["sampled_hr@5"].to_list() == reference["sampled_hr@5"].to_list()
    markdown = (out / "report.md").read_text()
    assert "4 runs; datasets: synthetic; models: BPR; seeds: 0, 1." in markdown
    assert "Failed runs" not in markdown and "(1/2)" not in markdown


def test_an_unexpected_error_is_recorded_with_its_traceback_and_the_grid_goes_on(tiny_home, test_strategies, tmp_path):
    base = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8))
    config = ReproduceConfig(
        base=base,
        models=("bpr",),
        strategies=("crash", "default"),
        references=(),
        seeds=1,
        ranking="sampled",
        results=tmp_path,
    )
    console = Console(record=True, width=200, file=io.StringIO())
    result = reproduce(config, console=console)
    assert [o.status for o in result.runs] == ["finished"]  # Default, after Crash failed
    (failure,) = result.failures
    assert failure.what() == "failed in replay (unexpected RuntimeError): index 7 is out of bounds"
    assert failure.unexpected and not failure.diverged and failure.batch is None
    assert "Traceback (most recent call last)" in failure.traceback and "in online_step" in failure.traceback
    text = console.export_text()
    assert f"traceback in {failure.folder / FAILURE}" in text and "Traceback (most recent" not in text


def test_debug_shows_the_traceback_of_an_unexpected_failure(tiny_home, test_strategies, tmp_path, monkeypatch):
    monkeypatch.setenv("MELONBENCH_DEBUG", "1")
    base = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8))
    config = ReproduceConfig(
        base=base, models=("bpr",), strategies=("crash",), references=(), seeds=1, results=tmp_path
    )
    console = Console(record=True, width=200, file=io.StringIO())
    reproduce(config, console=console)
    text = console.export_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: index 7 is out of bounds" in text
    assert "no report: no run of the grid has finished" in text


def test_ctrl_c_stops_the_grid_at_once_and_records_nothing(tiny_home, test_strategies, attempts, tmp_path):
    base = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8), checkpoint_every=2)
    config = ReproduceConfig(
        base=base, models=("bpr",), strategies=("interrupt", "default"), references=(), seeds=1, results=tmp_path
    )
    with pytest.raises(KeyboardInterrupt):
        reproduce(config)
    assert attempts == [("interrupt", 0, "started")]  # it never returned, and Default was not started
    (folder,) = tmp_path.iterdir()
    # The interrupted run holds its checkpoint (batches 0-1) to resume from, and neither a result nor a failure.
    assert sorted(p.name for p in folder.iterdir()) == ["partial.parquet", "state.pt"]
    assert read_failures(tmp_path) == [] and read_runs(tmp_path) == []


def test_a_divergence_names_the_runs_folder_only_when_it_holds_a_checkpoint(tiny_home, test_strategies, tmp_path):
    config = RunConfig(strategy="diverge", seed=0, device="cpu", pretrain=PretrainConfig(epochs=1, dim=8))
    with pytest.raises(DivergenceError) as info:
        experiment.run_experiment(config, tmp_path / "a")
    assert str(info.value) == f"the loss became non-finite at online batch {BROKEN_AT}"

    with pytest.raises(DivergenceError) as info:
        experiment.run_experiment(dataclasses.replace(config, checkpoint_every=2), tmp_path / "b")
    (folder,) = (tmp_path / "b").iterdir()
    assert str(info.value) == (
        f"the loss became non-finite at online batch {BROKEN_AT}; the run's last checkpoint (after batch 3) is in "
        f"{folder}"
    )
    assert (folder / "state.pt").is_file()
    assert pl.read_parquet(folder / "partial.parquet")["batch"].to_list() == [0, 1, 2, 3]
    assert json.loads((folder / FAILURE).read_text())["checkpoint_batches"] == 4


def test_a_failure_record_is_never_taken_for_a_finished_run(tmp_path):
    store = RunStore(tmp_path / "run")
    record = {"status": "failed", "run_id": "run", "reason": "x"}
    store.record_failure(record)
    assert not store.is_complete() and store.failure() == record
    assert read_runs(tmp_path) == [] and read_failures(tmp_path) == [record]
    assert [p.name for p in store.path.iterdir()] == [FAILURE]  # written through a temporary file, then renamed

    store.finish([{"batch": 0, "loss": 0.5}], {"run_id": "run"})
    assert store.is_complete() and store.failure() is None and not (store.path / FAILURE).exists()
    assert read_failures(tmp_path) == [] and len(read_runs(tmp_path)) == 1

    # A crash between the manifest and the removal of the record: the finished run wins.
    (store.path / FAILURE).write_text(json.dumps(record))
    assert store.failure() is None and read_failures(tmp_path) == []
