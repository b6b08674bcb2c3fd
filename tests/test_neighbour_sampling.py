"""MeLON's ``neighbour_sampling=sample``: up to K past partners drawn uniformly (the paper), seeded and reproducible."""

from __future__ import annotations

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.core.errors import MelonbenchError
from melonbench.online.history import History
from melonbench.strategies import build_strategy


def user_zero_stream() -> History:
    """User 0 meets items 0..14 at positions 0..14 (user 1 meets item 15 in between, at 5), then items 16, 17 after
    the cursor (17); user 1 also has 3 interactions, fewer than K = 10."""
    users = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]
    items = [0, 1, 2, 3, 4, 15, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3, 16, 17, 0]
    return History(torch.tensor(users), torch.tensor(items), 2, 18, cursor=17)


def test_few_partners_are_all_taken_most_recent_first():
    history = user_zero_stream()
    items, valid = history.sampled_user_neighbours(torch.tensor([1]), 10, torch.Generator().manual_seed(0))
    assert items[0, valid[0]].tolist() == [3, 15]  # user 1's two partners before the cursor, the latest first
    assert valid[0].tolist() == [True, True] + [False] * 8
    recent, recent_valid = history.user_neighbours(torch.tensor([1]))
    assert torch.equal(items, recent) and torch.equal(valid, recent_valid)  # the same as the recent ones here


def test_many_partners_are_a_uniform_sample_of_the_past():
    # user 0 has 15 partners before the cursor (items 0..14): each must be drawn with probability 10/15
    history = user_zero_stream()
    gen = torch.Generator().manual_seed(0)
    rows = torch.zeros(4000, dtype=torch.long)  # 4,000 draws for user 0 in one call
    items, valid = history.sampled_user_neighbours(rows, 10, gen)
    assert valid.all()
    for row in items.tolist()[:50]:
        assert len(set(row)) == 10 and set(row) <= set(range(15))  # distinct, never 16 or 17 (after the cursor)
        position = {i: p for p, i in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])}
        assert [position[i] for i in row] == sorted((position[i] for i in row), reverse=True)  # latest first
    freq = torch.bincount(items.reshape(-1), minlength=18).double() / 4000
    # binomial standard error sqrt(p(1 − p)/4000) ≈ 0.0075 with p = 2/3: six of them is 0.045
    assert (freq[:15] - 10 / 15).abs().max() < 0.045
    assert freq[15:].sum() == 0
    # every pair of partners is drawn together equally often too (10·9 / (15·14) = 3/7), not only each one alone
    together = torch.zeros(15, 15)
    for row in items.tolist():
        for a in row:
            together[a, row] += 1
    off_diagonal = together[~torch.eye(15, dtype=torch.bool)] / 4000
    assert (off_diagonal - 3 / 7).abs().max() < 0.06
    # the generator is the only source of randomness: the same seed repeats, another one differs
    again, _ = history.sampled_user_neighbours(rows, 10, torch.Generator().manual_seed(0))
    other, _ = history.sampled_user_neighbours(rows, 10, torch.Generator().manual_seed(1))
    assert torch.equal(items, again) and not torch.equal(items, other)


def run_sampled(seed: int, graphs: bool, batches: int = 3, state=None):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model("bpr", stream)
    strategy = build_strategy("melon", model, (("neighbour_sampling", "sample"),), seed)
    if graphs:
        strategy._graphed.enabled = True  # the fixed-shape step, as on a GPU (tests/test_fixed_shape.py)
    if state is not None:
        strategy.load_state_dict(state)
    for batch in online_batches(stream, history, count=batches):
        strategy.online_step(batch, history)
        history.advance(len(batch))
    return model.state_dict(), strategy


def test_sampled_neighbours_are_reproducible_and_the_same_on_the_fixed_shape_path():
    eager, strategy = run_sampled(0, graphs=False)
    again, _ = run_sampled(0, graphs=False)
    fixed, _ = run_sampled(0, graphs=True)
    for key, value in eager.items():
        assert torch.equal(value, again[key]), key  # same seed, same bits
        assert torch.allclose(value, fixed[key], rtol=0, atol=1e-6), key  # the padded B^last draws the same
    fresh = build_strategy("melon", tiny_model("bpr", tiny_stream()), (), 0)
    assert not torch.equal(strategy.neighbour_generator.get_state(), fresh.neighbour_generator.get_state())  # drawn
    assert fresh.config.neighbour_sampling == "recent"  # the default stays the most recent ones


def test_neighbour_sampling_state_round_trips_and_bad_values_are_refused():
    _, strategy = run_sampled(0, graphs=False, batches=1)
    state = strategy.state_dict()
    twin = build_strategy("melon", tiny_model("bpr", tiny_stream()), (("neighbour_sampling", "sample"),), 0)
    twin.load_state_dict(state)
    assert torch.equal(twin.neighbour_generator.get_state(), strategy.neighbour_generator.get_state())
    with pytest.raises(MelonbenchError, match="neighbour_sampling must be one of recent, sample, got 'random'"):
        build_strategy("melon", tiny_model("bpr", tiny_stream()), (("neighbour_sampling", "random"),), 0)
