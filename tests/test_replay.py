"""The replay protocol on real data: Amazon Grocery 2014 (ReChorus 5-core CSVs in ../shared/data), 20-core.

The 20-core filter leaves 33,326 interactions of 1,342 users and 1,480 items (computed independently with a plain
polars group-by on the concatenated CSVs), close to the paper's Grocery (1,233 / 1,433 / 29,782).
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from melonbench import strategies
from melonbench.core.config import PretrainConfig, RunConfig
from melonbench.data.store import load_dataset
from melonbench.online.candidates import evaluation_negatives
from melonbench.online.history import History
from melonbench.online.replay import rank_batch
from melonbench.online.stream import Batch, Stream
from melonbench.pipeline.experiment import RunHooks, run_experiment
from melonbench.pipeline.pretrain import load_or_pretrain
from melonbench.strategies.base import Strategy

PRETRAIN = PretrainConfig(epochs=3, patience=3)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@dataclasses.dataclass(frozen=True)
class MemoriseConfig:
    steps: int = 60


class Memorise(Strategy):
    """A cheating strategy: it fits each batch hard. Ranking-before-update must not let it profit."""

    name = "memorise"
    label = "Memorise"
    Config = MemoriseConfig

    def __init__(self, model, config, seed):
        super().__init__(model, config, seed)
        self.opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def online_step(self, batch, history):
        losses = self.model.bpr_loss(batch.users, batch.items, batch.negatives)
        for _ in range(self.config.steps):
            self.opt.zero_grad()
            self.model.bpr_loss(batch.users, batch.items, batch.negatives).mean().backward()
            self.opt.step()
        return losses.detach()


def test_prepared_grocery_has_the_independently_computed_size(in_grocery):
    ds = load_dataset("grocery")
    assert (len(ds.interactions), ds.interactions["user"].n_unique(), ds.interactions["item"].n_unique()) == (
        33_326,
        1_342,
        1_480,
    )


def stream_and_negatives(device="cpu"):
    ds = load_dataset("grocery")
    stream = Stream.from_frame(ds.interactions, torch.device(device))
    negatives, _ = evaluation_negatives(ds.path, stream, 0, "leakfree", 99)
    return ds, stream, negatives


def test_a_batch_is_ranked_before_the_update_that_could_memorise_it(in_grocery):
    ds, stream, negatives = stream_and_negatives()
    n_val = stream.validation_end - stream.pretrain_end
    model = load_or_pretrain("bpr", stream, PRETRAIN, 0, "grocery-test", negatives[:n_val]).model
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    lo, hi = stream.pretrain_end, stream.pretrain_end + 256
    pos = torch.arange(lo, hi)
    users, items, negs = stream.users[lo:hi], stream.items[lo:hi], negatives[: hi - lo]
    before, _ = rank_batch(model, history, users, items, pos, negs)
    batch = Batch(0, "validation", pos, users, items, stream.ts[lo:hi], negs[:, 0])
    Memorise(model, MemoriseConfig(), 0).online_step(batch, history)
    after, _ = rank_batch(model, history, users, items, pos, negs)
    # The memoriser really does fit the batch (so ranking after the update would have been a leak) ...
    assert (after <= 5).float().mean() > 0.9 > (before <= 5).float().mean()


def test_memorising_strategy_gains_nothing_on_the_batch_it_memorises(in_grocery, monkeypatch, tmp_path):
    monkeypatch.setitem(strategies.STRATEGIES, "memorise", Memorise)
    triton = importlib.util.find_spec("triton") is not None
    monkeypatch.setattr(Memorise, "fused", triton, raising=False)  # as a strategy whose own kernels ran says
    base = RunConfig(dataset="grocery", split="validation", pretrain=PRETRAIN)
    frozen = run_experiment(dataclasses.replace(base, strategy="frozen"), tmp_path)
    cheat = run_experiment(dataclasses.replace(base, strategy="memorise"), tmp_path)
    f, c = frozen.path / "batches.parquet", cheat.path / "batches.parquet"
    import polars as pl

    f, c = pl.read_parquet(f), pl.read_parquet(c)
    # ... yet the replay scores batch 0 identically to a model that never trains (both start from one checkpoint).
    metric_cols = [k for k in f.columns if k.startswith(("sampled_", "full_"))]
    unrelated = ["eval_s", "update_s", "loss"]
    assert f.head(1).drop(unrelated).equals(c.head(1).drop(unrelated))  # NaN (an empty group) equals NaN here
    assert len(metric_cols) == 12 * 5  # all interactions, then warm/cold items, warm/cold users
    assert frozen.manifest["negatives_sha256"] == cheat.manifest["negatives_sha256"]
    assert frozen.manifest["device"]["cuda_graphs"] == {"replays": 0, "failure": None}  # on the CPU: never graphed
    assert frozen.manifest["device"]["fused_kernels"] is False and "triton" not in frozen.manifest["versions"]
    if triton:  # the manifest names the Triton that compiled a strategy's kernels
        assert cheat.manifest["device"]["fused_kernels"] is True
        assert cheat.manifest["versions"]["triton"] == importlib.import_module("triton").__version__


def brute_force_history(ds):
    users = ds.interactions["user"].to_numpy()
    items = ds.interactions["item"].to_numpy()
    first_seen = {}
    for p, i in enumerate(items):
        first_seen.setdefault(int(i), p)
    return users, items, first_seen


def test_sampled_negatives_exclude_the_users_past_the_positive_and_unborn_items(in_grocery):
    ds, stream, negatives = stream_and_negatives()
    users, items, first_seen = brute_force_history(ds)
    past = defaultdict(set)
    for p in range(stream.pretrain_end):
        past[users[p]].add(items[p])
    table = negatives.numpy()
    for row, p in enumerate(range(stream.pretrain_end, stream.n)):
        negs = set(table[row].tolist())
        assert len(negs) == 99
        assert items[p] not in negs
        assert not negs & past[users[p]]
        assert all(first_seen[j] < p for j in negs)
        past[users[p]].add(items[p])


def test_full_ranking_candidates_hold_no_future_items(in_grocery):
    ds, stream, _ = stream_and_negatives()
    users, items, first_seen = brute_force_history(ds)
    start = stream.validation_end  # first test batch
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=start)
    pos = torch.arange(start, start + 256)
    got = (history.exists_mask(pos) & ~history.user_items_mask(stream.users[pos], pos)).numpy()
    for row, p in enumerate(range(start, start + 256)):
        mine = {items[q] for q in range(p) if users[q] == users[p]}
        expected = {j for j, q in first_seen.items() if q < p} - mine
        assert set(np.flatnonzero(got[row]).tolist()) == expected


def test_paper_protocol_reproduces_its_documented_leak(in_grocery):
    ds, stream, leakfree = stream_and_negatives()
    paper, _ = evaluation_negatives(ds.path, stream, 0, "paper", 99)
    users, items, _ = brute_force_history(ds)
    ever = defaultdict(set)
    for u, i in zip(users, items):
        ever[u].add(i)
    online = range(stream.pretrain_end, stream.n)
    future_in_leakfree = sum(len(set(leakfree[r].tolist()) & ever[users[p]]) for r, p in enumerate(online))
    future_in_paper = sum(len(set(paper[r].tolist()) & ever[users[p]]) for r, p in enumerate(online))
    # Leak-free negatives may be items the user clicks later (the model cannot know); the paper's never are,
    # which tells the model what the user will not click: the look-ahead leak, reproduced on purpose.
    assert future_in_paper == 0
    assert future_in_leakfree > 0


class Interrupt(RunHooks):
    def __init__(self, after: int):
        self.after = after

    def advance(self, done, split, running_hr5):
        if done >= self.after:
            raise KeyboardInterrupt


class Record(RunHooks):
    def __init__(self):
        self.calls = []

    def advance(self, done, split, running_hr5):
        self.calls.append((done, split, running_hr5))


def test_an_interrupted_run_resumes_to_the_identical_result(in_grocery, tmp_path):
    import polars as pl

    config = RunConfig(dataset="grocery", split="test", pretrain=PRETRAIN, checkpoint_every=10)
    progress = Record()
    whole = run_experiment(config, tmp_path / "a", progress)
    # What progress shows last is the summary table's sampled HR@5 (the interaction-weighted test mean), exactly.
    assert progress.calls[-1][1:] == ("test", whole.manifest["summary"]["sampled_hr@5"])
    with pytest.raises(KeyboardInterrupt):
        # Raises at the flush after batch 30, i.e. after the checkpoint at batch 20.
        run_experiment(config, tmp_path / "b", Interrupt(after=25))
    # Another checkpoint interval and warm-up are the same run (neither changes a result): it resumes, and keeps
    # the warm-up flags it started with.
    resumed = run_experiment(dataclasses.replace(config, checkpoint_every=7, warmup=5), tmp_path / "b")
    assert resumed.run_id == whole.run_id and resumed.status == "resumed"
    assert resumed.manifest["resumed_from_batch"] == 20 and resumed.manifest["resumed_at"] == [20]
    assert resumed.manifest["config"]["warmup"] == 3
    timing = ["eval_s", "update_s"]
    a = pl.read_parquet(whole.path / "batches.parquet")
    b = pl.read_parquet(resumed.path / "batches.parquet")
    assert a.drop(timing).equals(b.drop(timing))  # the warm-up flags included
    assert [i for i, w in enumerate(b["warmup"].to_list()) if w] == [0, 1, 2]  # the run's first 3 batches
    # ... while the timing medians also leave out the 3 batches the resumed process warmed up on
    kept = b.filter(~pl.col("batch").is_in([0, 1, 2, 20, 21, 22]))
    assert resumed.manifest["summary"]["median_update_s"] == float(np.median(kept["update_s"].to_numpy()))
    assert whole.manifest["summary"]["median_update_s"] == float(np.median(a["update_s"].to_numpy()[3:]))
    same = subprocess.run(
        [sys.executable, str(BENCHMARKS / "same_metrics.py"), str(whole.path), str(resumed.path)],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0 and "bit-identical: True" in same.stdout, same.stdout + same.stderr
    for neutral in (config, dataclasses.replace(config, checkpoint_every=1, warmup=0)):
        assert run_experiment(neutral, tmp_path / "b").status == "already complete"


def test_cold_users_per_batch_are_the_distinct_users_unseen_in_pretraining(in_grocery, tmp_path):
    import polars as pl

    run = run_experiment(
        RunConfig(dataset="grocery", strategy="frozen", split="validation", pretrain=PRETRAIN), tmp_path
    )
    rows = pl.read_parquet(run.path / "batches.parquet")
    frame = load_dataset("grocery").interactions
    pretrain_users = set(frame.filter(pl.col("split") == "pretrain")["user"].to_list())
    users = frame["user"].to_numpy()
    expected = [len({int(u) for u in users[s : s + n]} - pretrain_users) for s, n in zip(rows["start"], rows["n"])]
    assert rows["cold_users"].to_list() == expected
    assert sum(expected) > 0  # the validation part of Grocery does have new users
