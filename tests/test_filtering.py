"""The pure preparation steps on frames small enough to work out by hand (each expected value says how)."""

from __future__ import annotations

import polars as pl
import pytest

from melonbench.core.errors import DataError
from melonbench.data.filtering import assign_split, chronological, dedupe, dense_ids, k_core, split_counts


def _frame(rows: list[tuple], id_dtype: pl.DataType = pl.String) -> pl.DataFrame:
    """Rows of (user, item, ts); a ``row`` column remembers each row's input position."""
    return pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "item": [r[1] for r in rows],
            "ts": [r[2] for r in rows],
            "row": list(range(len(rows))),
        },
        schema={"user": id_dtype, "item": id_dtype, "ts": pl.Int64, "row": pl.Int64},
    )


# (user, item, ts) in input order. By hand: the pair (1, 1) occurs at rows 0 (ts 5) and 1 (ts 3): the earliest
# is row 1. The pair (2, 1) occurs twice at ts 3 (rows 2 and 3): the tie goes to input order, row 2.
REPEATS = [(1, 1, 5), (1, 1, 3), (2, 1, 3), (2, 1, 3), (1, 2, 4)]


@pytest.mark.parametrize("dtype", [pl.String, pl.UInt32, pl.Int64])
def test_dedupe_first_keeps_earliest_by_time_then_input_order(dtype: pl.DataType) -> None:
    rows = [(str(u) if dtype == pl.String else u, str(i) if dtype == pl.String else i, t) for u, i, t in REPEATS]
    out = dedupe(_frame(rows, dtype), "first")
    # survivors rows 1, 2, 4, listed in time order (3, 3, 4); ties in input order
    assert out["row"].to_list() == [1, 2, 4]


def test_dedupe_keep_only_orders() -> None:
    out = dedupe(_frame(REPEATS, pl.Int64), "keep")
    # ts per row: 5, 3, 3, 3, 4 -> stable order: rows 1, 2, 3 (ts 3), 4 (ts 4), 0 (ts 5)
    assert out["row"].to_list() == [1, 2, 3, 4, 0]


def test_chronological_is_stable_on_ties() -> None:
    out = chronological(_frame([("a", "x", 2), ("b", "x", 1), ("c", "x", 2), ("d", "x", 1)]))
    # ts 1 at rows 1 and 3, ts 2 at rows 0 and 2, each tie in input order
    assert out["row"].to_list() == [1, 3, 0, 2]


# Users A, B, C; items x, y, z. Counts on the input: A 2, B 2, C 2; x 3, y 2, z 1.
CRAFTED = [("A", "x", 1), ("A", "y", 2), ("B", "x", 3), ("B", "y", 4), ("C", "x", 5), ("C", "z", 6)]


def test_single_and_iterative_core_differ() -> None:
    df = _frame(CRAFTED)
    single, single_rounds = k_core(df, 2, "single")
    # single, k=2: only z (count 1) fails, so only (C, z) goes; C keeps 1 interaction, which single allows
    assert single["row"].to_list() == [0, 1, 2, 3, 4]
    assert single_rounds == 1
    iterative, rounds = k_core(df, 2, "iterative")
    # pass 1 drops (C, z); pass 2 sees C with 1 and drops (C, x) (x still has A and B: 2); pass 3 changes nothing
    assert iterative["row"].to_list() == [0, 1, 2, 3]
    assert rounds == 3


def test_core_of_one_keeps_everything_and_empty_result_is_empty() -> None:
    df = _frame(CRAFTED)
    assert k_core(df, 1, "iterative")[0].height == 6
    # nobody has 3 interactions except item x (3), but its users have 2 each: nothing survives
    assert k_core(df, 3, "single")[0].height == 0
    assert k_core(df, 3, "iterative")[0].height == 0


def test_dense_ids_follow_first_appearance() -> None:
    df = _frame([("b", "10", 1), ("a", "20", 2), ("b", "10", 3), ("c", "30", 4), ("a", "10", 5)])
    out, users, items = dense_ids(df)
    # users first appear in the order b, a, c -> 0, 1, 2; items 10, 20, 30 -> 0, 1, 2
    assert out["user"].to_list() == [0, 1, 0, 2, 1]
    assert out["item"].to_list() == [0, 1, 0, 2, 0]
    assert out.schema["user"] == pl.Int32 and out.schema["item"] == pl.Int32
    assert out["row"].to_list() == [0, 1, 2, 3, 4] and out["ts"].to_list() == [1, 2, 3, 4, 5]
    assert users.rows() == [("b", 0), ("a", 1), ("c", 2)]
    assert items.rows() == [("10", 0), ("20", 1), ("30", 2)]


@pytest.mark.parametrize(
    ("n", "ratios", "expected"),
    [
        # 151254 * 0.80 = 121003.2 -> 121003; * 0.82 = 124028.28 -> 124028; so 3025 and 27226
        (151_254, (80, 2, 18), (121_003, 3_025, 27_226)),
        # 7 * 0.5 = 3.5 rounds half up to 4; 7 * 0.75 = 5.25 -> 5; so 4, 1, 2
        (7, (50, 25, 25), (4, 1, 2)),
        # 1000 * 0.95 = 950; 1000 * 0.955 = 955; so 950, 5, 45
        (1000, (95, 0.5, 4.5), (950, 5, 45)),
        # ratios need not be percentages: 2:1:1 of 8 -> 4, 2, 2
        (8, (2, 1, 1), (4, 2, 2)),
    ],
)
def test_split_counts_by_hand(n: int, ratios: tuple[float, float, float], expected: tuple[int, int, int]) -> None:
    assert split_counts(n, ratios) == expected


def test_split_counts_within_one_interaction() -> None:
    for n in range(1, 400):
        for ratios in ((80, 2, 18), (95, 0.5, 4.5), (90, 1, 9), (33.3, 33.3, 33.4)):
            counts = split_counts(n, ratios)
            assert sum(counts) == n
            for count, ratio in zip(counts, ratios, strict=True):
                assert abs(count - n * ratio / sum(ratios)) <= 1


def test_assign_split_is_contiguous() -> None:
    df = chronological(_frame([("u", str(i), i) for i in range(10)]))
    out = assign_split(df, (60, 20, 20))
    # 10 * 0.6 = 6, 10 * 0.8 = 8 -> 6 pre-train, 2 validation, 2 test, in row order
    assert out["split"].cast(pl.String).to_list() == ["pretrain"] * 6 + ["validation"] * 2 + ["test"] * 2
    assert out.schema["split"] == pl.Enum(["pretrain", "validation", "test"])


def test_assign_split_refuses_an_empty_requested_part() -> None:
    df = _frame([("u", str(i), i) for i in range(10)])
    # 10 * 0.80 = 8, 10 * 0.82 = 8.2 -> 8: validation would get 0 rows although 2% were asked for
    with pytest.raises(DataError, match="validation part would be empty"):
        assign_split(df, (80, 2, 18))
    # a part asked to be empty may be empty
    assert assign_split(df, (90, 0, 10))["split"].cast(pl.String).to_list().count("validation") == 0
