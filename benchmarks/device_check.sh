#!/usr/bin/env bash
# One prepared GPU check for a session that is lent a device (issues 4 and 5). Sections, chosen by $SECTIONS
# (default "fused end_to_end strategies", at most 9.7 minutes; "all" for every one, about 20):
#   fused       MeLON's dense step as two Triton kernels (`fused_role`, the default on CUDA since the H100 call of
#               2026-11-28): which tile (BLOCK x ROWS x warps) is fastest while it agrees with DenseStep
#               (fused_tune.py), then MeLON-NCF with the default tile beside `fused_role=false`, and with the best
#               tile where it differs (strategy_speed.py --fused-tile);
#   strategies  every strategy's seconds per batch and peak memory on CUDA, at the Grocery size (CUDA graphs on,
#               the default since 2026-11-28);
#   graphs      every strategy's step as a CUDA graph against the CPU (8 batches, "graph replays" 6) and beside its
#               eager step (`cuda_graphs=false`); measured on an H200 on 2026-11-28 (docs/melon.md);
#   kernels     what the deterministic kernels cost (Default, MeLON, S²Meta with each kind, interleaved);
#   replay      the replay loop's seconds per batch (replay_speed.py), Default's update eager and as a graph;
#   end_to_end  only where polars and platformdirs import (carried as wheels in .whl/, see below): the product
#               on CUDA, twice from scratch (`melonbench prepare synthetic`, then `run -s melon -m ncf`,
#               pre-training included), and whether the two runs' per-batch metrics are bit-identical;
#   parity      CPU-vs-CUDA agreement and run-to-run repeatability of MeLON and S²Meta (cuda_parity.py);
#   targets     issue 20 in one call (SECTIONS=targets, at most 8 minutes): strategy_speed.py for every strategy on
#               BPR and NCF, its targets beside its figures (MeLON-BPR <= 2 ms, MeLON-NCF <= 4 ms, baselines <= 2 ms BPR
#               and <= 3 ms NCF, peak <= 0.5 GiB: met / not met), then, where polars and platformdirs import (carry
#               .whl), grid_scale.py --quick at Yelp size extrapolated to the whole grid (target <= 1 GPU-hour) with
#               those per-batch figures; a summary of every target at the end ($OUT/targets_summary.txt);
#   agreement   only where polars and platformdirs import and .agreement/cpu was carried: the issue-16 grid (Grocery,
#               every strategy, BPR and NCF, 2 seeds) replayed on CUDA beside the CPU runs made before the call,
#               test HR@5 per device and their difference (device_agreement.py). Make the CPU side first:
#                   python benchmarks/device_agreement.py --root .agreement --devices cpu --home-from ~/.cache/melonbench
#
# Run from the repository root on the device machine, whose python3 has PyTorch (all but end_to_end import nothing of
# melonbench that needs polars or platformdirs, see tests/test_benchmark_imports.py):
#
#     bash benchmarks/device_check.sh            # results also go to $OUT/ when it is set
#     SECTIONS=all bash benchmarks/device_check.sh
#     DEVICE=cpu BATCHES=2 SECTIONS=all bash benchmarks/device_check.sh   # a dry run of the script itself, anywhere
#
# For end_to_end, download the wheels here first (they are git-ignored) and carry `.whl` with the device call:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_17_x86_64 -d .whl polars==2.1.0 polars-runtime-32==2.1.0 platformdirs==4.14.8
#
# Nothing is installed system-wide; melonbench is used from the checkout (PYTHONPATH), its storage under /tmp.
set -uo pipefail

device="${DEVICE:-cuda}"
sections="${SECTIONS:-fused end_to_end strategies}"
[ "$sections" = all ] && sections="fused strategies graphs kernels replay end_to_end parity targets"
want() { [[ " $sections " == *" $1 "* ]]; }
batches="${BATCHES:-20}"
out="${OUT:-/tmp/device_check}"
mkdir -p "$out"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MELONBENCH_HOME=/tmp/melonbench-home
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$out/device.txt"

