"""The prepared interaction stream as device tensors, and the online batches cut from it.

Positions are row numbers of the prepared ``interactions.parquet`` (stream order: time, then input order).
The pre-training part is ``[0, pretrain_end)``, validation ``[pretrain_end, validation_end)`` and test
``[validation_end, n)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import polars as pl

SPLITS = ("pretrain", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Stream:
    """The whole prepared stream on one device.

    Attributes
    ----------
    users, items, ts : torch.Tensor
        ``Long[N]`` each, in stream order.
    n_users, n_items : int
        Sizes of the dense id ranges.
    pretrain_end, validation_end : int
        Row offsets where validation and test start.
    """

    users: torch.Tensor
    items: torch.Tensor
    ts: torch.Tensor
    n_users: int
    n_items: int
    pretrain_end: int
    validation_end: int

    @property
    def n(self) -> int:
        return int(self.users.shape[0])

    def bounds(self, split: str) -> tuple[int, int]:
        """``(start, stop)`` positions of ``split`` ("pretrain", "validation" or "test")."""
        return {
            "pretrain": (0, self.pretrain_end),
            "validation": (self.pretrain_end, self.validation_end),
            "test": (self.validation_end, self.n),
        }[split]

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, device: torch.device) -> Stream:
        """Build from a prepared ``interactions`` frame (columns user, item, ts, split; stream order)."""
        import polars as pl  # here, not at the top: the speed benchmarks import Stream on GPU machines without polars

        split = frame["split"].cast(pl.Utf8).to_numpy()
        counts = {s: int((split == s).sum()) for s in SPLITS}
        # The prepared file is contiguous per split; check rather than trust, a reordered file would leak.
        expected = np.repeat(np.array(SPLITS, dtype=object), [counts[s] for s in SPLITS])
        if not np.array_equal(split.astype(object), expected):
            raise ValueError("interactions are not ordered pretrain, validation, test")

        def column(name: str) -> torch.Tensor:
            return torch.from_numpy(frame[name].to_numpy().astype(np.int64)).to(device)

        users, items = column("user"), column("item")
        return cls(
            users=users,
            items=items,
            ts=column("ts"),
            n_users=int(users.max()) + 1 if len(frame) else 0,
            n_items=int(items.max()) + 1 if len(frame) else 0,
            pretrain_end=counts["pretrain"],
            validation_end=counts["pretrain"] + counts["validation"],
        )


@dataclasses.dataclass(frozen=True)
class Batch:
    """One online mini-batch ``B_t``.

    Attributes
    ----------
    index : int
        Batch number within the replay (0-based).
    split : str
        "validation" or "test".
    positions : torch.Tensor
        ``Long[B]`` stream positions (contiguous).
    users, items, ts : torch.Tensor
        ``Long[B]`` each: the interactions (items are the positives).
    negatives : torch.Tensor
        ``Long[B]`` one training negative per interaction (not an evaluation negative, except under the
        ``paper`` protocol, which reuses the first one on purpose).
    """

    index: int
    split: str
    positions: torch.Tensor
    users: torch.Tensor
    items: torch.Tensor
    ts: torch.Tensor
    negatives: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])


def batch_spans(stream: Stream, splits: tuple[str, ...], batch_size: int) -> Iterator[tuple[str, int, int]]:
    """``(split, start, stop)`` of each online batch, in time order; no batch straddles two splits."""
    for split in splits:
        start, stop = stream.bounds(split)
        for lo in range(start, stop, batch_size):
            yield split, lo, min(lo + batch_size, stop)
