"""Meta pre-training (``pipeline.meta_pretrain``): the online replay's negatives, divergence stops it, and a broken
meta-model is never cached nor used."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny import tiny_model, tiny_stream

from melonbench import strategies
from melonbench.core.errors import DivergenceError
from melonbench.online.history import History
from melonbench.online.stream import Batch
from melonbench.pipeline.meta_pretrain import META_BOUND, load_or_train_meta, meta_state_problem, train_meta
from melonbench.store.paths import checkpoints_dir
from melonbench.strategies import STRATEGIES, build_strategy
from melonbench.strategies.base import Strategy


@dataclasses.dataclass(frozen=True)
class PoisonConfig:
    meta_epochs: int = 2
    poison_at: int = 0  # the pretrain_step call (1-based, over all epochs) that breaks the meta-model; 0: never
    poison: str = "nan"  # "nan" or "big" (the meta-model), or "loss" (a non-finite loss)


class Poisoned(Strategy):
    """A meta strategy whose meta-model (three numbers) turns non-finite or huge at a chosen batch."""

    name = "poisoned"
    label = "Poisoned"
    meta = True
    Config = PoisonConfig
    trained = 0  # how many meta pre-trainings began (class-wide: train_meta builds its own instances)
    seen: list[Batch] = []  # noqa: RUF012  (the batches every trainer saw, for the negatives test)
    starts: list[float] = []  # noqa: RUF012  (the recommender's first table's sum when each pass began)

    def __init__(self, model, config, seed):
        super().__init__(model, config, seed)
        self.weight = torch.ones(3)
        self.calls = 0  # pretrain_step calls over all passes (part of the meta state)
        self.steps = 0  # this instance's
        self.loaded = False

    def online_step(self, batch, history):
        return self.model.bpr_loss(batch.users, batch.items, batch.negatives).detach()

    def pretrain_step(self, batch, history):
        table = next(self.model.parameters())
        if self.steps == 0:
            Poisoned.trained += not self.loaded
            Poisoned.starts.append(float(table.detach().double().sum()))
        Poisoned.seen.append(batch)
        self.calls += 1
        self.steps += 1
        self.weight += 1.0  # learns something
        with torch.no_grad():
            table += 1.0  # and moves the recommender, as a meta strategy's update does
        losses = self.online_step(batch, history)
        if self.calls == self.config.poison_at:
            if self.config.poison == "loss":
                losses[3] = float("inf")
            else:
                self.weight[1] = float("nan") if self.config.poison == "nan" else 10 * META_BOUND
        return losses

    def meta_state_dict(self):
        return {
            "weight": self.weight.clone(),
            "calls": torch.tensor(self.calls),
            "optimizer": {"state": {0: {"step": torch.tensor(1e12)}}},
        }

    def load_meta_state_dict(self, state):
        self.weight = state["weight"].clone()
        self.calls = int(state["calls"])
        self.loaded = True


@pytest.fixture
def poisoned(monkeypatch):
    monkeypatch.setitem(strategies.STRATEGIES, "poisoned", Poisoned)
    monkeypatch.setattr(Poisoned, "trained", 0)
    monkeypatch.setattr(Poisoned, "seen", [])
    monkeypatch.setattr(Poisoned, "starts", [])


def load(stream, params, on_note=None):
    """load_or_train_meta for a fresh Poisoned strategy on the tiny stream (7 pre-training batches of 64)."""
    strategy = build_strategy("poisoned", tiny_model("bpr", stream), params, 0)
    load_or_train_meta(strategy, params, stream, "ckpt", 0, 64, on_note=on_note)
    return strategy


def meta_files():
    folder = checkpoints_dir()
    return sorted(folder.glob("meta-*.pt")) if folder.is_dir() else []


@pytest.mark.parametrize(
    ("poison", "says"),
    [
        ("nan", "weight holds non-finite values"),
        ("big", "weight reaches 1e+09 (bound 1e+08)"),
        ("loss", "the batch's loss became inf"),
    ],
)
def test_a_diverging_meta_model_stops_with_epoch_and_batch_and_is_not_cached(poisoned, poison, says):
    stream = tiny_stream()  # 420 pre-training interactions: 7 batches of 64 per epoch
    params = (("poison_at", "9"), ("poison", poison))  # the 9th step: epoch 2, batch 2
    with pytest.raises(DivergenceError) as caught:
        load(stream, params)
    message = str(caught.value)
    assert message == (
        f"meta pre-training of poisoned (seed 0) diverged in epoch 2 at batch 2 of 7: {says}; nothing was cached"
    )
    assert meta_files() == []


def test_a_broken_cached_meta_model_is_trained_again_with_a_note(poisoned):
    stream = tiny_stream()
    healthy = load(stream, ())
    assert Poisoned.trained == 1 and healthy.weight.tolist() == [15.0, 15.0, 15.0]  # 1 + 14 steps
    (path,) = meta_files()
    state = torch.load(path, weights_only=True)
    state["weight"][2] = float("nan")  # as a cache written before the check existed
    torch.save(state, path)
    notes = []
    again = load(stream, (), on_note=notes.append)
    assert Poisoned.trained == 2  # trained again, not loaded
    assert again.weight.tolist() == [15.0, 15.0, 15.0]
    assert notes == [
        "cached meta-model of poisoned (seed 0) was unusable (weight holds non-finite values): training it again"
    ]
    (path,) = meta_files()
    assert meta_state_problem(torch.load(path, weights_only=True)) is None  # the cache now holds the healthy one
    load(stream, ())
    assert Poisoned.trained == 2  # ... and is used as it is


def test_meta_state_check_reads_every_float_and_skips_step_counters():
    assert meta_state_problem({"a": torch.ones(2), "opt": {"state": {0: {"step": torch.tensor(1e30)}}}}) is None
    assert meta_state_problem({"a": [torch.ones(2), torch.tensor([1.0, -2e8])]}) == "a.1 reaches 2e+08 (bound 1e+08)"
    assert meta_state_problem({"a": {"b": torch.tensor([float("-inf")])}}) == "a.b holds non-finite values"
    assert meta_state_problem({"ids": torch.tensor([10**12]), "empty": torch.zeros(0)}) is None  # ints, empty


def test_meta_pretraining_draws_negatives_as_the_online_replay(poisoned):
    # the online rule: for the interaction at p, an item that appeared before p, not the positive, not one of the
    # user's items before p. tiny_stream's first 30 positions are (p, p): position p has the p items 0 .. p-1 to
    # choose from, except position 0, which has none and is not trained on.
    stream = tiny_stream()
    strategy = build_strategy("poisoned", tiny_model("bpr", stream), (("meta_epochs", "1"),), 0)
    train_meta(strategy, (("meta_epochs", "1"),), stream, 0, 64)
    users, items = stream.users.tolist(), stream.items.tolist()
    first = {}
    for p, i in enumerate(items):
        first.setdefault(i, p)
    trained = [p for batch in Poisoned.seen for p in batch.positions.tolist()]
    assert trained == list(range(1, stream.pretrain_end))  # every pre-training interaction but the first
    for batch in Poisoned.seen:
        for p, u, i, j in zip(batch.positions.tolist(), batch.users.tolist(), batch.items.tolist(), batch.negatives):
            assert (users[p], items[p]) == (u, i)
            assert first[int(j)] < p and int(j) != i
            assert int(j) not in {items[q] for q in range(p) if users[q] == u}


@pytest.mark.parametrize("name", sorted(n for n, cls in STRATEGIES.items() if cls.meta))
def test_every_meta_strategy_returns_its_batch_losses_from_pretrain_step(name):
    stream = tiny_stream()
    model = tiny_model("bpr", stream)
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=64)
    strategy = build_strategy(name, model, (), 0)
    users, items = stream.users[64:96], stream.items[64:96]
    negatives = (items + 1) % stream.n_items
    batch = Batch(1, "pretrain", torch.arange(64, 96), users, items, stream.ts[64:96], negatives)
    expected = model.bpr_loss(users, items, negatives).detach()
    losses = strategy.pretrain_step(batch, history)
    torch.testing.assert_close(losses, expected)  # ℓ_x(θ_t), before the step's update


def test_every_pass_starts_from_the_pre_trained_recommender_and_carries_the_meta_state(poisoned):
    # Online, a meta-model always updates the pre-trained checkpoint: each pass of meta pre-training simulates that,
    # instead of updating a copy that earlier passes already moved (issue 16: that copy drifted, and MeLON's
    # outcome over seeds split in two).
    stream = tiny_stream()
    params = (("meta_epochs", "3"),)
    strategy = build_strategy("poisoned", tiny_model("bpr", stream), params, 0)
    table = next(strategy.model.parameters())
    before = table.detach().clone()
    state = train_meta(strategy, params, stream, 0, 64)
    assert Poisoned.starts == [pytest.approx(float(before.double().sum()), abs=1e-6)] * 3
    assert torch.equal(table, before)  # the strategy's own recommender is never touched
    assert state["weight"].tolist() == [22.0, 22.0, 22.0]  # 1 + 3 passes × 7 batches: the meta state carries over
    assert Poisoned.trained == 1
