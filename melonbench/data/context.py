"""What every dataset reader receives and returns: the reader context and the reader's signature.

Apart from the registry so that readers can name their context without importing the registry that lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    """

    workdir: Path
    options: PrepareOptions


Reader = Callable[[Sequence[Path], ReadContext], pl.LazyFrame]
"""Input paths → LazyFrame with exactly ``user``, ``item`` (raw ids) and ``ts`` (Int64 unix seconds), in input order."""
