"""Tile shapes for MeLON's fused dense step (``strategies/melon/fused.py``) at NCF's size: agreement and
milliseconds per call.

On an H100 on 2026-11-28 the two fused kernels took 4.9 of the 9.6 ms of kernels in a MeLON-NCF batch, for
arithmetic estimated at about 1 ms (docs/melon.md). Their tile, ``BLOCK`` dense weights × ``ROWS`` interactions per
program in ``num_warps`` warps, was chosen without a GPU; this script measures the alternatives in one call, so
that a session lent a GPU can pick the fastest tile that agrees with ``DenseStep``.

For each tile ``BLOCKxROWSxWARPS[t]`` (``--tiles``; ``t``: the ``TILED`` backward), on inputs shaped like NCF's
look-ahead (``--rows`` interactions × ``--columns`` dense weights, role width ``--hidden``; seeded, with padding
rows and gradients across both branches of the preprocessing):

- **agreement**: the new weights and all seven gradients against ``DenseStep`` on the same device, as the largest
  ``max |fused − dense| / max |dense|`` over the eight (the CPU tests accept 1e-5), and whether a second call
  repeats the first bit for bit;
- **speed**: median milliseconds of the forward alone and of forward + backward over ``--repeats`` calls after one
  untimed call (which compiles), CUDA-synchronised; ``DenseStep``'s own figures in the first row.

    python benchmarks/fused_tune.py                                     # CUDA, the default tiles
    python benchmarks/fused_tune.py --tiles 32x128x4,64x128x8 --mean    # some tiles, the `mean` setting on
    TRITON_INTERPRET=1 python benchmarks/fused_tune.py --device cpu --rows 6 --columns 45 --tiles 32x4x2 --repeats 1

The last line is a dry run of the script itself anywhere (Triton's interpreter; its timings mean nothing). Register
counts per tile, which need no GPU: ``fused.compile_for(90, block, rows, warps, tiled)``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

TILES = "32x128x2,32x128x4,16x128x1,16x128x2,64x128x4,64x128x8,32x128x2t,32x128x4t,16x128x2t,64x128x8t"
"""The default grid: the current tile (32x128x2) first, then fewer registers per thread (more warps, smaller
blocks) and wider blocks; a trailing ``t`` takes the ``TILED`` backward (the weights' sums reduced once per program
rather than at every interaction)."""


def make_inputs(rows: int, columns: int, hidden: int, device: torch.device) -> dict:
    """Seeded inputs of ``DenseStep``'s shapes: ``theta [c]``, ``grads [n, c]``, the role tensors, ``valid``."""
    g = torch.Generator().manual_seed(0)
    grads = (
        torch.randn(rows, columns, generator=g) * torch.logspace(-7, -1, columns)[torch.randperm(columns, generator=g)]
    )
    grads[:, ::97] = 0.0  # weights an interaction does not reach
    valid = torch.ones(rows)
    valid[-max(1, rows // 8) :] = 0.0  # B^last padded to its fixed size: padding rows must add nothing
    tensors = {
        "theta": torch.randn(columns, generator=g) * 0.1,
        "grads": grads,
        "per_x": torch.randn(rows, hidden, generator=g),
        "gate_x": torch.randn(rows, 2, generator=g),
        "w_theta": torch.randn(hidden, generator=g),
        "w_grad": torch.randn(hidden, 2, generator=g),
        "w2": torch.randn(hidden, hidden, generator=g) / hidden**0.5,
        "b2": torch.randn(hidden, generator=g) * 0.1,
        "head": torch.randn(2, hidden, generator=g) / hidden**0.5,
        "valid": valid,
        "d_new": torch.randn(columns, generator=g),
    }
    return {k: v.to(device) for k, v in tensors.items()}


LEAVES = ("per_x", "gate_x", "w_theta", "w_grad", "w2", "b2", "head")


def one_call(step, inputs: dict, mean: bool, backward: bool) -> list[torch.Tensor]:
    """``step``'s new weights and, with ``backward``, the seven gradients for the loss ``new · d_new``."""
    leaves = [inputs[k].detach().clone().requires_grad_(backward) for k in LEAVES]
    args = (inputs["theta"], inputs["grads"], *leaves, inputs["valid"], mean)
    with torch.set_grad_enabled(backward):
        new = step(*args)
        if not backward:
            return [new]
        new.backward(inputs["d_new"])
    return [new.detach(), *(t.grad for t in leaves)]


def median_ms(call, repeats: int, device: torch.device) -> float:
    """Median wall milliseconds of ``call()`` over ``repeats`` calls, synchronised on CUDA."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def set_tile(tile: str) -> None:
    """Make ``BLOCKxROWSxWARPS[t]`` the fused step's tile in this process (``fused``'s module constants)."""
    from melonbench.strategies.melon import fused as melon_fused

    block, rows, warps = (int(v) for v in tile.rstrip("t").split("x"))
    melon_fused.BLOCK, melon_fused.ROWS, melon_fused.TILED = block, rows, tile.endswith("t")
    melon_fused.LAUNCH = melon_fused.LAUNCH | {"num_warps": warps}


def best(rows: list[dict], tolerance: float = 1e-5) -> str | None:
    """The tile with the fastest forward + backward among those within ``tolerance`` of ``DenseStep`` (the CPU
    tests' bound) that repeat bit for bit; None if none does."""
    fine = [r for r in rows if r["tile"] != "DenseStep" and "failure" not in r]
    fine = [r for r in fine if r["error"] <= tolerance and r["repeats"]]
    return min(fine, key=lambda r: r["both_ms"])["tile"] if fine else None


def measure(tile: str | None, inputs: dict, mean: bool, repeats: int, device: torch.device, reference) -> dict:
    """One tile (``None``: ``DenseStep`` itself): its agreement with ``reference`` and its speed."""
    from melonbench.strategies.melon import fused as melon_fused
    from melonbench.strategies.melon.parts import DenseStep

    if tile is None:

        def step(*args):
            return DenseStep.apply(*args, None)

    else:
        set_tile(tile)
        step = melon_fused.FusedDenseStep.apply
    try:
        first = one_call(step, inputs, mean, backward=True)  # compiles the kernels for this tile
        again = one_call(step, inputs, mean, backward=True)
    except Exception as error:  # noqa: BLE001 (a tile Triton refuses is a row of the table, not the end)
        return {"tile": tile or "DenseStep", "failure": f"{type(error).__name__}: {error}".splitlines()[0][:160]}
    error = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(first, reference))
    return {
        "tile": tile or "DenseStep",
        "forward_ms": median_ms(lambda: one_call(step, inputs, mean, backward=False), repeats, device),
        "both_ms": median_ms(lambda: one_call(step, inputs, mean, backward=True), repeats, device),
        "error": error,
        "repeats": all(torch.equal(a, b) for a, b in zip(first, again)),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--rows", type=int, default=512, help="interactions (NCF's look-ahead: B^last padded, 512)")
    parser.add_argument("--columns", type=int, default=20_865, help="dense weights (NCF at the Grocery size)")
    parser.add_argument("--hidden", type=int, default=16, help="role network width (MeLON's role_hidden)")
    parser.add_argument("--tiles", default=TILES, help="comma-separated BLOCKxROWSxWARPS, t at the end for TILED")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per tile and measure")
    parser.add_argument("--mean", action="store_true", help="the `mean` setting (the reference variant's average)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # as melonbench runs: full fp32 on both sides
    from melonbench.strategies.melon import fused as melon_fused
    from melonbench.strategies.melon.parts import DenseStep

    defaults = (melon_fused.BLOCK, melon_fused.ROWS, melon_fused.LAUNCH, melon_fused.TILED)
    inputs = make_inputs(args.rows, args.columns, args.hidden, device)
    reference = one_call(lambda *a: DenseStep.apply(*a, None), inputs, args.mean, backward=True)
    rows = []
    try:
        for tile in [None, *args.tiles.split(",")]:
            rows.append(measure(tile, inputs, args.mean, args.repeats, device, reference))
            print(f"  {rows[-1]}", flush=True)
    finally:
        melon_fused.BLOCK, melon_fused.ROWS, melon_fused.LAUNCH, melon_fused.TILED = defaults
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton's interpreter)"
    print(f"\nfused dense step, {args.rows} × {args.columns} pairs, R = {args.hidden}, mean={args.mean}, on {name}")
    current = f"{melon_fused.BLOCK}x{melon_fused.ROWS}x{melon_fused.LAUNCH['num_warps']}" + "t" * melon_fused.TILED
    print(f"torch {torch.__version__}; tile = BLOCK x ROWS x num_warps (t: TILED); the current one: {current}\n")
    print("| tile | forward ms | forward + backward ms | max rel. error vs DenseStep | repeats bit for bit |")
    print("|---|---|---|---|---|")
    for row in rows:
        if "failure" in row:
            print(f"| {row['tile']} | failed: {row['failure']} | | | |")
        else:
            print(f"| {row['tile']} | {row['forward_ms']:.3f} | {row['both_ms']:.3f} | {row['error']:.1e} | "
                  f"{'yes' if row['repeats'] else 'no'} |")  # fmt: skip
    print(f"\nbest tile: {best(rows)}")  # device_check.sh times MeLON-NCF with it
    return rows


if __name__ == "__main__":
    main()
