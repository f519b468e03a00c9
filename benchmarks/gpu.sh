#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one run (a CUDA machine; about 10-15 minutes on
# an H100/H200). No GPU has run it yet: see benchmarks/RESULTS.md, "GPU".
#
#   TORCH_SPEC="torch==2.14.1" bash benchmarks/gpu.sh      # a CUDA build of torch for .venv
#
# It writes benchmarks/results-gpu-*.json and prints everything to record in RESULTS.md:
#   1. benchmarks/run.py on the sports-shaped workload, every model: build, epoch (plain/MG),
#      evaluation, peak GPU memory, the arithmetic floor, and host-device syncs per epoch;
#   2. Elec's shape (192,403 x 63,001, 4 timed batches): peak GPU and host memory per model;
#   3. the default run (DRAGON's MG grid) and one --not_mg run end to end on CUDA;
#   4. the sweep: 1, 2, 4 and 8 trials per GPU with the Ray executor.
# The reference's side-by-side needs its own venv (torch_geometric) and harness in a scratch
# folder outside this repository, measured in the same sitting (RESULTS.md: "How the reference
# was measured").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
py=.venv/bin/python
$py -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
$py benchmarks/run.py --device cuda --sync_debug --output benchmarks/results-gpu-sports.json
$py benchmarks/run.py --device cuda --users 192403 --items 63001 --batches 4 --repeats 1 \
    --phases train,eval --output benchmarks/results-gpu-elec.json
scratch=$(mktemp -d)
$py src/main.py --model DRAGON --use_gpu=True --results_dir="$scratch/r" --checkpoint_dir="$scratch/c" \
    --cache_dir="$scratch/cache" | tail -n 20
$py src/main.py --model DRAGON --not_mg --use_gpu=True --reg_weight=0.01 --learning_rate=0.001 \
    --results_dir="$scratch/r" --checkpoint_dir="$scratch/c" --cache_dir="$scratch/cache" | tail -n 12
$py benchmarks/sweep.py --device cuda --packing 1,2,4,8 --output benchmarks/results-gpu-sweep.json
