"""What a Typer/Click user expects of the command line: choices for fixed-value options, whole tables and progress
lines when the output is not a terminal (``CliRunner`` is not one), and ``melonbench strategies``."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from melonbench import cli
from melonbench.cli import app
from melonbench.models import MODELS
from melonbench.pipeline import batch_rows, experiment
from melonbench.pipeline.experiment import RunResult
from melonbench.pipeline.progress import LogHooks, RichHooks, progress_hooks
from melonbench.pipeline.tune import RANKINGS as TUNE_RANKINGS
from melonbench.report.build import RANKING_SETS
from melonbench.strategies import STRATEGIES
from melonbench.strategies.catalog import settings, summary
from melonbench.strategies.melon import MelonConfig

runner = CliRunner()

# Every option of every command whose value is one of a fixed set, with that set.
CHOICES = [
    ("prepare", "--core-mode", ["single", "iterative"]),
    ("prepare", "--dedupe", ["first", "keep"]),
    ("pretrain", "--device", ["auto", "cpu", "cuda"]),
    ("run", "--device", ["auto", "cpu", "cuda"]),
    ("run", "--split", ["validation", "test"]),
    ("run", "--protocol", ["leakfree", "paper"]),
    ("report", "--ranking", ["full", "sampled", "both"]),
    ("reproduce", "--protocol", ["leakfree", "paper"]),
    ("reproduce", "--ranking", ["full", "sampled", "both"]),
    ("reproduce", "--device", ["auto", "cpu", "cuda"]),
    ("tune", "--ranking", ["full", "sampled"]),
    ("tune", "--device", ["auto", "cpu", "cuda"]),
]


def complete(words: str) -> list[str]:
    """What bash completion offers after ``words`` (the last word being completed)."""
    env = {"_MELONBENCH_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = runner.invoke(app, [], env=env, prog_name="melonbench")
    return result.output.split()


@pytest.mark.parametrize(("command", "option", "values"), CHOICES)
def test_fixed_value_options_are_choices_in_help_and_completion(command, option, values):
    assert complete(f"melonbench {command} {option} ") == values
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert "|".join(values) in result.output


def test_the_choices_are_the_librarys():
    # The CLI's own lists of the values that the library defines elsewhere (the Literal types give the others).
    assert {c.value for c in cli.RankingChoice} == set(RANKING_SETS)
    assert [c.value for c in cli.ObjectiveChoice] == list(TUNE_RANKINGS)
    assert [c.value for c in cli.DeviceChoice] == ["auto", "cpu", "cuda"]
    for device in ("auto", "cpu"):
        experiment.resolve_device(device)  # and "cuda" where a GPU is (tests/test_cuda_graph.py runs there)


def patch_engine(monkeypatch, progress: bool) -> list:
    """The engine of ``run``, patched: it records each config and (``progress``) reports progress as a real run."""
    calls = []

    def fake_run(config, results_root=None, hooks=None, tuning=None):
        calls.append(config)
        if progress:
            hooks.pretrain_epoch(1, 0.6931, 0.25)
            hooks.meta_batch(1, 4, 4)
            hooks.start(100, 0)
            for done in range(10, 101, 10):
                hooks.advance(done, "validation" if done <= 20 else "test", 0.5)
        summary = {"sampled_hr@5": 0.5, "sampled_ndcg@10": 0.25, "full_hr@5": 0.125, "full_ndcg@10": 0.0625}
        summary |= {"median_update_s": 0.001, "median_eval_s": 0.002}
        manifest = {"summary": summary, "config": {"strategy": config.strategy, "model": config.model, "seed": 0}}
        return RunResult("run-0", Path("/nowhere/run-0"), "already complete", manifest)

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    return calls


@pytest.fixture
def captured(monkeypatch):
    return patch_engine(monkeypatch, progress=True)


@pytest.fixture
def quiet(monkeypatch):
    return patch_engine(monkeypatch, progress=False)


@pytest.mark.parametrize(
    ("args", "option", "shown"),
    [
        (["run", "--protocol", "sampled"], "--protocol", "'leakfree', 'paper'"),
        (["run", "--split", "train"], "--split", "'validation', 'test'"),
        (["run", "--device", "gpu"], "--device", "'auto', 'cpu', 'cuda'"),
        (["prepare", "--dedupe", "last"], "--dedupe", "'first', 'keep'"),
        (["report", "--ranking", "paper"], "--ranking", "'full', 'sampled', 'both'"),
        (["tune", "--ranking", "both"], "--ranking", "'full', 'sampled'"),
    ],
)
def test_a_value_outside_the_choices_is_a_usage_error_that_names_them(captured, args, option, shown):
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output and shown in result.output
    assert captured == []


def test_the_summary_table_stays_whole_when_piped(quiet):
    result = runner.invoke(app, ["run"])  # not a terminal, and no COLUMNS: rich would squeeze to 80 columns
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    header = next(line for line in result.stdout.splitlines() if "strategy / model / seed" in line)
    for column in ("HR@5 sampled", "NDCG@10 sampled", "HR@5 full", "NDCG@10 full", "update s", "eval s", "status"):
        assert column in header
    row = next(line for line in result.stdout.splitlines() if "default / bpr / 0" in line)
    assert re.search(r"0\.5000 .* 0\.2500 .* 0\.1250 .* 0\.0625 .* 0\.00100 .* 0\.00200 .* already complete", row)


def test_a_run_logs_progress_lines_when_not_on_a_terminal(captured):
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "default/bpr seed 0: " in line]
    texts = [line.split("default/bpr seed 0: ", 1)[1] for line in lines]
    assert texts[:3] == [
        "pre-training epoch 1: loss 0.6931, validation HR@5 0.2500",
        "meta-model pre-training epoch 1 done (4 batches)",
        "replay of 100 batches started",
    ]
    # every 5 batches (a twentieth), reported at each advance (every 10 here), and the last one
    assert [t.split(" (")[0] for t in texts[3:]] == [f"batch {d}/100" for d in range(10, 101, 10)]
    assert texts[4].endswith("sampled HR@5 (validation so far) 0.5000")
    assert texts[-1].endswith("sampled HR@5 (test so far) 0.5000")
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+\d+:\d\d:\d\d  ", line) for line in lines)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_are_written_when_they_happen_with_elapsed_time_and_speed():
    out, clock = io.StringIO(), Clock()
    hooks = LogHooks(Console(file=out, width=80), "melon/ncf seed 2", every=25, clock=clock)
    with hooks:
        clock.now += 3725  # 1 h 2 min 5 s of pre-training
        hooks.pretrain_epoch(7, 0.5, 0.125)
        last = out.getvalue().splitlines()[-1]
        assert last.endswith("+1:02:05  melon/ncf seed 2: pre-training epoch 7: loss 0.5000, validation HR@5 0.1250")
        hooks.meta_batch(1, 3, 10)  # within an epoch: no line
        assert len(out.getvalue().splitlines()) == 1
        hooks.start(90, 40)  # resumed after 40 batches
        assert "replay of 90 batches, resumed after batch 39 started" in out.getvalue()
        for done, seconds in ((45, 2.0), (50, 2.0), (60, 2.0), (70, 2.0), (75, 2.0), (90, 2.0)):
            clock.now += seconds
            hooks.advance(done, "test", 0.25)
    lines = out.getvalue().splitlines()[2:]
    assert [line.split("seed 2: ")[1] for line in lines] == [
        "batch 50/90 (2.5 batch/s), sampled HR@5 (test so far) 0.2500",  # 10 batches in 4 s
        "batch 75/90 (3.5 batch/s), sampled HR@5 (test so far) 0.2500",
        "batch 90/90 (4.2 batch/s), sampled HR@5 (test so far) 0.2500",  # the last, though not a multiple of 25
    ]


def test_the_live_bar_is_for_terminals_and_lines_for_everything_else():
    assert isinstance(progress_hooks(Console(file=io.StringIO()), "x"), LogHooks)
    assert isinstance(progress_hooks(Console(file=io.StringIO(), force_terminal=True), "x"), RichHooks)


def test_progress_hr5_is_the_interaction_weighted_mean_of_the_split_being_replayed():
    rows = [
        {"split": "validation", "n": 100, "sampled_hr@5": 0.9},
        {"split": "test", "n": 256, "sampled_hr@5": 0.5},
        {"split": "test", "n": 64, "sampled_hr@5": 0.25},
    ]
    # (256 · 0.5 + 64 · 0.25) / 320 = 0.45; the unweighted mean of the rows would be 0.55, of the test rows 0.375
    assert batch_rows.progress_hr5(rows) == pytest.approx(0.45, abs=1e-12)
    assert batch_rows.progress_hr5(rows[:1]) == pytest.approx(0.9)
    full_rows = [r | {"loss": 0.0, "eval_s": 0.0, "update_s": 0.0, "warmup": False} | _groups(r) for r in rows]
    assert batch_rows.progress_hr5(rows) == batch_rows.summarise(full_rows, "test")["sampled_hr@5"]


def _groups(row: dict) -> dict:
    from melonbench.online.groups import GROUPS, count_column

    return {count_column(g): row["n"] for g in GROUPS}


def test_strategies_lists_every_strategy_its_models_and_meta_model():
    result = runner.invoke(app, ["strategies"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in _table_lines(result)}
    for name, cls in STRATEGIES.items():
        models = ", ".join(m for m in MODELS if m in cls.supports)
        assert rows[name] == [cls.label, models, "yes" if cls.meta else "-", summary(cls)]
    assert rows["sml"][1] == "bpr"
    assert rows["count"][1] == "pop, recent-pop"
    assert rows["default"][1] == "bpr, ncf" and rows["melon"][2] == "yes" and rows["frozen"][2] == "-"
    assert rows["default"][3] == "Plain fine-tuning of the recommender on each online batch."
    for name in MODELS:
        assert name in rows
    assert rows["pop"][:2] == ["-", "count"]
    assert rows["ncf"][1] == "default, eals, frozen, melon, melon-i, melon-p, metasgd, mwnet, s2meta"


def _table_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("│")]


def test_strategies_show_prints_every_setting_with_its_default_and_note():
    result = runner.invoke(app, ["strategies", "--show", "melon"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in _table_lines(result)}
    defaults = MelonConfig()  # the printed default is the dataclass's (a string quoted)
    assert rows["meta_epochs"][:2] == ["int", str(defaults.meta_epochs)]
    assert rows["meta_epochs"][2].startswith("passes over the pre-training part, each from the checkpoint; paper: 100")
    assert rows["variant"][:2] == ["str", repr(defaults.variant)]
    assert rows["variant"][2].startswith('"paper-mean" (the paper\'s networks,')  # the comment lines above it
    assert rows["lr_bias_high"] == ["float", str(defaults.lr_bias_high), ""]  # a field without a comment
    assert list(rows) == [s.name for s in settings("melon")]
    inherited = {s.name: s for s in settings("eals")}  # eALS's config extends Default's: both sets of notes
    assert inherited["lr"].note == "paper, Sec. 5.1" and inherited["w_new"].default == 4.0
    assert "settings: none" in runner.invoke(app, ["strategies", "--show", "frozen"]).output


def test_strategies_show_of_an_unknown_name_is_a_one_line_error():
    result = runner.invoke(app, ["strategies", "--show", "melom"])
    assert result.exit_code != 0
    assert str(result.exception).startswith("Unknown strategy 'melom'. Did you mean 'melon'?")


def test_registry_names_complete_from_the_registries():
    assert complete("melonbench run --strategy melon") == ["melon", "melon-i", "melon-p"]
    assert complete("melonbench run --model ") == list(MODELS)
    assert "amazon-book" in complete("melonbench prepare ")