# fused: MeLON-NCF's dense step in two Triton kernels. First every tile of fused_tune.py at NCF's look-ahead size
#    against DenseStep on the GPU (the current tile 32x128x2 first; on the H100 the two kernels took 4.9 of a batch's
#    9.6 ms of kernels, for ~1 ms of arithmetic); then MeLON-NCF's update with the current tile, with and without
#    B^last padded to a multiple of 64, beside the unfused step (29-30 ms on the H100).
if want fused; then
    tune=()  # a dry run on a CPU: tiny inputs, in Triton's interpreter
    [ "$device" = cpu ] && tune=(--rows 6 --columns 45 --repeats 1 --tiles 32x4x2,16x128x1) && export TRITON_INTERPRET=1
    timeout 150 python3 benchmarks/fused_tune.py --device "$device" "${tune[@]}" 2>&1 | tee "$out/fused_tune_$device.txt"
    unset TRITON_INTERPRET
    timeout 100 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" --models ncf \
        --strategies default,melon,melon@graph_bucket=64,melon@fused_role=false 2>&1 |
        tee "$out/fused_speed_$device.txt"
    # MeLON-NCF again with the fastest tile that agreed (fused_tune.py's last line), where it is not the current one
    best=$(sed -n 's/^best tile: \([0-9x]*t\?\)$/\1/p' "$out/fused_tune_$device.txt")
    current=$(sed -n 's/.*the current one: \([0-9x]*t\?\)$/\1/p' "$out/fused_tune_$device.txt")
    if [ -n "$best" ] && [ "$best" != "$current" ] && [ "$device" = cuda ]; then
        timeout 60 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" --models ncf \
            --strategies melon,melon@graph_bucket=64 --fused-tile "$best" 2>&1 | tee "$out/fused_best_$device.txt"
    fi
fi

# strategies: the seven strategies on both models (SML on BPR only), with the deterministic kernels that runs
#    use, 20 timed batches after 3 warm-up ones; each pair's figures are printed as they come, so a cut-short run keeps
#    them. Then the 3 full batches left, profiled, their 12 most expensive kernels: what a graphed step spends its
#    device time on, and (its update time less that) what the preparation outside the graph costs.
if want strategies; then
    timeout 170 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" --profile 12 \
        --strategies default,eals,melon,mwnet,metasgd,s2meta,sml 2>&1 | tee "$out/strategy_speed_$device.txt"
fi

# graphs: every strategy but eALS (Default's step) as a CUDA graph, against the CPU over 8 batches: 2 eager warm-up
#    batches, a capture whose replay does batch 3, replays after that, so the "graph replays" column must say 6 (or
#    it names why capture failed); then each one's speed beside its eager step.
if want graphs; then
    timeout 220 python3 benchmarks/cuda_parity.py --device "$device" --steps 8 --models bpr,ncf \
        --strategies melon,default,mwnet,metasgd,s2meta,sml 2>&1 | tee "$out/graphs_parity_$device.txt"
    eager=melon@cuda_graphs=false,default@cuda_graphs=false,mwnet@cuda_graphs=false,metasgd@cuda_graphs=false
    eager=$eager,s2meta@cuda_graphs=false,sml@cuda_graphs=false
    timeout 360 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" \
        --strategies "default,melon,mwnet,metasgd,s2meta,sml,$eager" 2>&1 | tee "$out/graphs_speed_$device.txt"
fi

# kernels: what the deterministic kernels cost: Default, MeLON and S²Meta with each kind, interleaved, two rounds.
if want kernels; then
    timeout 130 python3 benchmarks/strategy_speed.py --device "$device" --batches 15 --rounds 2 \
        --strategies default,melon,s2meta --kernels deterministic,fast 2>&1 | tee "$out/kernels_$device.txt"
fi

# replay: the replay loop (Default; ranking against 100 candidates and full ranking, then the update).
if want replay; then
    timeout 90 python3 benchmarks/replay_speed.py --device "$device" 2>&1 | tee "$out/replay_speed_$device.txt"
fi

# end_to_end: the product, twice, each from an empty store (prepare, pre-train, meta-pre-train, replay).
if ! want end_to_end; then
    :
