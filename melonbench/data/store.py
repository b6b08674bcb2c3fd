"""Loading a prepared dataset: the interaction stream, its card, and where each split starts."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from melonbench.core.errors import DataError, NotPreparedError
from melonbench.data.card import read_card
from melonbench.data.filtering import SPLITS, SplitDtype
from melonbench.store import paths


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared interaction stream, in chronological order.

    Attributes
    ----------
    name : str
        The stored name.
    path : Path
        Its folder under ``datasets_dir()``.
    interactions : pl.DataFrame
        ``user: Int32``, ``item: Int32``, ``ts: Int64``, ``split: Enum(pretrain, validation, test)``; rows in
        stream order (ts, then input order), each split a contiguous block.
    card : dict
        The parsed ``card.json`` (see :mod:`melonbench.data.card`).
    """

    name: str
    path: Path
    interactions: pl.DataFrame
    card: dict[str, Any]

    @property
    def n_users(self) -> int:
        """Number of users; ids run from 0 to ``n_users - 1``."""
        return int(self.card["users"])

    @property
    def n_items(self) -> int:
        """Number of items; ids run from 0 to ``n_items - 1``."""
        return int(self.card["items"])

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """Row offsets ``(0, start of validation, start of test, end)``; split ``s`` is ``bounds[s]:bounds[s + 1]``."""
        n = [int(self.card["splits"][part]["interactions"]) for part in SPLITS]
        return 0, n[0], n[0] + n[1], n[0] + n[1] + n[2]

    def part(self, split: str) -> pl.DataFrame:
        """The rows of one split (``pretrain``, ``validation`` or ``test``), a zero-copy slice."""
        index = SPLITS.index(split)
        start, stop = self.bounds[index], self.bounds[index + 1]
        return self.interactions.slice(start, stop - start)


def prepared_names() -> list[str]:
    """Names of every folder under ``datasets_dir()`` that holds a card, sorted."""
    root = paths.datasets_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "card.json").is_file()
    )


def not_prepared(name: str) -> NotPreparedError:
    """The error for a dataset that has no preparation, suggesting the closest prepared or registry name."""
    from melonbench.data.registry import DATASETS

    message = f"dataset '{name}' is not prepared: run `melonbench prepare {name}`"
    if name not in DATASETS:
        known = sorted(set(prepared_names()) | set(DATASETS))
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.5)
        message = f"dataset '{name}' is not prepared."
        if close:
            message += f" Did you mean '{close[0]}'?"
        message += " Prepare one with `melonbench prepare NAME` (a csv file: `melonbench prepare csv --name NAME`)."
    return NotPreparedError(message)


def load_card(name: str) -> dict[str, Any]:
    """The card of prepared dataset ``name``; raises :class:`NotPreparedError` when there is none."""
    safe = bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")
    card = read_card(paths.datasets_dir() / name) if safe else None
    if card is None:
        raise not_prepared(name)
    return card


def load_dataset(name: str) -> PreparedDataset:
    """Load prepared dataset ``name`` from ``datasets_dir()/<name>``.

    Raises
    ------
    NotPreparedError
        No preparation under that name (the message names the command to run, or the closest known name).
    DataError
        The Parquet file is missing or disagrees with its card (a folder edited by hand).
    """
    card = load_card(name)
    folder = paths.datasets_dir() / name
    try:
        frame = pl.read_parquet(folder / "interactions.parquet")
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(
            f"dataset '{name}' is damaged ({folder}): {str(exc).splitlines()[0]}; prepare it again"
        ) from None
    if frame.height != card.get("interactions") or frame.columns != ["user", "item", "ts", "split"]:
        raise DataError(f"dataset '{name}' does not match its card ({folder}); run `melonbench prepare` with --force")
    frame = frame.with_columns(pl.col("split").cast(SplitDtype))
    return PreparedDataset(name=name, path=folder, interactions=frame, card=card)
