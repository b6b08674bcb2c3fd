#!/usr/bin/env bash
# One prepared GPU check for a session that is lent a device (issues 4 and 5): the replay and every strategy on
# CUDA, at the Grocery size, with the device's name and the library versions, in about 5 minutes on an H100.
#
# Run from the repository root on the device machine, whose python3 has PyTorch (the benchmarks import nothing of
# melonbench that needs polars or platformdirs, see tests/test_benchmark_imports.py):
#
#     bash benchmarks/device_check.sh            # results also go to $OUT/ when it is set
#     DEVICE=cpu BATCHES=2 bash benchmarks/device_check.sh   # a dry run of the script itself, anywhere
#
# Nothing is installed; melonbench is used from the checkout (PYTHONPATH), its storage under /tmp.
set -uo pipefail

device="${DEVICE:-cuda}"
batches="${BATCHES:-20}"
out="${OUT:-/tmp/device_check}"
mkdir -p "$out"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MELONBENCH_HOME=/tmp/melonbench-home

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$out/device.txt"

# Every strategy on both models (SML on BPR only), 20 timed batches after 3 warm-up ones; peak GPU memory beside
# each figure. One round: the device is not shared, so interleaved rounds buy little.
timeout 420 python3 benchmarks/strategy_speed.py --device "$device" --batches "$batches" 2>&1 | tee "$out/strategy_speed_$device.txt"

# The replay loop (Default; ranking against 100 candidates and full ranking, then the update).
timeout 150 python3 benchmarks/replay_speed.py --device "$device" 2>&1 | tee "$out/replay_speed_$device.txt"
