"""Negative sampling: every constraint against brute force, distinctness, determinism, uniformity, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy.stats import chisquare

from melonbench.core.errors import DataError
from melonbench.online.history import History
from melonbench.online.negatives import sample_negatives, sample_training_negatives

N_USERS, N_ITEMS, N = 40, 160, 1500


def _stream(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items enter the catalogue over time (item ids < 30 + position / 12), so existence matters."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, N_USERS, (N,), generator=g)
    limit = 30 + torch.arange(N) // 12
    items = (torch.rand(N, generator=g) * limit).long()
    return users, items


def _brute_allowed(users: list[int], items: list[int], u: int, pos: int, p: int, exclude: str) -> set[int]:
    existing = {items[t] for t in range(p)}
    horizon = p if exclude == "before" else len(items)
    had = {items[t] for t in range(horizon) if users[t] == u}
    return existing - had - {pos}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exclude", ["before", "ever"])
def test_every_constraint_holds(seed: int, exclude: str) -> None:
    users, items = _stream(seed)
    h = History(users, items, N_USERS, N_ITEMS)
    positions = torch.arange(600, 800)
    negs = sample_negatives(
        h, users[positions], items[positions], positions, 20, torch.Generator().manual_seed(seed), exclude=exclude
    )
    assert negs.shape == (200, 20) and negs.dtype == torch.long
    ul, il = users.tolist(), items.tolist()
    for row, p in zip(negs.tolist(), positions.tolist()):
        assert len(set(row)) == 20
        assert set(row) <= _brute_allowed(ul, il, ul[p], il[p], p, exclude)


def test_the_ever_rule_excludes_the_users_future_items() -> None:
    users, items = _stream(0)
    h = History(users, items, N_USERS, N_ITEMS)
    positions = torch.arange(600, 800).repeat(10)
    g = torch.Generator().manual_seed(0)
    before = sample_negatives(h, users[positions], items[positions], positions, 20, g)
    future = h.seen_ever(users[positions], before) & ~h.seen_before(users[positions], before, positions)
    assert future.any()  # the leak-free rule can draw an item the user will click later ...
    ever = sample_negatives(h, users[positions], items[positions], positions, 20, g, exclude="ever")
    assert not h.seen_ever(users[positions], ever).any()  # ... the paper rule never does


def test_deterministic_for_a_generator_state() -> None:
    users, items = _stream(1)
    h = History(users, items, N_USERS, N_ITEMS)
    p = torch.arange(1000, 1256)

    def draw(seed: int) -> torch.Tensor:
        return sample_negatives(h, users[p], items[p], p, 40, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_training_negatives_follow_the_same_rule() -> None:
    users, items = _stream(2)
    h = History(users, items, N_USERS, N_ITEMS)
    p = torch.arange(300, 556)
    negs = sample_training_negatives(h, users[p], items[p], p, torch.Generator().manual_seed(0))
    assert negs.shape == (256,)
    ul, il = users.tolist(), items.tolist()
    assert all(n in _brute_allowed(ul, il, ul[q], il[q], q, "before") for n, q in zip(negs.tolist(), p.tolist()))


def _single_user_stream() -> tuple[History, set[int]]:
    """User 0 has items 0..29 by position 60; user 1 has brought items 30..39 into existence; 40..49 never occur."""
    users = torch.tensor([0] * 30 + [1] * 10 + [0] * 20)
    items = torch.tensor(list(range(30)) + list(range(30, 40)) + list(range(20)))
    return History(users, items, 2, 50), set(range(30, 40))


@pytest.mark.parametrize("n", [1, 3])
def test_uniform_over_the_eligible_items(n: int) -> None:
    # the rejection round accepts 10 of 40 existing items: short rows also exercise the exact refill
    h, eligible = _single_user_stream()
    rows = 4000
    users, positives = torch.zeros(rows, dtype=torch.long), torch.zeros(rows, dtype=torch.long)
    positions = torch.full((rows,), 55)
    negs = sample_negatives(h, users, positives, positions, n, torch.Generator().manual_seed(3))
    counts = torch.bincount(negs.flatten(), minlength=50)
    assert set(counts.nonzero().flatten().tolist()) == eligible
    assert all(len(set(r)) == n for r in negs.tolist())
    # expected rows * n / 10 per eligible item; seeded, so this p-value is fixed (far from the 1e-3 bound)
    assert chisquare(counts[30:40].numpy()).pvalue > 1e-3
    # and each slot alone is uniform too (the order inside a row is random)
    assert chisquare(torch.bincount(negs[:, -1], minlength=50)[30:40].numpy()).pvalue > 1e-3


def test_uniform_when_rejection_rarely_fails() -> None:
    users, items = _stream(3)
    h = History(users, items, N_USERS, N_ITEMS)
    q = 1200
    rows = 3000
    allowed = sorted(_brute_allowed(users.tolist(), items.tolist(), int(users[q]), int(items[q]), q, "before"))
    negs = sample_negatives(
        h, users[q].repeat(rows), items[q].repeat(rows), torch.full((rows,), q), 5, torch.Generator().manual_seed(4)
    )
    counts = torch.bincount(negs.flatten(), minlength=N_ITEMS)
    assert set(counts.nonzero().flatten().tolist()) == set(allowed)
    assert chisquare(counts[allowed].numpy()).pvalue > 1e-3


def test_too_few_eligible_items_is_a_clear_error() -> None:
    h, _ = _single_user_stream()
    # at position 55 user 0 has 10 eligible items (30..39)
    with pytest.raises(DataError, match=r"Cannot draw 11 distinct negatives .* position 55 \(user 0\): only 10 items"):
        sample_negatives(h, torch.tensor([0]), torch.tensor([0]), torch.tensor([55]), 11, torch.Generator())
    # at the very start of the stream nothing exists yet
    with pytest.raises(DataError, match="only 0 items"):
        sample_negatives(h, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 1, torch.Generator())


def test_exist_positions_widen_the_catalogue_but_not_the_users_history() -> None:
    h, _ = _single_user_stream()
    # position 5: user 0 had items 0..4; with existence taken at the end of the stream, items 5..39 are eligible
    negs = sample_training_negatives(
        h,
        torch.zeros(500, dtype=torch.long),
        torch.full((500,), 5),
        torch.full((500,), 5),
        torch.Generator().manual_seed(0),
        exist_positions=torch.full((500,), 60),
    )
    assert set(negs.tolist()) == set(range(6, 40))


def test_exact_refill_alone_obeys_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import melonbench.online.negatives as negatives

    real_round = negatives._rejection_round

    def always_short(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        out, complete = real_round(*args)
        return out, torch.zeros_like(complete)

    monkeypatch.setattr(negatives, "_rejection_round", always_short)
    users, items = _stream(4)
    h = History(users, items, N_USERS, N_ITEMS)
    p = torch.arange(900, 1100)
    negs = sample_negatives(h, users[p], items[p], p, 15, torch.Generator().manual_seed(0))
    ul, il = users.tolist(), items.tolist()
    for row, q in zip(negs.tolist(), p.tolist()):
        assert len(set(row)) == 15 and set(row) <= _brute_allowed(ul, il, ul[q], il[q], q, "before")
    h1, eligible = _single_user_stream()
    one = sample_negatives(
        h1,
        torch.zeros(3000, dtype=torch.long),
        torch.zeros(3000, dtype=torch.long),
        torch.full((3000,), 55),
        2,
        torch.Generator().manual_seed(1),
    )
    counts = torch.bincount(one.flatten(), minlength=50)
    assert set(counts.nonzero().flatten().tolist()) == eligible
    assert chisquare(counts[30:40].numpy()).pvalue > 1e-3


def test_real_grocery_stream(shared_data: Path) -> None:
    import polars as pl

    folder = shared_data / "amazon-grocery-5core-2014-rechorus"
    log = pl.concat([pl.read_csv(folder / f"{part}.csv") for part in ("train", "dev", "test")]).sort(
        "time", maintain_order=True
    )
    users = torch.tensor(log["user_id"].to_numpy() - 1)
    items = torch.tensor(log["item_id"].to_numpy() - 1)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    h = History(users, items, n_users, n_items)
    positions = torch.linspace(1000, len(log) - 1, 256).long()
    negs = sample_negatives(h, users[positions], items[positions], positions, 99, torch.Generator().manual_seed(0))
    ul, il = users.tolist(), items.tolist()
    first_seen: dict[int, int] = {}
    for t, j in enumerate(il):
        first_seen.setdefault(j, t)
    by_user: dict[int, list[tuple[int, int]]] = {}
    for t, (u, j) in enumerate(zip(ul, il)):
        by_user.setdefault(u, []).append((t, j))
    for row, p in zip(negs.tolist(), positions.tolist()):
        had = {j for t, j in by_user[ul[p]] if t < p}
        assert len(set(row)) == 99
        assert all(first_seen[j] < p and j not in had and j != il[p] for j in row)
