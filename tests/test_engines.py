"""Executors (``pipeline.executor``): worker processes and Ray give the sequential engine's bits, a failed task or a
killed worker fails alone, Ctrl-C stops the workers and leaves a store that resumes, and a task shipped to a
private store reads nothing of the driver's."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

import polars as pl
import pytest
from engine_plugins import PLUGINS
from rich.console import Console
from typer.testing import CliRunner

from melonbench import strategies
from melonbench.cli import app, main
from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig
from melonbench.core.errors import MelonbenchError
from melonbench.pipeline import reproduce as reproduce_module
from melonbench.pipeline.engines import INSTALL_RAY, Engine, default_jobs, worker_threads
from melonbench.pipeline.executor import execute
from melonbench.pipeline.experiment import RunHooks
from melonbench.pipeline.progress import LogGridHooks, RichGridHooks, grid_hooks
from melonbench.pipeline.reproduce import GridHooks, ReproduceConfig, reproduce
from melonbench.pipeline.shipping import inputs, land, run_in_private_store
from melonbench.pipeline.tasks import plan, run_task
from melonbench.pipeline.tune import TuneConfig, tune
from melonbench.store.paths import home
from melonbench.store.results import read_failures, read_runs

runner = CliRunner()
TIMING = ["eval_s", "update_s"]
TESTS = str(Path(__file__).resolve().parent)
SETUP = "engine_plugins:register"


def _prepare() -> None:
    """The tiny stream of tests/test_grid_failures.py (about 9k interactions; 4 validation and 8 test batches)."""
    from melonbench.data.prepare import prepare_dataset

    prepare_dataset("synthetic", PrepareOptions(core=5, split=(70.0, 10.0, 20.0), params=(("users", "1000"),)))


def _grid(results: Path, names: tuple[str, ...], engine: Engine) -> ReproduceConfig:
    base = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8), checkpoint_every=2)
    return ReproduceConfig(
        base=base,
        models=("bpr",),
        strategies=names,
        references=("pop",),
        seeds=2,
        ranking="sampled",
        results=results,
        out=results.parent / "report",
        engine=engine,
    )


def _batches(results: Path) -> dict[str, pl.DataFrame]:
    return {m["run_id"]: frame.drop(TIMING) for m, frame in read_runs(results)}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict[str, pl.DataFrame]:
    """Every finished run of the grid (default, mwnet, diverge; pop) run in this process, one task at a time."""
    root = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MELONBENCH_HOME", str(root / "home"))
        for cls in PLUGINS:
            mp.setitem(strategies.STRATEGIES, cls.name, cls)
        mp.setattr(reproduce_module, "write_plots", lambda *args, **kwargs: [])
        _prepare()
        result = reproduce(_grid(root / "results", ("default", "mwnet", "diverge"), Engine(jobs=1)))
    assert [f.what() for f in result.failures] == ["diverged at batch 5"]
    runs = _batches(root / "results")
    assert len(runs) == 7  # 2 seeds x (default, mwnet, diverge, pop), less diverge's seed 0
    return runs


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance with 2 CPUs for the whole session (its start-up costs seconds), with the failing
    strategies importable in its workers; the engine uses it and leaves it running (``ray_engine.connect``)."""
    try:
        import ray
    except ImportError:  # the dev extra installs Ray: the suite must not pass without having run these tests
        pytest.fail("Ray is not installed, but the dev extra installs it: pip install -e '.[dev]'", pytrace=False)
    env = {
        "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),  # engine_plugins, for the workers
        "RAY_AUTH_MODE": "disabled",  # else Ray writes a token into $HOME/.ray, outside the test's folders
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def plugins(monkeypatch):
    """The failing strategies in this process (the grid is checked here) and in the workers (``SETUP``)."""
    for cls in PLUGINS:
        monkeypatch.setitem(strategies.STRATEGIES, cls.name, cls)
    monkeypatch.setattr(reproduce_module, "write_plots", lambda *args, **kwargs: [])
    _prepare()


def _same_as(runs: dict[str, pl.DataFrame], reference: dict[str, pl.DataFrame], renamed: dict[str, str]) -> None:
    """Every run equals the reference run of the same id (or of the strategy ``renamed`` gives), timings aside."""
    assert runs
    for run_id, frame in runs.items():
        for new, old in renamed.items():
            run_id = run_id.replace(f"_{new}_", f"_{old}_")
        same = [rid for rid in reference if rid.rsplit("_", 1)[0] == run_id.rsplit("_", 1)[0]]
        assert len(same) == 1, run_id
        assert frame.equals(reference[same[0]]), run_id


class _CountingHooks(GridHooks):
    def __init__(self) -> None:
        self.counts: list[tuple[int, int, int]] = []

    def start(self, total: int) -> None:
        self.counts.append((0, total, 0))

    def finished(self, done: int, total: int, failed: int, elapsed_s: float) -> None:
        self.counts.append((done, total, failed))


def test_two_workers_give_the_sequential_bits_and_a_killed_worker_fails_alone(sequential, plugins, tmp_path):
    results = tmp_path / "results"
    console = Console(record=True, width=300, file=io.StringIO())
    engine = Engine(jobs=2, setup=SETUP)
    hooks = _CountingHooks()
    result = reproduce(_grid(results, ("default", "mwnet", "diverge", "die"), engine), hooks, console)
    assert hooks.counts[0] == (0, 10, 0) and hooks.counts[-1] == (10, 10, 2)  # 4 strategies and pop, 2 seeds
    assert [done for done, _, _ in hooks.counts] == list(range(11))
    assert multiprocessing.active_children() == []  # the workers are gone
    failed = _same_bits_and_two_failures(results, result, sequential)
    lost = failed[("die", 0)]
    assert (lost.stage, lost.error, lost.unexpected) == ("worker", "TaskLost", True)
    assert lost.reason.startswith("the worker process running run-") and lost.reason.endswith("died (exit code -9)")
    text = console.export_text()
    assert "die/bpr seed 0: failed in worker (unexpected TaskLost): the worker process running run-" in text
    assert "grid: 8 finished, 0 reused, 2 failed" in text
    shown = runner.invoke(app, ["report", str(results), "--markdown"])
    assert shown.exit_code == 0, shown.output
    assert "| synthetic | BPR | Diverge | 0 | diverged at batch 5 |" in shown.output
    assert "| synthetic | BPR | Die | 0 | failed in worker (unexpected TaskLost): the worker process" in shown.output


def _same_bits_and_two_failures(results: Path, result, sequential) -> dict:
    """The grid of default, mwnet, diverge and die (2 seeds): the sequential bits, and the two failures by (strategy,
    seed)."""
    runs = _batches(results)
    assert len(runs) == 8  # die's seed 1 finishes: it is Default, so its bits are default seed 1's
    _same_as({k: v for k, v in runs.items() if "_die_" not in k}, sequential, {})
    _same_as({k: v for k, v in runs.items() if "_die_" in k}, sequential, {"die": "default"})
    failed = {(f.strategy, f.seed): f for f in result.failures}
    assert set(failed) == {("diverge", 0), ("die", 0)}
    assert failed[("diverge", 0)].what() == "diverged at batch 5"
    return failed


def test_ray_gives_the_sequential_bits_and_brings_back_failures_and_checkpoints(
    sequential, ray_instance, plugins, tmp_path
):
    results = tmp_path / "results"
    result = reproduce(_grid(results, ("default", "mwnet", "diverge", "die"), Engine("ray", setup=SETUP)))
    assert ray_instance.is_initialized()  # the engine did not stop a Ray instance it did not start
    failed = _same_bits_and_two_failures(results, result, sequential)
    assert (failed[("die", 0)].stage, failed[("die", 0)].error) == ("worker", "TaskLost")
    # The record the worker wrote came back, naming the driver's folders, not the worker's private store.
    folder = failed[("diverge", 0)].folder
    record = (folder / "failure.json").read_text()
    assert "melonbench-task-" not in record and str(folder) in json.loads(record)["reason"]
    made = sorted(p.name.split("-")[0] for p in (home() / "checkpoints").iterdir())
    assert made == ["bpr", "bpr", "meta", "meta", "pop", "pop"]  # pre-trained on the workers, stored here
    assert [p.name for p in (home() / "checkpoints").iterdir() if p.name.startswith(".")] == []
    shown = runner.invoke(app, ["report", str(results), "--markdown"])
    assert shown.exit_code == 0, shown.output
    lost = "| synthetic | BPR | Die | 0 | failed in worker (unexpected TaskLost): the Ray task running run-"
    assert lost in shown.output


def test_tune_gives_the_same_trials_and_choice_with_every_engine(ray_instance, plugins, tmp_path):
    base = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8))
    engines = {"sequential": Engine(jobs=1), "jobs2": Engine(jobs=2), "ray": Engine("ray")}
    records, batches = {}, {}
    for name, engine in engines.items():
        config = TuneConfig(base=base, budget=3, seeds=1, ranking="sampled", results=tmp_path / name, engine=engine)
        records[name] = tune(config).record
        batches[name] = {p.parent.name: pl.read_parquet(p).drop(TIMING) for p in (tmp_path / name).rglob("batches*")}
    assert len(records["sequential"]["trials"]) == 3 and len(batches["sequential"]) == 3
    for name in ("jobs2", "ray"):
        assert records[name]["trials"] == records["sequential"]["trials"]
        assert records[name]["chosen"] == records["sequential"]["chosen"]
        assert batches[name].keys() == batches["sequential"].keys()
        assert all(batches[name][k].equals(batches["sequential"][k]) for k in batches[name])


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in a terminal. A shell that starts a job in the background
    starts it with SIGINT ignored, and Python then leaves it ignored: a CI runner may run the suite so."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_the_workers_and_the_store_resumes(sequential, plugins, ctrl_c_raises, tmp_path):
    results = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt):
        reproduce(_grid(results, ("ctrl-c",), Engine(jobs=2, setup=SETUP)))
    assert multiprocessing.active_children() == []
    assert read_failures(results) == []  # an interruption is not a failure
    leftovers = [p for p in results.rglob(".*")] + [p for p in (home() / "checkpoints").rglob(".*")]
    assert leftovers == []  # no temporary file of an interrupted atomic write
    # Running again finishes what is missing; ctrl-c's seed 1 is Default's, and seed 0 resumes identically.
    strategies.STRATEGIES["ctrl-c"] = strategies.STRATEGIES["default"]
    again = reproduce(_grid(results, ("ctrl-c",), Engine(jobs=1)))
    assert again.failures == () and len(read_runs(results)) == 4
    _same_as({k: v for k, v in _batches(results).items() if "_ctrl-c_" in k}, sequential, {"ctrl-c": "default"})


