"""The references without learning (pop, recent-pop) and their ``count`` update, against counts done by hand and a
slow replay written from the protocol; and the warm/cold split of every batch, checked on the real Grocery data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from tiny import tiny_stream
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.core.config import PretrainConfig, RunConfig, config_hash
from melonbench.core.errors import IncompatibleError
from melonbench.data.store import load_dataset
from melonbench.models import Popularity, RecentPopularity
from melonbench.online.candidates import evaluation_negatives
from melonbench.online.metrics import full_ranks, sampled_ranks
from melonbench.online.stream import Stream
from melonbench.pipeline import experiment
from melonbench.pipeline.experiment import run_experiment
from melonbench.pipeline.pretrain import pretrain_recommender
from melonbench.strategies import check_compatible, default_strategy

STREAM = torch.tensor([0, 1, 1, 2, 1, 0, 3, 3, 3, 1])


def test_pop_counts_everything_revealed_and_recent_pop_only_the_last_w():
    pop, recent = Popularity(2, 5), RecentPopularity(2, 5, window=3)
    for model in (pop, recent):
        model.observe(STREAM, 0, 4)  # items 0 1 1 2
        model.observe(STREAM, 4, 9)  # items 1 0 3 3 3 (a batch longer than the window)
    # pop: item 0 twice, item 1 three times, item 2 once, item 3 three times, item 4 never.
    assert pop.counts.tolist() == [2, 3, 1, 3, 0]
    # recent-pop, W = 3: the last three revealed positions are 6, 7, 8 (items 3 3 3).
    assert recent.counts.tolist() == [0, 0, 0, 3, 0]
    recent.observe(STREAM, 9, 10)  # item 1 in, position 6 (item 3) out
    assert recent.counts.tolist() == [0, 1, 0, 2, 0]
    users = torch.tensor([0, 1])
    assert recent.score(users, torch.tensor([[3, 1], [4, 3]])).tolist() == [[2.0, 1.0], [0.0, 2.0]]
    assert recent.score_all(users).tolist() == [[0.0, 1.0, 0.0, 2.0, 0.0]] * 2  # the same for every user


@pytest.mark.parametrize("window", [1, 5, 37, 1000])
def test_recent_pop_counts_equal_a_bincount_of_the_window_after_any_batches(window):
    g = torch.Generator().manual_seed(window)
    items = torch.randint(0, 13, (400,), generator=g)
    model = RecentPopularity(1, 13, window=window)
    cuts = sorted({0, 400, *torch.randint(0, 400, (15,), generator=g).tolist()})
    for start, stop in zip(cuts, cuts[1:]):
        model.observe(items, start, stop)
        expected = torch.bincount(items[max(0, stop - window) : stop], minlength=13)  # the definition
        assert torch.equal(model.counts, expected), (start, stop)


def test_ties_count_against_the_positive_so_an_unseen_item_ranks_last():
    # Counts [2, 0, 0, 5]: the positive item 1 (count 0) ties with item 2 and loses to items 0 and 3.
    model = Popularity(1, 4)
    model.observe(torch.tensor([0, 0, 3, 3, 3, 3, 3]), 0, 7)
    scores = model.score_all(torch.tensor([0]))
    everything = torch.ones(1, 4, dtype=torch.bool)
    assert full_ranks(scores, torch.tensor([1]), everything).tolist() == [4]  # 1 + 3 competitors, all >= 0
    assert full_ranks(scores, torch.tensor([0]), everything).tolist() == [2]  # item 0 (count 2): only item 3 is >= 2
    pos = model.score(torch.tensor([0]), torch.tensor([[1]]))[:, 0]
    assert sampled_ranks(pos, model.score(torch.tensor([0]), torch.tensor([[2, 2, 2]]))).tolist() == [4]


def test_pretraining_a_reference_counts_the_pretraining_part():
    stream = tiny_stream()
    p = stream.pretrain_end
    config = PretrainConfig(window=50)
    negatives = torch.zeros(stream.validation_end - p, 99, dtype=torch.long)
    pop, info = pretrain_recommender("pop", stream, config, 0, negatives)
    assert torch.equal(pop.counts, torch.bincount(stream.items[:p], minlength=stream.n_items))
    assert info["best_epoch"] == 0 and info["curve"] == []
    recent, _ = pretrain_recommender("recent-pop", stream, config, 0, negatives)
    assert recent.window == 50
    assert torch.equal(recent.counts, torch.bincount(stream.items[p - 50 : p], minlength=stream.n_items))


def test_the_window_keeps_earlier_hashes_at_its_default():
    # PretrainConfig.window was added after checkpoints and runs existed: at 256 it must not change their keys.
    legacy = {"epochs": 100, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256, "patience": 10, "dim": 64}
    assert config_hash(PretrainConfig()) == config_hash(legacy)
    assert config_hash(PretrainConfig(window=100)) != config_hash(legacy)


def test_references_run_with_count_only_and_take_it_by_default(monkeypatch):
    assert default_strategy("pop") == default_strategy("recent-pop") == "count"
    assert default_strategy("bpr") == "default"
    with pytest.raises(IncompatibleError, match="model 'pop' runs with: count"):
        check_compatible("default", "pop")
    with pytest.raises(IncompatibleError, match="strategy 'count' does not support model 'bpr'"):
        check_compatible("count", "bpr")
    calls = []
    monkeypatch.setattr(experiment, "run_experiment", lambda config, *a, **k: calls.append(config) or _fake(config))
    result = CliRunner().invoke(app, ["run", "-m", "recent-pop", "--window", "100"])
    assert result.exit_code == 0, result.output
    assert calls == [RunConfig(model="recent-pop", strategy="count", pretrain=PretrainConfig(window=100))]
    result = CliRunner().invoke(app, ["run", "-m", "pop", "-s", "default"])
    assert result.exit_code != 0 and "runs with: count" in str(result.exception)
    result = CliRunner().invoke(app, ["run", "-m", "recent-pop", "--window", "0"])
    assert result.exit_code != 0 and "--window must be at least 1" in str(result.exception)


def _fake(config):
    return experiment.RunResult("x", experiment.Path("/nowhere"), "finished", {"summary": {}, "config": {}})


def slow_reference(stream: Stream, negatives: np.ndarray, spans, counts_before, ks=(5, 10, 20)) -> list[dict]:
    """Every column of every batch, written from the protocol one interaction at a time in numpy.

    ``counts_before(start)``: the model's scores before the batch starting at ``start``. Warm item = its first
    position < the batch's start; warm user likewise.
    """
    users, items = stream.users.numpy(), stream.items.numpy()
    first_item = {int(i): int(np.argmax(items == i)) for i in np.unique(items)}
    first_user = {int(u): int(np.argmax(users == u)) for u in np.unique(users)}
    rows = []
    for _, _, start, stop in spans:
        scores = counts_before(start).astype(float)
        per = []
        for p in range(start, stop):
            pos = scores[items[p]]
            r_s = 1 + int(np.sum(scores[negatives[p - stream.pretrain_end]] >= pos))
            cand = np.array([first_item.get(i, stream.n) < p for i in range(stream.n_items)])
            cand[items[:p][users[:p] == users[p]]] = False
            cand[items[p]] = False
            r_f = 1 + int(np.sum(scores[cand] >= pos))
            values = {}
            for proto, r in (("sampled", r_s), ("full", r_f)):
                for k in ks:
                    values[f"{proto}_hr@{k}"] = float(r <= k)
                    values[f"{proto}_ndcg@{k}"] = 1 / np.log2(r + 1) if r <= k else 0.0
            warm_item, warm_user = first_item[int(items[p])] < start, first_user[int(users[p])] < start
            per.append((values, {"warm_item": warm_item, "cold_item": not warm_item, "warm_user": warm_user}))
        row = {name: np.mean([v[name] for v, _ in per]) for name in per[0][0]}
        for group in ("warm_item", "cold_item", "warm_user"):
            members = [v for v, g in per if g[group]]
            row[f"n_{group}"] = len(members)
            for name in per[0][0]:
                row[f"{name}_{group}"] = np.mean([v[name] for v in members]) if members else np.nan
        rows.append(row)
    return rows


@pytest.mark.parametrize(("model", "window"), [("pop", 256), ("recent-pop", 100)])
def test_a_reference_run_on_grocery_equals_the_slow_replay_column_by_column(in_grocery, tmp_path, model, window):
    config = RunConfig(
        dataset="grocery",
        model=model,
        strategy="count",
        split="validation",
        device="cpu",
        pretrain=PretrainConfig(window=window),
    )
    run = run_experiment(config, tmp_path)
    got = pl.read_parquet(run.path / "batches.parquet")
    ds = load_dataset("grocery")
    stream = Stream.from_frame(ds.interactions, torch.device("cpu"))
    negatives, _ = evaluation_negatives(ds.path, stream, 0, "leakfree", 99)
    items = stream.items.numpy()
    if model == "pop":
        counts = lambda start: np.bincount(items[:start], minlength=stream.n_items)  # noqa: E731
    else:
        counts = lambda start: np.bincount(items[max(0, start - window) : start], minlength=stream.n_items)  # noqa: E731
    spans = [(r["batch"], r["split"], r["start"], r["start"] + r["n"]) for r in got.iter_rows(named=True)]
    want = slow_reference(stream, negatives.numpy(), spans, counts)
    for row, expected in zip(got.iter_rows(named=True), want, strict=True):
        for name, value in expected.items():
            if np.isnan(value):
                assert np.isnan(row[name]), (row["batch"], name)
            else:
                assert row[name] == pytest.approx(value, abs=1e-6), (row["batch"], name)
        assert row["n_cold_user"] == row["n"] - row["n_warm_user"]
    # The validation part of Grocery has items new in a batch and users new in a batch: both splits are exercised.
    assert got["n_cold_item"].sum() > 0 and got["n_cold_user"].sum() > 0
    summary = run.manifest["summary"]
    warm = got["n_warm_item"].to_numpy()
    assert summary["full_hr@10_warm_item"] == pytest.approx(
        np.nansum(got["full_hr@10_warm_item"].to_numpy() * warm) / warm.sum()
    )
    assert summary["n_warm_item"] == warm.sum()
