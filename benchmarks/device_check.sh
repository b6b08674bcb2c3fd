#!/usr/bin/env bash
# One prepared GPU check for a session that is lent a device (issues 4 and 5). Sections, chosen by $SECTIONS
# (default "graphs replay", at most 9.5 minutes; "all" for every one, about 15):
#   graphs      every strategy (eALS is Default's step) replayed as a CUDA graph (`--set cuda_graphs=true`, never run on
#               a GPU before): does the capture work, does it compute what the CPU computes (cuda_parity.py,
#               8 batches), and how fast is it beside the eager step (strategy_speed.py);
#   strategies  every strategy's seconds per batch and peak memory on CUDA, at the Grocery size;
#   kernels     what the deterministic kernels cost (Default, MeLON, S²Meta with each kind, interleaved);
#   replay      the replay loop's seconds per batch (replay_speed.py), Default's update eager and as a graph;
#   end_to_end  only where polars and platformdirs import (carried as wheels in .whl/, see below): the product
#               on CUDA, twice from scratch (`melonbench prepare synthetic`, then `run -s melon -m ncf`,
#               pre-training included), and whether the two runs' per-batch metrics are bit-identical;
#   parity      CPU-vs-CUDA agreement and run-to-run repeatability of MeLON and S²Meta (cuda_parity.py).
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
sections="${SECTIONS:-graphs replay}"
[ "$sections" = all ] && sections="graphs strategies kernels replay end_to_end parity"
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

# graphs: every strategy but eALS (Default's step) as a CUDA graph (`@cuda_graphs=true`), against the CPU over 8 batches:
#    2 eager warm-up batches, a capture whose replay does batch 3, replays after that, so the "graph replays"
#    column must say 6 (or it names why capture failed). Then each one's speed beside its eager step (which also
#    gives every strategy's current eager figure on the GPU), and MeLON with B^last padded to a multiple of 64
#    instead of 2 |B_t| (NCF's dense pairs grow with the padding; one graph per size met).
if want graphs; then
    graphed=melon@cuda_graphs=true,default@cuda_graphs=true,mwnet@cuda_graphs=true,metasgd@cuda_graphs=true
    graphed=$graphed,s2meta@cuda_graphs=true,sml@cuda_graphs=true
    timeout 220 python3 benchmarks/cuda_parity.py --device "$device" --steps 8 --models bpr,ncf \
        --strategies "$graphed" 2>&1 | tee "$out/graphs_parity_$device.txt"
    timeout 250 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" \
        --strategies "melon,default,mwnet,metasgd,s2meta,sml,$graphed,melon@cuda_graphs=true@graph_bucket=64" \
        2>&1 | tee "$out/graphs_speed_$device.txt"
fi

# strategies: every strategy on both models (SML on BPR only), with the deterministic kernels that runs use, 20 timed
#    batches after 3 warm-up ones; each pair's figures are printed as they come, so a cut-short run keeps them.
if want strategies; then
    timeout 200 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" 2>&1 |
        tee "$out/strategy_speed_$device.txt"
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
