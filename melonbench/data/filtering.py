"""Pure steps that turn raw interactions into a prepared stream: order, de-duplicate, k-core, dense ids, split.

Every function takes and returns eager polars frames with the columns ``user``, ``item`` (ids of any
hashable dtype) and ``ts`` (Int64 unix seconds); a frame's row order is its input order. None of them reads
or writes files, so each can be tested on frames small enough to check by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl

from melonbench.core.errors import DataError

SPLITS = ("pretrain", "validation", "test")
SplitDtype = pl.Enum(list(SPLITS))


def chronological(df: pl.DataFrame) -> pl.DataFrame:
    """Stable sort by ``ts``: ties keep their input order (Amazon timestamps are whole days, so ties are common)."""
    return df.sort("ts", maintain_order=True)


def dedupe(df: pl.DataFrame, mode: Literal["first", "keep"]) -> pl.DataFrame:
    """Remove repeated (user, item) pairs.

    Parameters
    ----------
    df : pl.DataFrame
        Interactions in input order.
    mode : {"first", "keep"}
        ``first`` keeps the earliest occurrence by (ts, input order); ``keep`` returns ``df`` unchanged.

    Returns
    -------
    pl.DataFrame
        In chronological order (stable), whatever the mode.
    """
    ordered = chronological(df)
    if mode == "keep":
        return ordered
    if mode != "first":
        raise ValueError(f"unknown dedupe mode {mode!r}")
    return ordered.filter(_pair_key(ordered).is_first_distinct())


def _pair_key(df: pl.DataFrame) -> pl.Expr:
    """One hashable key per (user, item); packing two 32-bit codes into a UInt64 halves the time of a struct key."""
    small = (pl.UInt8, pl.UInt16, pl.UInt32)
    if df.schema["user"] in small and df.schema["item"] in small:
        return pl.col("user").cast(pl.UInt64) * (1 << 32) + pl.col("item").cast(pl.UInt64)
    return pl.struct("user", "item")


def _core_mask(k: int) -> pl.Expr:
    return (pl.len().over("user") >= k) & (pl.len().over("item") >= k)


def k_core(df: pl.DataFrame, k: int, mode: Literal["single", "iterative"]) -> tuple[pl.DataFrame, int]:
    """Keep interactions whose user and item both have at least ``k`` interactions.

    Parameters
    ----------
    df : pl.DataFrame
        Interactions (usually de-duplicated); row order is preserved.
    k : int
        Minimum count; ``k <= 1`` keeps everything.
    mode : {"single", "iterative"}
        ``single`` takes user and item counts once, on ``df``, and applies both at once (the paper's wording),
        so a survivor may end up with fewer than ``k``; ``iterative`` repeats until every user and item has at
        least ``k`` (the k-core proper).

    Returns
    -------
    tuple[pl.DataFrame, int]
        The surviving rows and the number of filtering passes made (0 for ``k <= 1``; for ``iterative`` the
        last pass is the one that found nothing more to remove, unless the result is empty).
    """
    if mode not in ("single", "iterative"):
        raise ValueError(f"unknown core mode {mode!r}")
    if k <= 1:
        return df, 0
    rounds = 0
    while True:
        kept = df.filter(_core_mask(k))
        rounds += 1
        if mode == "single" or kept.height == df.height or kept.height == 0:
            return kept, rounds
        df = kept


def dense_ids(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Replace ``user`` and ``item`` by int32 ids from 0, in order of first appearance in ``df``.

    Returns
    -------
    tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]
        ``(interactions, users, items)``: the frame with int32 ids, and the mapping tables with columns
        ``raw`` (the input id) and ``user`` / ``item`` (the new id), one row per id in id order.
    """
    out = df
    maps = []
    for col in ("user", "item"):
        mapping = (
            df.select(pl.col(col).unique(maintain_order=True).alias("raw"))
            .with_row_index(col)
            .select("raw", pl.col(col).cast(pl.Int32))
        )
        lookup = mapping.rename({"raw": col, col: "_id"})
        out = (
            out.join(lookup, on=col, how="left", maintain_order="left")
            .with_columns(pl.col("_id").alias(col))
            .drop("_id")
        )
        maps.append(mapping)
    return out.select(df.columns), maps[0], maps[1]


def split_counts(n: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """Rows of pre-train, validation and test for ``n`` interactions at ``ratios`` (any positive scale).

    Boundaries are the cumulative ratios times ``n``, rounded half up, so each count is within one
    interaction of ``n * ratio / sum(ratios)`` and the three always add up to ``n``.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers with a positive sum, got {ratios}")
    total = float(sum(ratios))
    first = math.floor(n * ratios[0] / total + 0.5)
    second = math.floor(n * (ratios[0] + ratios[1]) / total + 0.5)
    return first, second - first, n - second


def assign_split(df: pl.DataFrame, ratios: Sequence[float]) -> pl.DataFrame:
    """Add a ``split`` column (Enum pretrain/validation/test) cutting ``df``'s rows contiguously by ``ratios``.

    ``df`` must already be in chronological order.

    Raises
    ------
    DataError
        When a part with a positive ratio would get no interaction.
    """
    counts = split_counts(df.height, ratios)
    for part, ratio, count in zip(SPLITS, ratios, counts, strict=True):
        if ratio > 0 and count == 0:
            shown = ":".join(f"{r:g}" for r in ratios)
            raise DataError(f"the {part} part would be empty: {df.height:,} interactions split {shown} give it 0 rows")
    codes = np.repeat(np.arange(3, dtype=np.uint32), counts)
    labels = pl.Series("split", list(SPLITS), dtype=SplitDtype)
    return df.with_columns(labels.gather(codes))