def test_a_shipped_task_reads_nothing_of_the_drivers_store(sequential, tmp_path):
    _prepare()
    driver = home()
    away = driver.with_name(driver.name + "-away")
    results = tmp_path / "results"
    for task in plan([RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8), checkpoint_every=2)]):
        files = inputs(task, results, _fingerprint())
        blobs = {name: path.read_bytes() for name, path in files.items()}
        driver.rename(away)  # the worker cannot see the driver's store: it has only what was shipped
        try:
            shipped = run_in_private_store(blobs, lambda store, task=task: run_task(task, store, RunHooks()))
        finally:
            away.rename(driver)
        value = land(*shipped, results)
        assert not isinstance(value, Exception), value
    runs = _batches(results)
    assert len(runs) == 1
    _same_as(runs, sequential, {})


def _fingerprint() -> str:
    from melonbench.pipeline import experiment

    return experiment.dataset_fingerprint(experiment.load_or_generate("synthetic"))


def test_grid_progress_is_a_bar_on_a_terminal_and_a_line_per_run_elsewhere():
    assert isinstance(grid_hooks(Console(file=io.StringIO(), force_terminal=True)), RichGridHooks)
    out = io.StringIO()
    hooks = grid_hooks(Console(file=out, width=80))
    assert isinstance(hooks, LogGridHooks)
    hooks.finished(3, 90, 1, 3723.9)
    assert out.getvalue() == "grid: 3/90 runs done, 1 failed, 1:02:03 elapsed\n"


