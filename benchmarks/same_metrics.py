"""Are two stored runs' per-batch results bit-identical, timings aside? Exit status 0 when they are.

    python benchmarks/same_metrics.py RUN_DIR_A RUN_DIR_B      # each holding a batches.parquet

Used by ``device_check.sh`` to check that a seeded run on CUDA repeats itself from scratch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

TIMING = ["eval_s", "update_s"]


def main() -> None:
    a, b = (pl.read_parquet(Path(d) / "batches.parquet") for d in sys.argv[1:3])
    same = a.drop(TIMING).equals(b.drop(TIMING))
    timed = a.filter(~pl.col("warmup"))
    print(
        f"{a.height} batches; metrics and losses bit-identical: {same}; median per batch "
        f"(warm-up excluded): update {timed['update_s'].median():.4f} s, eval {timed['eval_s'].median():.4f} s"
    )
    if not same:
        for column in a.drop(TIMING).columns:
            if not a[column].equals(b[column]):
                gap = (a[column].cast(pl.Float64) - b[column].cast(pl.Float64)).abs().max()
                print(f"  {column}: largest difference {gap}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
