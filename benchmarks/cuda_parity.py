"""Does every strategy's online step compute on CUDA what it computes on the CPU, and the same on every run?

For each (strategy, model) at the Grocery size of ``strategy_speed.py``, in a child process of its own (a CUDA
error cannot spoil the next pair), two checks over ``--steps`` online batches:

- **parity**: the same initial recommender and meta-model on both devices (the CUDA strategy loads the CPU one's
  ``meta_state_dict``, which also checks that a CPU-made meta-model loads on CUDA), the same batches and the same
  training negatives (every negative, B_t^last's included, is drawn on the CPU for both, because CPU and CUDA
  generators give different streams by design). Reported as ``‖θ_cuda − θ_cpu‖ / ‖θ_cpu − θ_0‖`` over all the
  recommender's parameters: the disagreement relative to the change the steps made. float32 on both sides (no
  TF32), so it should sit far below 1e-3; meta strategies feed the model back into the meta-model, so errors
  grow a little with the steps.
- **repeat**: a second CUDA run from the same start gives bit-identical parameters (``yes``) or not (the largest
  absolute difference), with the deterministic kernels that ``melonbench run`` switches on
  (:func:`melonbench.online.determinism.deterministic`), and again with PyTorch's default ("fast") kernels, whose atomic
  additions (``index_add`` and friends) make the sums' order change between runs.

    python benchmarks/cuda_parity.py                          # every strategy, BPR and NCF (needs CUDA)
    python benchmarks/cuda_parity.py --strategies melon --models ncf --steps 3
    python benchmarks/cuda_parity.py --device cpu             # the script itself on a machine without CUDA
    python benchmarks/cuda_parity.py --strategies melon@cuda_graphs=true --steps 6   # CUDA graphs against the CPU

A strategy may carry settings after ``@`` as in ``strategy_speed.py``; both devices get them (``cuda_graphs``
changes nothing on the CPU). The "graph replays" column counts the CUDA batches a graph replay served.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strategy_speed import BATCH, N_ITEMS, N_USERS, make_stream, parse_spec  # noqa: E402


def steps_on(device: torch.device, strategy_name: str, model_name: str, steps: int, start: dict) -> dict:
    """Run ``steps`` online batches on ``device`` from ``start`` (the CPU model and meta state); final parameters."""
    import melonbench.strategies.base as base
    from melonbench.online.cuda_graph import graph_report
    from melonbench.online.history import History
    from melonbench.online.negatives import sample_negatives, sample_training_negatives
    from melonbench.online.stream import Batch
    from melonbench.strategies import build_strategy

    stream = make_stream(torch.device("cpu"))
    model = copy.deepcopy(start["model"]).to(device)
    name, settings = parse_spec(strategy_name)
    strategy = build_strategy(name, model, settings, 0)
    if start["meta"] is not None:
        strategy.load_meta_state_dict(start["meta"])
    history = History(stream.users.to(device), stream.items.to(device), N_USERS, N_ITEMS, cursor=stream.pretrain_end)
    mirror = History(stream.users, stream.items, N_USERS, N_ITEMS, cursor=stream.pretrain_end)  # the CPU draws'
    gen = torch.Generator().manual_seed(0)

    def on_cpu(history_, users, positives, positions, generator_, **kw):
        kw = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        out = sample_training_negatives(mirror, users.cpu(), positives.cpu(), positions.cpu(), gen, **kw)
        return out.to(users.device)

    original, base.sample_training_negatives = base.sample_training_negatives, on_cpu
    losses = []
    try:
        for index in range(steps):
            lo = history.cursor
            positions = torch.arange(lo, lo + BATCH)
            users, items = stream.users[lo : lo + BATCH], stream.items[lo : lo + BATCH]
            negatives = sample_negatives(mirror, users, items, positions, 1, gen)[:, 0]
            batch = Batch(
                index,
                "test",
                *(t.to(device) for t in (positions, users, items, stream.ts[lo : lo + BATCH], negatives)),
            )
            losses.append(strategy.online_step(batch, history).detach().cpu().double())  # per-interaction losses
            history.advance(BATCH)
            mirror.advance(BATCH)
    finally:
        base.sample_training_negatives = original
    replays, failure = graph_report(strategy)
    return {
        "params": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "losses": losses,
        "replays": replays,
        "graph_failure": failure,
    }


def check(strategy_name: str, model_name: str, device: torch.device, steps: int) -> dict:
    from melonbench.models import build_model
    from melonbench.online.determinism import deterministic
    from melonbench.strategies import build_strategy

    torch.manual_seed(0)
    model = build_model(model_name, N_USERS, N_ITEMS, dim=64)
    probe = build_strategy(parse_spec(strategy_name)[0], copy.deepcopy(model), parse_spec(strategy_name)[1], 0)
    meta = probe.meta_state_dict() if probe.meta else None
    start = {"model": model, "meta": meta}
    theta0 = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def largest_gap(a: dict, b: dict) -> float:
        return max(float((a["params"][k] - b["params"][k]).abs().max()) for k in theta0)

    cpu = steps_on(torch.device("cpu"), strategy_name, model_name, steps, start)
    with deterministic(device):  # as `melonbench run` does
        dev = steps_on(device, strategy_name, model_name, steps, start)
        again = steps_on(device, strategy_name, model_name, steps, start)
    fast = [steps_on(device, strategy_name, model_name, steps, start) for _ in range(2)]  # PyTorch's defaults
    moved = sum(float((cpu["params"][k] - theta0[k]).pow(2).sum()) for k in theta0) ** 0.5
    apart = sum(float((dev["params"][k] - cpu["params"][k]).pow(2).sum()) for k in theta0) ** 0.5
    repeat, repeat_fast = largest_gap(again, dev), largest_gap(fast[1], fast[0])
    return {
        "strategy": strategy_name,
        "model": model_name,
        "moved": moved,
        "rel_err": apart / moved if moved else float("nan"),
        "loss_gap": max(float((a - b).abs().max()) for a, b in zip(cpu["losses"], dev["losses"])),
        "repeat": "yes" if repeat == 0 else f"no ({repeat:.1e})",
        "repeat_fast": "yes" if repeat_fast == 0 else f"no ({repeat_fast:.1e})",
        "replays": dev["replays"],
        "graph_failure": dev["graph_failure"],
    }


def main() -> None:
    from melonbench.models import MODELS
    from melonbench.strategies import STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all)")
    parser.add_argument("--models", default="bpr,ncf")
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=5, help="online batches per check")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: "strategy:model"
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.one:
        strategy, model = args.one.split(":")
        print(json.dumps(check(strategy, model, device, args.steps)))
        return

    rows = []
    for model in args.models.split(","):
        for strategy in args.strategies.split(","):
            if model not in MODELS or model not in STRATEGIES[parse_spec(strategy)[0]].supports:
                continue
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--one", f"{strategy}:{model}", "--device", args.device]
                + ["--steps", str(args.steps)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(f"{strategy}/{model}: FAILED\n{proc.stderr[-3000:]}", flush=True)
                rows.append({"strategy": strategy, "model": model, "failed": True})
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            # each pair's result as it comes, so that a run cut short still leaves them
            print(f"  checked in {time.perf_counter() - started:.0f} s: {json.dumps(rows[-1])}", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.device} ({name}) against the CPU, {args.steps} online batches, torch {torch.__version__}\n")
    print(
        "| model | strategy | ‖Δθ‖ | rel. error vs CPU | max loss gap | repeats bit for bit | with fast kernels |"
        " graph replays |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['model']} | {r['strategy']} | FAILED | | | | | |")
            continue
        print(
            f"| {r['model']} | {r['strategy']} | {r['moved']:.3g} | {r['rel_err']:.1e} | {r['loss_gap']:.1e} | "
            f"{r['repeat']} | {r['repeat_fast']} | {r['replays']}"
            + (f" (capture failed: {r['graph_failure']})" if r["graph_failure"] else "")
            + " |"
        )


if __name__ == "__main__":
    main()
