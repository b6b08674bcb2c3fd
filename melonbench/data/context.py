"""What every dataset reader receives and returns: the reader context and the reader's signature.

Apart from the registry so that readers can name their context without importing the registry that lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from melonbench.core.config import PrepareOptions


@dataclass(frozen=True)
class ReadContext:
    """What a reader may use besides its input paths.

    Attributes
    ----------
    workdir : Path
        An empty temporary folder the reader may spill intermediate files into; removed by the pipeline.
    options : PrepareOptions
        The ``prepare`` options (``columns`` and ``params`` matter to some readers).
    described : list[str]
        Where a reader that can tell one release of its source from another says, for each file it read, what
        the data is (e.g. ``MovieLens 100K (u.data layout) (GroupLens): ratings as implicit views``); the card's
        description is built from it, and is the registry's when it stays empty.
    """

    workdir: Path
    options: PrepareOptions
    described: list[str] = field(default_factory=list)


Reader = Callable[[Sequence[Path], ReadContext], pl.LazyFrame]
"""Input paths → LazyFrame with exactly ``user``, ``item`` (raw ids) and ``ts`` (Int64 unix seconds), in input order."""
