#!/usr/bin/env bash
# The `mgrec table` example of docs/outputs.md: each model of the paper's tables (the registry's
# list) trained on the embedded (SYNTHETIC) dataset with a two-point grid, with Mirror Gradient
# (x 3 alpha2 values) and without, then the paper's table from those runs. Results go to
# results/table-example/ (or the folder given).
#   bash scripts/table_example.sh [RESULTS_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
py="$root/.venv/bin/python"
out="${1:-$root/results/table-example}"
# The example's grids (settings that learn on this small dataset); a model without one here
# runs its YAML's first values, with two values of its first grid key.
declare -A grid=(
    [VBPR]="--reg_weight=[0.1,0.001]"
    [MMGCN]="--reg_weight=0.0001 --learning_rate=[0.01,0.001]"
    [GRCN]="--reg_weight=0.001 --learning_rate=[0.01,0.001]"
    [DualGNN]="--reg_weight=0.001 --learning_rate=[0.01,0.001]"
    [SLMRec]="--learning_rate=0.001 --ssl_temp=0.2 --reg=0.001 --ssl_alpha=[0.05,0.1]"
    [BM3]="--n_layers=1 --reg_weight=0.1 --dropout=[0.3,0.5]"
    [FREEDOM]="--dropout=0.8 --reg_weight=[0.0,0.0001]"
    [DRAGON]="--reg_weight=0.001 --learning_rate=[0.01,0.001]"
    [LayerGCN]="--dropout=0.1 --reg_weight=[0.001,0.0001]"
)
first_values() {  # a model's YAML grid: two values of its first key, one of the others
    PYTHONPATH="$root/src" "$py" -c '
import json, sys
from mgrec.config import MG_KEYS, load_config
config, varied = load_config(sys.argv[1], "synthetic", mg=False), False
for key in [k for k in config["hyper_parameters"] if k != "seed" and k not in MG_KEYS]:
    values = config[key] if isinstance(config[key], list) else [config[key]]
    chosen = values[:1] if varied else values[:2]
    varied = varied or len(chosen) > 1
    print(f"--{key}={json.dumps(chosen if len(chosen) > 1 else chosen[0], separators=(",", ":"))}")
' "$1" | tr '\n' ' '
}
for model in $(PYTHONPATH="$root/src" "$py" -c 'from mgrec.models import registry; print(*registry.paper_models())'); do
    settings="${grid[$model]:-$(first_values "$model")}"
    for arm in "" "--not_mg"; do
        # shellcheck disable=SC2086
        "$py" "$root/src/main.py" --model "$model" $settings $arm --results_dir="$out" > /dev/null
    done
done
"$py" "$root/src/main.py" table --dataset synthetic --results_dir="$out"
