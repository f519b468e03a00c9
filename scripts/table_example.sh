#!/usr/bin/env bash
# The README's `mgrec table` example: each of the nine models trained on the embedded (SYNTHETIC)
# dataset with a two-point grid, with Mirror Gradient (x 3 alpha2 values) and without, then the
# paper's table from those runs. Results go to results/table-example/ (or the folder given).
#   bash scripts/table_example.sh [RESULTS_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
py="$root/.venv/bin/python"
out="${1:-$root/results/table-example}"
grids=(
    "VBPR --reg_weight=[0.1,0.001]"
    "MMGCN --reg_weight=0.0001 --learning_rate=[0.01,0.001]"
    "GRCN --reg_weight=0.001 --learning_rate=[0.01,0.001]"
    "DualGNN --reg_weight=0.001 --learning_rate=[0.01,0.001]"
    "SLMRec --learning_rate=0.001 --ssl_temp=0.2 --reg=0.001 --ssl_alpha=[0.05,0.1]"
    "BM3 --n_layers=1 --reg_weight=0.1 --dropout=[0.3,0.5]"
    "FREEDOM --dropout=0.8 --reg_weight=[0.0,0.0001]"
    "DRAGON --reg_weight=0.001 --learning_rate=[0.01,0.001]"
    "LayerGCN --dropout=0.1 --reg_weight=[0.001,0.0001]"
)
for grid in "${grids[@]}"; do
    for arm in "" "--not_mg"; do
        # shellcheck disable=SC2086
        "$py" "$root/src/main.py" --model $grid $arm --results_dir="$out" > /dev/null
    done
done
"$py" "$root/src/main.py" table --dataset synthetic --results_dir="$out"
