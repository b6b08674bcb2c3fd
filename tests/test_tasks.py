"""A grid as tasks with dependencies (`pipeline.tasks`): each pre-training once, meta-models per setting, in order."""

from __future__ import annotations

import dataclasses

import pytest

from melonbench.core.config import RunConfig
from melonbench.core.errors import DivergenceError
from melonbench.pipeline import executor
from melonbench.pipeline.executor import execute
from melonbench.pipeline.tasks import Task, plan


def _runs(strategy: str, lrs: tuple[str, ...], seeds: int) -> list[RunConfig]:
    base = RunConfig(strategy=strategy, split="validation")
    return [dataclasses.replace(base, seed=seed, strategy_params=(("lr", lr),)) for lr in lrs for seed in range(seeds)]


def test_plan_lists_each_pretraining_once_and_each_task_after_what_it_needs():
    runs = _runs("mwnet", ("0.001", "0.01"), seeds=2)
    planned = plan(runs)
    kinds = [t.kind for t in planned]
    assert kinds.count("pretrain") == 2 and kinds.count("meta") == 4 and kinds.count("run") == 4
    assert [t.config for t in planned if t.kind == "run"] == runs
    seen = set()
    for task in planned:
        assert set(task.needs) <= seen, f"{task.key} before what it needs"
        seen.add(task.key)
    pretrain = {t.config.seed: t.key for t in planned if t.kind == "pretrain"}
    for task in planned:
        if task.kind == "meta":
            assert task.needs == (pretrain[task.config.seed],)
        if task.kind == "run":
            (need,) = task.needs
            assert need.startswith("meta-")


def test_meta_tasks_are_keyed_by_the_resolved_settings_and_plain_strategies_have_none():
    spelled = _runs("mwnet", ("0.001", "1e-3"), seeds=1)  # one value, two spellings: one meta-model
    assert [t.kind for t in plan(spelled)].count("meta") == 1
    planned = plan(_runs("default", ("0.001", "0.01"), seeds=1))
    assert [t.kind for t in planned] == ["pretrain", "run", "run"]
    assert all(t.needs == (planned[0].key,) for t in planned[1:])


def test_execute_runs_in_order_and_a_failure_skips_only_what_needs_it(monkeypatch):
    calls = []

    def fake(task, results, hooks):
        calls.append(task.key)
        if task.key == "b":
            raise DivergenceError("boom")
        if task.key == "e":
            raise RuntimeError("a defect")
        return task.key.upper()

    monkeypatch.setattr(executor, "run_task", fake)
    monkeypatch.setattr(executor, "_still_to_do", lambda tasks, results, done: list(tasks))  # nothing is stored
    monkeypatch.setattr(executor, "record_not_run", lambda *args: None)
    base = RunConfig()
    graph = [Task("a", "pretrain", base), Task("b", "meta", base, ("a",)), Task("c", "run", base, ("b",))]
    graph += [Task("e", "pretrain", base), Task("f", "run", base, ("e",)), Task("d", "run", base, ("a",))]
    finished = []
    done = execute(graph, on_done=lambda task, result: finished.append(task.key))
    assert calls == ["a", "b", "e", "d"]  # an unexpected error stops nothing but what needs it
    assert done["a"] == "A" and done["d"] == "D"
    assert isinstance(done["b"], DivergenceError) and done["c"] is done["b"]
    assert isinstance(done["e"], RuntimeError) and done["f"] is done["e"]
    assert finished == ["a", "b", "c", "e", "f", "d"]
    with pytest.raises(ValueError, match="task c needs tasks that are not in the grid: b"):
        execute([Task("c", "run", base, ("b",))])
