"""Seconds per online batch of every registered strategy, at the size of Amazon Grocery.

Configuration (issue 4): 1,233 users, 1,433 items, embedding size 64, batch 256, 100 sampled candidates per
interaction (1 positive + 99 negatives). The stream is a seeded random one with power-law popularity (33,326
interactions, 80 % "pre-training"), so no prepared dataset is needed; the recommender is freshly initialised
(timing does not depend on its values). Meta strategies are timed without meta pre-training, for the same reason.

Each (strategy, model) pair runs in its own child process, so its peak memory is its own: peak resident memory
(``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. Per batch we time, CUDA-synchronised,
the ranking of the batch against 100 candidates ("rank") and ``strategy.online_step`` ("update"); the first
``--warmup`` batches are excluded and medians are printed, with the authors' figures beside ours.

    python benchmarks/strategy_speed.py                          # every strategy, BPR and NCF, on CPU
    python benchmarks/strategy_speed.py --strategies default,melon --device cuda
    python benchmarks/strategy_speed.py --strategies melon --device cuda --kernels fast   # not bit-repeatable
    python benchmarks/strategy_speed.py --strategies default,melon --device cuda --kernels deterministic,fast
    python benchmarks/strategy_speed.py --strategies melon --models ncf --batches 10 --threads 1
    python benchmarks/strategy_speed.py --strategies default,melon --rounds 3 --threads 2   # interleaved rounds
    python benchmarks/strategy_speed.py --strategies default,melon,melon@cuda_graphs=true --device cuda

A strategy may carry its own settings after ``@`` (``melon@cuda_graphs=true@chunk=65536``), so that one run
compares two settings of a strategy, interleaved; ``--set`` applies to every strategy whose Config has the key.

On a CPU shared with other jobs, ``--threads 1`` gives steadier figures: with more threads than free cores,
the many small operations of a meta step wait on each other (we saw 10–20× slow-downs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

N_USERS, N_ITEMS, N_INTERACTIONS, BATCH, CANDIDATES = 1_233, 1_433, 33_326, 256, 100
ONLINE_BATCHES = (N_INTERACTIONS - int(N_INTERACTIONS * 0.8)) // BATCH  # full online batches: 26

# Median seconds per online batch of the authors' code on this configuration (issue 4), and peak memory (GiB).
REFERENCE = {
    ("cuda", "bpr", "default"): 0.0034,
    ("cuda", "bpr", "melon"): 0.066,
    ("cuda", "ncf", "default"): 0.0047,
    ("cuda", "ncf", "melon"): 0.127,
    ("cpu", "bpr", "default"): 0.020,
    ("cpu", "bpr", "melon"): 0.162,
    ("cpu", "ncf", "default"): 0.099,
    ("cpu", "ncf", "melon"): 27.6,
}
REFERENCE_PEAK_GIB = {("cuda", "ncf", "melon"): 8.3, ("cpu", "ncf", "melon"): 9.4}

# Issue 20: one call on an H200 (torch 2.11.0+cu130, deterministic kernels, CUDA graphs and the fused role network
# on; `--device cuda --batches 20`), median seconds per online batch of the update. The authors' code:
# kaist-dmlab/MeLON at 484c7a9, unmodified but for a pure-PyTorch stand-in for DGL, on the same stream.
H200_AUTHORS = {
    ("bpr", "default"): 0.0040,
    ("bpr", "melon"): 0.0704,
    ("ncf", "default"): 0.0080,
    ("ncf", "melon"): 0.1054,
}
H200_AUTHORS_PEAK_GIB = {("bpr", "melon"): 0.15, ("ncf", "melon"): 8.3}
H200_OURS = {
    ("bpr", "default"): 0.0003,
    ("bpr", "melon"): 0.0067,
    ("bpr", "mwnet"): 0.0023,
    ("bpr", "metasgd"): 0.0022,
    ("bpr", "s2meta"): 0.0059,
    ("bpr", "sml"): 0.0018,
    ("ncf", "default"): 0.0005,
    ("ncf", "melon"): 0.0122,
    ("ncf", "mwnet"): 0.0038,
    ("ncf", "metasgd"): 0.0031,
    ("ncf", "s2meta"): 0.0142,
}
H200_OURS_PEAK_GIB = {("bpr", "melon"): 0.17, ("ncf", "melon"): 0.31}

# Issue 20's targets on an H100/H200, deterministic kernels: seconds per batch of the update (MeLON and its
# variants; every other strategy is a baseline), and peak memory for every pair.
TARGET_MELON_S = {"bpr": 0.002, "ncf": 0.004}
TARGET_BASELINE_S = {"bpr": 0.002, "ncf": 0.003}
TARGET_PEAK_GIB = 0.5


def target_s(strategy: str, model: str) -> float | None:
    """Issue 20's per-batch target for a pair (``melon@...`` settings keep MeLON's), or None (no such model)."""
    name = parse_spec(strategy)[0]
    return (TARGET_MELON_S if name.startswith("melon") else TARGET_BASELINE_S).get(model)


def target_status(row: dict) -> str:
    """ "met" when the update and the peak memory are both within issue 20's targets, else "not met" (and why)."""
    target = target_s(row["strategy"], row["model"])
    if target is None:
        return "no target"
    peak = row["peak_bytes"] / 2**30
    missed = [f"update {row['update_s'] * 1e3:.1f} ms > {target * 1e3:g} ms"] * (row["update_s"] > target)
    missed += [f"peak {peak:.2f} GiB > {TARGET_PEAK_GIB} GiB"] * (peak > TARGET_PEAK_GIB)
    return "met" if not missed else f"not met ({'; '.join(missed)})"


