"""Same seed, CPU against CUDA: does every strategy reach the same test HR@5 on both devices? (issue 16, part 3)

Runs ``melonbench reproduce`` once per device, each in a store of its own (its own pre-training, meta pre-training
and replay, as a user on that device would), then prints for every (model, strategy, seed) the test HR@5 under both
rankings on each device, their difference, and the seed-to-seed standard deviation on the first device for scale,
and flags differences above ``--tolerance`` (0.01, the issue's).

Why the devices need not agree to the bit: the seed fixes each device's random streams, and PyTorch's CPU and CUDA
generators give different streams by design, so the training negatives (and MeLON's neighbour draws) differ from
the first online batch on. Strategies that do not train (``frozen``, the references) must agree to float rounding;
a learning strategy is expected within about its seed-to-seed spread; a difference far beyond it, or a run that
fails on one device only, is a finding.

    python benchmarks/device_agreement.py --dataset g1 --home-from ~/.cache/melonbench   # cpu and cuda
    python benchmarks/device_agreement.py --devices cpu --seeds 2          # one device: the runs, no comparison
    python benchmarks/device_agreement.py --devices cpu,cuda --reuse      # compare stores made before (carried)

The stores live under ``--root`` (``<root>/<device>/``): carry ``<root>/cpu`` made on a CPU machine to a GPU
machine and pass ``--reuse`` there, so that the device call only replays on CUDA (``reproduce`` skips finished
runs). ``--home-from`` names a ``MELONBENCH_HOME`` whose ``datasets/<name>`` is copied in (the device machine
cannot read ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = ("sampled_hr@5", "full_hr@5")


def run_device(device: str, args: argparse.Namespace) -> Path:
    """``melonbench reproduce`` on ``device`` in its own store; the results folder."""
    home = Path(args.root) / device
    dataset = home / "datasets" / args.dataset
    if not dataset.is_dir():
        if not args.home_from:
            sys.exit(f"no prepared '{args.dataset}' in {home}: give --home-from MELONBENCH_HOME")
        shutil.copytree(Path(args.home_from).expanduser() / "datasets" / args.dataset, dataset)
    command = [sys.executable, "-m", "melonbench", "reproduce", "-d", args.dataset, "--device", device]
    command += ["--models", args.models, "--strategies", args.strategies, "--seeds", str(args.seeds)]
    command += ["--epochs", str(args.epochs), "--references", args.references]
    command += ["--results", str(home / "results"), "--out", str(home / "report")]
    for setting in args.set or []:
        command += ["--set", setting]
    env = {**os.environ, "MELONBENCH_HOME": str(home)}
    print(f"[{device}] {' '.join(command[2:])}", flush=True)
    code = subprocess.run(command, env=env).returncode  # exit 1: some run failed (recorded); read on
    if code not in (0, 1):
        sys.exit(f"[{device}] reproduce stopped with exit code {code}")
    return home / "results"


def read_store(results: Path) -> dict[tuple[str, str, int], dict[str, float] | str]:
    """(model, strategy, seed) → test means of METRICS, or the failure's reason."""
    out: dict[tuple[str, str, int], dict[str, float] | str] = {}
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        manifest, failure = folder / "manifest.json", folder / "failure.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            c = m["config"]
            out[(c["model"], c["strategy"], c["seed"])] = {k: m["summary"][k] for k in METRICS}
        elif failure.is_file():
            f = json.loads(failure.read_text())
            c = f["config"]
            out[(c["model"], c["strategy"], c["seed"])] = f"failed: {f.get('reason', '?')}"[:60]
    return out


def compare(stores: dict[str, dict], tolerance: float) -> int:
    """Print the table; return how many (run, metric) pairs differ by more than ``tolerance``."""
    first, *others = list(stores)
    keys = sorted(set().union(*(s.keys() for s in stores.values())))
    spread: dict[tuple[str, str], dict[str, float]] = {}
    for model, strategy in sorted({k[:2] for k in keys}):
        runs = [v for k, v in stores[first].items() if k[:2] == (model, strategy) and isinstance(v, dict)]
        spread[(model, strategy)] = {
            m: statistics.stdev([r[m] for r in runs]) if len(runs) > 1 else float("nan") for m in METRICS
        }
    header = ["model", "strategy", "seed"]
    for m in METRICS:
        header += [f"{m} {d}" for d in stores] + [f"|Δ| {m}", f"seed sd {first}"]
    print(" | ".join(header))
    beyond = 0
    for key in keys:
        row = [key[0], key[1], str(key[2])]
        for m in METRICS:
            values = [stores[d].get(key, "missing") for d in stores]
            row += [f"{v[m]:.4f}" if isinstance(v, dict) else v for v in values]
            if all(isinstance(v, dict) for v in values) and others:
                delta = max(abs(v[m] - values[0][m]) for v in values[1:])
                flag = " *" if delta > tolerance else ""
                beyond += delta > tolerance
                row.append(f"{delta:.4f}{flag}")
            else:
                beyond += bool(others) and len({isinstance(v, dict) for v in values}) > 1  # failed on one device only
                row.append("n/a")
            row.append(f"{spread[key[:2]][m]:.4f}")
        print(" | ".join(row))
    if others:
        print(f"{beyond} (run, metric) pairs differ by more than {tolerance} or fail on one device only (*)")
    return beyond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="g1")
    parser.add_argument("--home-from", help="a MELONBENCH_HOME holding datasets/<dataset>")
    parser.add_argument("--root", default="/tmp/device_agreement")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--models", default="bpr,ncf")
    parser.add_argument("--strategies", default="all")
    parser.add_argument("--references", default="pop,recent-pop")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="pre-training epochs (the issue's checks use 2)")
    parser.add_argument("--set", action="append", help="passed to reproduce, e.g. melon:variant=paper")
    parser.add_argument("--reuse", action="store_true", help="only read the stores under --root (no runs)")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    devices = args.devices.split(",")
    stores = {}
    for device in devices:
        results = Path(args.root) / device / "results" if args.reuse else run_device(device, args)
        if not results.is_dir():
            sys.exit(f"no results for {device} under {results}")
        stores[device] = read_store(results)
    beyond = compare(stores, args.tolerance)
    sys.exit(1 if beyond else 0)


if __name__ == "__main__":
    main()