def test_default_jobs_and_threads_follow_the_stated_rule():
    assert [default_jobs("cpu", cores) for cores in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 8]
    assert worker_threads(Engine(), jobs=2, cores=2) == 1 and worker_threads(Engine(), jobs=4, cores=16) == 4
    assert worker_threads(Engine(), jobs=3, cores=2) == 1 and worker_threads(Engine("ray"), 1, 16) == 1


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (Engine("spark"), "--engine must be local or ray, got 'spark'"),
        (Engine(jobs=0), "--jobs must be at least 1, got 0"),
        (Engine(address="10.0.0.1:6379"), "--address names a Ray cluster: use it with --engine ray"),
        (Engine(setup="engine_plugins"), "a worker setup is module:function"),
    ],
)
def test_bad_engines_fail_in_one_line_before_any_work(engine, message, monkeypatch):
    monkeypatch.setattr(reproduce_module, "grid", lambda config: pytest.fail("planned"))
    with pytest.raises(MelonbenchError, match=message):
        reproduce(ReproduceConfig(engine=engine))


@pytest.mark.parametrize("command", ["reproduce", "tune"])
def test_engine_ray_without_ray_says_how_to_install_it_in_one_line(command, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setattr(sys, "argv", ["melonbench", command, "--engine", "ray", "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    out = capsys.readouterr()
    assert (out.out + out.err).strip() == f"error: {INSTALL_RAY}"
    assert "pip install 'melonbench[ray]'" in INSTALL_RAY


def test_an_unknown_engine_is_a_usage_error_that_names_the_choices():
    shown = runner.invoke(app, ["reproduce", "--engine", "spark"], env={"COLUMNS": "300"})
    assert shown.exit_code == 2
    assert "Invalid value for '--engine'" in shown.output and "'local', 'ray'" in shown.output


def test_cli_engine_options_reach_the_config(monkeypatch):
    seen = []
    monkeypatch.setattr(reproduce_module, "reproduce", lambda config, **kwargs: seen.append(config.engine))
    monkeypatch.setattr("melonbench.pipeline.tune.tune", lambda config, hooks=None: seen.append(config.engine))
    runner.invoke(app, ["reproduce", "--jobs", "3"])
    runner.invoke(app, ["tune", "--engine", "local", "--jobs", "2"])
    assert seen == [Engine(jobs=3), Engine(jobs=2)]


def test_execute_finds_finished_runs_in_the_store_and_starts_nothing(sequential, tmp_path, monkeypatch):
    _prepare()
    config = RunConfig(device="cpu", pretrain=PretrainConfig(epochs=1, dim=8))
    results = tmp_path / "results"
    first = execute(plan([config]), results)
    shutil.rmtree(home() / "checkpoints")  # a finished run needs no checkpoint: nothing is pre-trained again
    monkeypatch.setattr("melonbench.pipeline.executor.run_task", lambda *a: pytest.fail("ran a task"))
    again = execute(plan([config]), results)
    (key,) = [k for k in first if k.startswith("run-")]
    assert (first[key].status, again[key].status) == ("finished", "already complete")
    assert list(again) == [key]  # the pre-training was not even looked up