def make_stream(device: torch.device):
    """A seeded Grocery-sized stream: power-law users and items, every id present."""
    from melonbench.online.stream import Stream

    g = torch.Generator().manual_seed(0)
    users = torch.multinomial(torch.arange(1, N_USERS + 1).float() ** -0.8, N_INTERACTIONS, True, generator=g)
    items = torch.multinomial(torch.arange(1, N_ITEMS + 1).float() ** -0.8, N_INTERACTIONS, True, generator=g)
    users[:N_USERS], items[:N_ITEMS] = torch.arange(N_USERS), torch.arange(N_ITEMS)
    end = int(N_INTERACTIONS * 0.8)
    ts = torch.arange(N_INTERACTIONS) * 60
    return Stream(users.to(device), items.to(device), ts.to(device), N_USERS, N_ITEMS, end, end + 666)


def parse_spec(spec: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``"melon@cuda_graphs=true@chunk=4096"`` → ``("melon", (("cuda_graphs", "true"), ("chunk", "4096")))``."""
    name, *settings = spec.split("@")
    return name, tuple(tuple(kv.split("=", 1)) for kv in settings)


def measure(
    strategy_name: str,
    model_name: str,
    device: torch.device,
    batches: int,
    warmup: int,
    settings: tuple[tuple[str, str], ...] = (),
    kernels: str = "deterministic",
    profile: int = 0,
) -> dict:
    """Time ``warmup + batches`` online batches of one pair in this process.

    ``kernels``: "deterministic" (what ``melonbench run`` uses on CUDA) or "fast" (PyTorch's defaults).
    ``profile``: when > 0, profile a few more batches afterwards and return the top ``profile`` operators.
    """
    from melonbench.online.determinism import deterministic

    with deterministic(device) if kernels == "deterministic" else contextlib.nullcontext():
        return _time_batches(strategy_name, model_name, device, batches, warmup, settings, profile)


def _time_batches(strategy_name, model_name, device, batches, warmup, settings, profile=0) -> dict:
    from melonbench.models import build_model
    from melonbench.online.cuda_graph import graph_report
    from melonbench.online.history import History
    from melonbench.online.negatives import sample_negatives
    from melonbench.online.stream import Batch
    from melonbench.online.timing import Stopwatch
    from melonbench.strategies import STRATEGIES, build_strategy

    torch.manual_seed(0)
    stream = make_stream(device)
    model = build_model(model_name, N_USERS, N_ITEMS, dim=64).to(device)
    name, own = parse_spec(strategy_name)
    fields = {f.name for f in dataclasses.fields(STRATEGIES[name].Config)}
    strategy = build_strategy(name, model, tuple(kv for kv in settings if kv[0] in fields) + own, 0)
    history = History(stream.users, stream.items, N_USERS, N_ITEMS, cursor=stream.pretrain_end)
    gen = torch.Generator(device=device).manual_seed(0)
    watch = Stopwatch(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rank_s, update_s = [], []

    def one_batch(index: int) -> dict[str, float]:
        lo = history.cursor
        positions = torch.arange(lo, lo + BATCH, device=device)
        users, items = stream.users[lo : lo + BATCH], stream.items[lo : lo + BATCH]
        candidates = sample_negatives(history, users, items, positions, CANDIDATES, gen)  # [B, 100] (+1 below)
        with watch.section("rank"), torch.no_grad():
            model.score(users, torch.cat([items[:, None], candidates[:, 1:]], 1))
        with watch.section("update"):
            strategy.online_step(
                Batch(
                    index, "test", positions, users, items, stream.ts[lo : lo + BATCH], candidates[:, 0].contiguous()
                ),
                history,
            )
        history.advance(BATCH)
        return watch.pop()

    for index in range(warmup + batches):
        times = one_batch(index)
        if index >= warmup:
            rank_s.append(times["rank"])
            update_s.append(times["update"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    replays, failure = graph_report(strategy)  # CUDA graphs: how many batches a replay served, or why none
    table = ""
    # The profile takes the stream's next (up to 5) full batches: after the timing, so that the profiler's overhead is
    # in no figure, and never the short last one (its different shape would be a fresh capture, not the step timed).
    room = min(5, (N_INTERACTIONS - history.cursor) // BATCH)
    if profile and room:
        table = _profile(lambda i: one_batch(warmup + batches + i), device, profile, room)
    elif profile:
        table = f"no full batch left to profile after {warmup} + {batches} of {ONLINE_BATCHES}: lower --batches"
    return {
        "strategy": strategy_name,
        "model": model_name,
        "device": device.type,
        "graph_replays": replays,
        "graph_failure": failure,
        "rank_s": statistics.median(rank_s),
        "update_s": statistics.median(update_s),
        "peak_bytes": peak,
        "threads": torch.get_num_threads(),
        "profile": table,
    }


def _profile(one_batch, device: torch.device, rows: int, batches: int = 5) -> str:
    """The operators that take the most time over ``batches`` more batches, device time first on CUDA.

    Under a CUDA graph the kernels a replay launches are listed by name (CUPTI sees them), so the table says
    what a graphed step spends its GPU time on, where the eager figures are dominated by launches.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda
    with torch_profile(activities=activities) as prof:
        for i in range(batches):
            one_batch(i)
        if cuda:
            torch.cuda.synchronize(device)
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return f"{batches} batches profiled\n" + prof.key_averages().table(sort_by=sort, row_limit=rows)


def main() -> None:
    from melonbench.models import MODELS
    from melonbench.strategies import STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all)")
    parser.add_argument("--models", default="bpr,ncf")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batches", type=int, default=20, help="timed batches per pair")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every pair this many times, interleaved; report the median over rounds",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy setting, applied to the strategies whose Config has KEY",
    )
    parser.add_argument(
        "--kernels",
        default="deterministic",
        help="CUDA kernels: deterministic (what runs use, bit-repeatable), fast (PyTorch's defaults), or both "
        "comma-separated (every pair with each, interleaved)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="after timing, profile 5 more batches of each pair and print its ROWS most expensive operators",
    )
    parser.add_argument(
        "--fused-tile",
        metavar="BLOCKxROWSxWARPS[t]",
        help="MeLON's fused dense step with this tile instead of the default of strategies/melon/fused.py "
        "(benchmarks/fused_tune.py)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows here (grid_scale.py --per-batch reads it)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: "strategy:model"
    args = parser.parse_args()
    kernel_sets = args.kernels.split(",")
    if not set(kernel_sets) <= {"deterministic", "fast"}:
        parser.error(f"--kernels takes deterministic, fast or both, got {args.kernels!r}")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        if args.fused_tile:
            from fused_tune import set_tile

            set_tile(args.fused_tile)
        strategy, model = args.one.split(":")
        settings = tuple(tuple(kv.split("=", 1)) for kv in args.set)
        found = measure(strategy, model, device, args.batches, args.warmup, settings, args.kernels, args.profile)
        print(json.dumps(found))
        return

    jobs = [
        (strategy, model, kernels)
        for model in args.models.split(",")
        for strategy in args.strategies.split(",")
        if model in MODELS and model in STRATEGIES[parse_spec(strategy)[0]].supports
        for kernels in kernel_sets
    ]
    runs: dict[tuple[str, str, str], list[dict]] = {job: [] for job in jobs}
    # rounds interleave the pairs, so that a change in the machine's load touches them all alike
    for _ in range(args.rounds):
        for strategy, model, kernels in jobs:
            started = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{strategy}:{model}",
                    "--device",
                    args.device,
                    "--batches",
                    str(args.batches),
                    "--warmup",
                    str(args.warmup),
                    "--threads",
                    str(args.threads),
                    "--kernels",
                    kernels,
                    "--profile",
                    str(args.profile),
                    *(f"--set={kv}" for kv in args.set),
                    *([f"--fused-tile={args.fused_tile}"] if args.fused_tile else []),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(f"{strategy}/{model}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            found = {**json.loads(proc.stdout.strip().splitlines()[-1]), "kernels": kernels}
            runs[(strategy, model, kernels)].append(found)
            # the figures as they come, so that a run cut short still leaves them
            print(
                f"  measured {strategy}/{model} ({kernels}) in {time.perf_counter() - started:.0f} s: update "
                f"{found['update_s']:.4f} s, rank {found['rank_s']:.4f} s, peak {found['peak_bytes'] / 2**30:.2f} GiB"
                + (f", {found['graph_replays']} graph replays" if found["graph_replays"] else "")
                + (f", graph capture failed: {found['graph_failure']}" if found["graph_failure"] else ""),
                file=sys.stderr,
            )
            if found["profile"]:
                print(f"\n{strategy}/{model} ({kernels}): {found['profile']}", file=sys.stderr)
    rows = [combine(found) for found in runs.values() if found]
    if args.threads:
        torch.set_num_threads(args.threads)
    print_table(rows, device)
    if device.type == "cuda":
        print_targets(rows, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "profile"} for r in rows], f, indent=2)
    if args.set:
        print(f"\nsettings: {', '.join(args.set)}")
    if args.fused_tile:
        print(f"\nMeLON's fused dense step with the tile {args.fused_tile}")
    if device.type == "cuda" and len(kernel_sets) == 1:
        print(f"\nCUDA kernels: {args.kernels}")