elif python3 -c "import polars, platformdirs" 2>/dev/null; then
    timeout 100 bash -c '
        for home in /tmp/e2e-a /tmp/e2e-b; do
            rm -rf "$home"; export MELONBENCH_HOME=$home
            started=$SECONDS
            python3 -m melonbench prepare synthetic >/dev/null || exit 1
            python3 -m melonbench run -s melon -m ncf --device "$0" --epochs 2 || exit 1
            echo "from scratch in $((SECONDS - started)) s"
        done
        python3 benchmarks/same_metrics.py /tmp/e2e-a/results/*/ /tmp/e2e-b/results/*/
    ' "$device" 2>&1 | tee "$out/end_to_end_$device.txt"
else
    echo "end to end: skipped (polars or platformdirs missing; carry .whl)" | tee "$out/end_to_end_$device.txt"
fi

# parity: parity with the CPU and repeatability, 3 online batches per pair (all strategies were checked on an H200 on
#    2026-11-28: docs/melon.md, docs/baselines.md; `--strategies` to widen).
if want parity; then
    timeout 60 python3 benchmarks/cuda_parity.py --device "$device" --steps 3 --strategies melon,s2meta \
        --models bpr,ncf 2>&1 | tee "$out/parity_$device.txt"
fi

# agreement: same seed on the CPU (carried, finished runs are not redone) and on this device: test HR@5 within 0.01?
if ! want agreement; then
    :
elif [ -d .agreement/cpu ] && python3 -c "import polars, platformdirs" 2>/dev/null; then
    timeout 540 python3 benchmarks/device_agreement.py --root .agreement --devices "cpu,$device" \
        2>&1 | tee "$out/agreement_$device.txt"
else
    echo "agreement: skipped (no .agreement/cpu carried, or polars/platformdirs missing)" | tee "$out/agreement_$device.txt"
fi

# targets: issue 20's per-batch targets (strategy_speed.py prints them beside its figures, met / not met, with the
#    H200 reference of the issue), then the whole grid at Yelp size from grid_scale.py --quick (1 seed of default and
#    melon, BPR and NCF, 2 pre-training epochs, 1 meta epoch, extrapolated with the per-batch figures just measured).
#    GRID_SCALE (a fraction of Yelp's size) makes a dry run quick: DEVICE=cpu BATCHES=2 GRID_SCALE=0.003 SECTIONS=targets
if want targets; then
    timeout 170 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" \
        --strategies default,eals,melon,mwnet,metasgd,s2meta,sml --json "$out/targets_speed_$device.json" 2>&1 |
        tee "$out/targets_speed_$device.txt"
    if python3 -c "import polars, platformdirs" 2>/dev/null; then
        per_batch=()
        [ -s "$out/targets_speed_$device.json" ] && per_batch=(--per-batch "$out/targets_speed_$device.json")
        timeout 290 python3 benchmarks/grid_scale.py --quick --device "$device" --scale "${GRID_SCALE:-1}" \
            "${per_batch[@]}" --json "$out/grid_scale_$device.json" 2>&1 | tee "$out/grid_scale_$device.txt"
    else
        echo "grid_scale: skipped (polars or platformdirs missing; carry .whl)" | tee "$out/grid_scale_$device.txt"
    fi
    {
        echo "issue 20's targets (H100/H200, deterministic kernels):"
        echo "  per batch: MeLON-BPR <= 2 ms, MeLON-NCF <= 4 ms, baselines <= 2 ms (BPR) / 3 ms (NCF), peak <= 0.5 GiB"
        echo "  whole grid at Yelp size (5 seeds, every strategy, BPR and NCF, pre-training included) <= 1 GPU-hour"
        grep -h -E '^\| (bpr|ncf) \|.*(met|no target|targets are for)' "$out/targets_speed_$device.txt" || echo "  (no per-batch figures)"
        grep -h '^target: whole grid' "$out/grid_scale_$device.txt" || echo "  (no grid figure)"
    } | tee "$out/targets_summary.txt"
fi
