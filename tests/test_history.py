"""History against brute-force Python loops over small random streams, plus a hand-made stream."""

from __future__ import annotations

import pytest
import torch

from melonbench.online import history as history_module
from melonbench.online.history import History

N_USERS, N_ITEMS, N = 7, 13, 90  # items 11 and 12 and user 6 never occur; repeated pairs are frequent


def _stream(seed: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6, (N,), generator=g).tolist(), torch.randint(0, 11, (N,), generator=g).tolist()


def _history(users: list[int], items: list[int], cursor: int = 0, neighbours: int = 4) -> History:
    return History(torch.tensor(users), torch.tensor(items), N_USERS, N_ITEMS, cursor=cursor, neighbours=neighbours)


def _queries(seed: int, b: int = 30, c: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return (
        torch.randint(0, N_USERS, (b,), generator=g),
        torch.randint(0, N_ITEMS, (b, c), generator=g),
        torch.randint(0, N + 1, (b,), generator=g),
    )


SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_seen_before_and_ever(seed: int, dense: bool, monkeypatch) -> None:
    # both pair look-ups: the dense first-position table (small catalogues) and the binary search over pair keys
    monkeypatch.setattr(history_module, "DENSE_PAIRS", 1 << 24 if dense else 0)
    users, items = _stream(seed)
    h = _history(users, items)
    assert (h._pair_table is not None) == dense
    qu, qi, qp = _queries(seed)
    before = [
        [any(users[t] == u and items[t] == j for t in range(p)) for j in row]
        for u, row, p in zip(qu.tolist(), qi.tolist(), qp.tolist())
    ]
    ever = [
        [any(users[t] == u and items[t] == j for t in range(N)) for j in row]
        for u, row in zip(qu.tolist(), qi.tolist())
    ]
    assert h.seen_before(qu, qi, qp).tolist() == before
    assert h.seen_ever(qu, qi).tolist() == ever


@pytest.mark.parametrize("seed", SEEDS)
def test_existence(seed: int) -> None:
    users, items = _stream(seed)
    h = _history(users, items)
    _, qi, qp = _queries(seed)
    first = {j: min((t for t in range(N) if items[t] == j), default=N) for j in range(N_ITEMS)}
    user_first = {u: min((t for t in range(N) if users[t] == u), default=N) for u in range(N_USERS)}
    # broadcasting: items [B, C] against positions [B, 1]
    assert h.item_exists(qi, qp.unsqueeze(1)).tolist() == [
        [first[j] < p for j in row] for row, p in zip(qi.tolist(), qp.tolist())
    ]
    assert h.exists_mask(qp).tolist() == [[first[j] < p for j in range(N_ITEMS)] for p in qp.tolist()]
    qu = torch.arange(N_USERS)
    assert h.user_exists(qu, torch.full((N_USERS,), 40)).tolist() == [user_first[u] < 40 for u in range(N_USERS)]
    for p in qp.tolist():
        count = int(h.count_existing(torch.tensor([p]))[0])
        assert count == sum(first[j] < p for j in range(N_ITEMS))
        assert set(h.items_by_first[:count].tolist()) == {j for j in range(N_ITEMS) if first[j] < p}


@pytest.mark.parametrize("seed", SEEDS)
def test_user_items_mask(seed: int) -> None:
    users, items = _stream(seed)
    h = _history(users, items)
    qu, _, qp = _queries(seed)
    expected = [
        [any(users[t] == u and items[t] == j for t in range(p)) for j in range(N_ITEMS)]
        for u, p in zip(qu.tolist(), qp.tolist())
    ]
    assert h.user_items_mask(qu, qp).tolist() == expected


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cursor", [0, 1, 37, N])
def test_cursor_queries(seed: int, cursor: int) -> None:
    users, items = _stream(seed)
    h = _history(users, items, cursor=cursor, neighbours=4)
    qu = torch.arange(N_USERS)
    qi = torch.arange(N_ITEMS)

    last = {max((t for t in range(cursor) if users[t] == u), default=-1) for u in range(N_USERS)}
    last |= {max((t for t in range(cursor) if items[t] == j), default=-1) for j in range(N_ITEMS)}
    assert h.last_positions(qu[:6], qi[:11]).tolist() == sorted(last - {-1})
    padded, valid = h.last_positions_padded(qu[:6], qi[:11])
    assert padded[valid].tolist() == sorted(last - {-1})

    def recent(partners_of: list[int], partners: list[int], who: int) -> tuple[list[int], list[bool]]:
        past = [partners[t] for t in range(cursor) if partners_of[t] == who][::-1][:4]
        return past + [0] * (4 - len(past)), [True] * len(past) + [False] * (4 - len(past))

    got_items, got_valid = h.user_neighbours(qu)
    for u in range(N_USERS):
        assert (got_items[u].tolist(), got_valid[u].tolist()) == recent(users, items, u)
    got_users, got_valid = h.item_neighbours(qi)
    for j in range(N_ITEMS):
        assert (got_users[j].tolist(), got_valid[j].tolist()) == recent(items, users, j)


def test_advance_equals_constructing_at_the_cursor() -> None:
    users, items = _stream(5)
    moved = _history(users, items)
    moved.advance(30)
    moved.advance(7)
    fresh = _history(users, items, cursor=37)
    assert moved.cursor == 37
    qu, qi = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    assert torch.equal(moved.last_positions(qu, qi), fresh.last_positions(qu, qi))
    assert torch.equal(moved.user_neighbours(qu)[0], fresh.user_neighbours(qu)[0])
    with pytest.raises(ValueError, match="advance"):
        moved.advance(N - 37 + 1)
    with pytest.raises(ValueError, match="advance"):
        moved.advance(-1)
    with pytest.raises(ValueError, match="cursor"):
        _history(users, items, cursor=N + 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_advance_equals_constructing_at_the_cursor(seed: int) -> None:
    # the cursor-relative answers are kept up to date by advance (not searched afresh): after each of many uneven
    # steps (a step of 0 included; the random stream repeats users and items within a step) they must equal those
    # of a History built at that cursor, for every id, including ids that never occur
    users, items = _stream(seed)
    moved, cursor = _history(users, items, cursor=5), 5
    all_u, all_i = torch.arange(N_USERS), torch.arange(N_ITEMS)
    for step in [0, 1, 2, 7, 13, 1, 30, 20, 6, 0, 5]:
        moved.advance(step)
        cursor += step
        fresh = _history(users, items, cursor=cursor)
        assert torch.equal(moved.last_positions(all_u[:6], all_i[:6]), fresh.last_positions(all_u[:6], all_i[:6]))
        for ask in ("user_neighbours", "item_neighbours"):
            ids = all_u if ask == "user_neighbours" else all_i
            got, want = getattr(moved, ask)(ids), getattr(fresh, ask)(ids)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert cursor == N


def test_lookup_is_indexing_for_any_index_shape() -> None:
    table = torch.tensor([10, 11, 12, 13])
    assert history_module.lookup(table, torch.tensor([[3, 0], [1, 1]])).tolist() == [[13, 10], [11, 11]]
    assert history_module.lookup(table, torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5)


def test_hand_made_stream_with_a_batch_in_flight() -> None:
    # position: 0      1      2      3      4      5      6
    # (u, i):  (0,0)  (1,1)  (0,2)  (1,0)  (0,1)  (0,1)  (2,3)
    h = History(torch.tensor([0, 1, 0, 1, 0, 0, 2]), torch.tensor([0, 1, 2, 0, 1, 1, 3]), 3, 5, cursor=3)
    batch_u, batch_i, batch_p = torch.tensor([1, 0, 0, 2]), torch.tensor([0, 1, 1, 3]), torch.tensor([3, 4, 5, 6])
    # (0,1) first occurs at 4: unseen when ranked at 4, seen at 5 (an earlier row of the same batch)
    assert h.seen_before(batch_u, batch_i.unsqueeze(1), batch_p).squeeze(1).tolist() == [False, False, True, False]
    # item 3 first appears at 6: it does not exist for its own interaction
    assert h.item_exists(batch_i, batch_p).tolist() == [True, True, True, False]
    # cold users: user 2 never appeared before position 6
    assert h.user_exists(batch_u, batch_p).tolist() == [True, True, True, False]
    # user 0 before 5 had items 0, 2, 1; the never-used item 4 exists nowhere
    assert h.user_items_mask(torch.tensor([0]), torch.tensor([5])).tolist() == [[True, True, True, False, False]]
    assert h.exists_mask(torch.tensor([7])).tolist() == [[True, True, True, True, False]]
    # B_last at cursor 3: user 1 -> 1, user 0 -> 2, user 2 -> none; item 0 -> 0, item 1 -> 1, item 3 -> none
    assert h.last_positions(batch_u, batch_i).tolist() == [0, 1, 2]
    items, valid = h.user_neighbours(torch.tensor([0, 2]))
    assert items[0, :2].tolist() == [2, 0] and valid.tolist() == [
        [True, True, False, False] + [False] * 6,
        [False] * 10,
    ]


def test_memory_scales_with_the_stream_not_the_matrix() -> None:
    # Amazon Book sized id ranges with a short stream: nothing of size n_users * n_items may be allocated
    n_users, n_items, n = 80_464, 98_663, 5_000
    g = torch.Generator().manual_seed(0)
    h = History(
        torch.randint(0, n_users, (n,), generator=g), torch.randint(0, n_items, (n,), generator=g), n_users, n_items
    )
    tensors = [v for obj in (h, h._by_user, h._by_item) for v in vars(obj).values() if isinstance(v, torch.Tensor)]
    assert sum(t.numel() for t in tensors) < 20 * (n + n_users + n_items)
    # and the per-batch masks are [B, n_items]
    assert h.user_items_mask(torch.tensor([0, 1]), torch.tensor([n, n])).shape == (2, n_items)


def test_ids_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"item ids must be in 0..4, got 0..5"):
        History(torch.tensor([0, 1]), torch.tensor([0, 5]), 2, 5)
    with pytest.raises(ValueError, match="non-empty"):
        History(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2, 5)