def combine(found: list[dict]) -> dict:
    """One row from the rounds of a pair: median times, largest peak memory."""
    row = dict(found[0])
    for key in ("rank_s", "update_s"):
        row[key] = statistics.median(r[key] for r in found)
    row["peak_bytes"] = max(r["peak_bytes"] for r in found)
    return row


def print_targets(rows: list[dict], device: torch.device) -> None:
    """Issue 20's targets beside the figures, met or not met, with the H200 reference of that issue."""
    name = torch.cuda.get_device_name(device)
    where = "" if any(gpu in name for gpu in ("H100", "H200")) else f" (they are set for an H100/H200, this is {name})"
    print(f"\nissue 20's targets, per batch with the deterministic kernels, peak <= {TARGET_PEAK_GIB} GiB{where}\n")
    print("| model | strategy | kernels | update | target | peak memory | H200, issue 20: ours / authors' | status |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        key = (r["model"], parse_spec(r["strategy"])[0])
        target = target_s(r["strategy"], r["model"])
        h200 = f"{H200_OURS[key]:.4f}" if key in H200_OURS else "—"
        h200 += f" / {H200_AUTHORS[key]:.4f}" if key in H200_AUTHORS else ""
        status = target_status(r) if r["kernels"] == "deterministic" else "(targets are for deterministic kernels)"
        print(
            f"| {r['model']} | {r['strategy']} | {r['kernels']} | {r['update_s']:.4f} | "
            f"{'' if target is None else f'<= {target:.3f}'} | {r['peak_bytes'] / 2**30:.2f} GiB | {h200} | {status} |"
        )


def print_table(rows: list[dict], device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nGrocery-sized configuration on {name}; median seconds per online batch (warm-up excluded)\n")
    several = len({r["kernels"] for r in rows}) > 1  # a column for the kernels only when both were measured
    head = "| model | strategy |" + " kernels |" * several
    print(f"{head} rank (100 cand.) | update | ours / authors' update | authors' | peak memory |")
    print("|---|---|---|---|---|---|---|" + "---|" * several)
    default = {(r["model"], r["kernels"]): r["update_s"] for r in rows if r["strategy"] == "default"}
    for r in rows:
        key = (r["model"], r["kernels"])
        ref = REFERENCE.get((r["device"], r["model"], parse_spec(r["strategy"])[0]))
        peak_ref = REFERENCE_PEAK_GIB.get((r["device"], r["model"], parse_spec(r["strategy"])[0]))
        ratio = f"{r['update_s'] / ref:.3f}" if ref else ""
        vs_default = f" ({r['update_s'] / default[key]:.1f}× our default)" if key in default else ""
        peak = f"{r['peak_bytes'] / 2**30:.2f} GiB" + (f" (authors' {peak_ref} GiB)" if peak_ref else "")
        kernels = f" {r['kernels']} |" if several else ""
        print(
            f"| {r['model']} | {r['strategy']} |{kernels} {r['rank_s']:.4f} | {r['update_s']:.4f}{vs_default} | "
            f"{ratio} | "
            f"{ref if ref else ''} | {peak} |"
        )


if __name__ == "__main__":
    main()
