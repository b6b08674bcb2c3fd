"""How long a small `melonbench reproduce` grid takes with each engine, and whether every engine gives the same bits.

    python benchmarks/grid_speed.py                                   # local:1, local:2, ray:2 on the CPU
    python benchmarks/grid_speed.py --engines local:1,local:4,ray:4 --users 4000 --seeds 4
    python benchmarks/grid_speed.py --device cuda --engines local:1,local:2,local:4,local:8   # runs per GPU

Each engine gets a fresh store (`MELONBENCH_HOME` in a temporary folder), the same synthetic stream prepared there
first (not timed), then `python -m melonbench reproduce ...` is timed as a whole: pre-trainings, meta-models,
replays and the report. Printed per engine: wall seconds; CPU seconds of the command's process tree (the driver
and every worker it waited for: for Ray the workers are the raylet's children and only partly counted); the
machine's busy CPU seconds over the same interval (/proc/stat: other jobs on the machine count too, so it is an
upper bound); the load average before; and whether every run's batches.parquet equals the first engine's,
timings aside.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

TIMING = ["eval_s", "update_s"]


def busy_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (every core), from /proc/stat; NaN where there is none."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def batches(results: Path) -> dict[str, pl.DataFrame]:
    return {p.parent.name: pl.read_parquet(p).drop(TIMING) for p in sorted(results.glob("*/batches.parquet"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="local:1,local:2,ray:2", help="ENGINE:JOBS, comma-separated")
    parser.add_argument("--models", default="bpr")
    parser.add_argument("--strategies", default="default,mwnet,metasgd")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--users", type=int, default=2000, help="synthetic stream size (`--set users=`)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    command = [sys.executable, "-m", "melonbench"]
    grid = ["--models", args.models, "--strategies", args.strategies, "--seeds", str(args.seeds)]
    grid += ["--references", "none", "--ranking", "sampled", "--device", args.device, "--epochs", str(args.epochs)]
    print(
        f"grid: {args.models} x {args.strategies} x {args.seeds} seeds, synthetic with {args.users} users, "
        f"{args.epochs} pre-training epochs, on {args.device}; {os.cpu_count()} cores",
        flush=True,
    )
    print(f"{'engine':<10} {'wall s':>8} {'CPU s':>8} {'machine busy s':>15} {'load before':>12}  same bits as first")
    first: dict[str, pl.DataFrame] | None = None
    with tempfile.TemporaryDirectory(prefix="grid-speed-") as tmp:
        for spec in args.engines.split(","):
            name, _, jobs = spec.partition(":")
            home = Path(tmp) / spec.replace(":", "-")
            env = {**os.environ, "MELONBENCH_HOME": str(home)}
            prepare = [*command, "prepare", "synthetic", "--set", f"users={args.users}"]
            subprocess.run(prepare, env=env, check=True, capture_output=True)
            engine = ["--engine", name] + (["--jobs", jobs] if jobs else [])
            load = os.getloadavg()[0]
            cpu0, busy0, wall0 = children_cpu_s(), busy_cpu_s(), time.perf_counter()
            done = subprocess.run([*command, "reproduce", *grid, *engine], env=env, capture_output=True, text=True)
            wall, cpu, busy = time.perf_counter() - wall0, children_cpu_s() - cpu0, busy_cpu_s() - busy0
            if done.returncode != 0:
                print(f"{spec}: exit code {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                continue
            runs = batches(home / "results")
            first = first if first is not None else runs
            same = runs.keys() == first.keys() and all(runs[k].equals(first[k]) for k in runs)
            print(
                f"{spec:<10} {wall:>8.1f} {cpu:>8.1f} {busy:>15.1f} {load:>12.2f}  {same} ({len(runs)} runs)",
                flush=True,
            )


if __name__ == "__main__":
    main()
