#!/usr/bin/env bash
# The example comparison study (issue 21, part 5): VBPR, LayerGCN and FREEDOM, each trained
# plain, with Mirror Gradient and with SAM, over 5 seeds on the embedded (SYNTHETIC) dataset,
# with robustness under feature shift and flatness for every arm. One command (below); its
# report, table and figures are then copied into docs/example-compare/ with RUN.md, which
# records the command, the machine and the wall time.
#   bash scripts/example_compare.sh [RESULTS_DIR]     (default results/example-compare)
#
# Not quick: per seed, each model's grid (reg_weight in {0.001, 0.0001} times the model's own
# keys: VBPR 2 points, LayerGCN 6, FREEDOM 4) x 3 for every arm (MG's 3 alpha2 values, SAM's 3
# rho values, plain's 3 replicas under the equal budget): 108 trials per seed, 540 in all, then
# robustness and flatness of 45 winners. Run it on a quiet machine; a re-run resumes (finished
# trials are skipped).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
py="$root/.venv/bin/python"
out="${1:-$root/results/example-compare}"
docs="$root/docs/example-compare"
flatness="{draws: 2, batches: 2, rhos: [0.02, 0.05], sharpness_draws: 4, worst_steps: 5, alphas: [-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5], lanczos_iterations: 10, top_k: 1, probes: 5, max_epochs: 20}"
args=(
    --study compare --models VBPR,LayerGCN,FREEDOM --strategies plain,mg,sam --seeds 5
    "--reg_weight=[0.001,0.0001]" --robustness --flatness "--flatness_settings=$flatness"
)
mkdir -p "$out" "$docs"
start=$(date +%s)
"$py" "$root/src/main.py" "${args[@]}" --results_dir="$out" > "$out/example-compare.log"
seconds=$(( $(date +%s) - start ))
study="$(ls -td "$out"/synthetic/study-compare-* | head -n 1)"
cp "$study"/report.md "$study"/report.json "$study"/table.md "$study"/table.csv \
    "$study"/robustness.json "$study"/flatness.json "$study"/*.png "$docs"/
quoted="$(printf ' %q' "${args[@]}")"
cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
torch_version="$("$py" -c 'import torch; print(torch.__version__)')"
cat > "$docs/RUN.md" <<EOF
# How this example was made

    python src/main.py${quoted}

(\`bash scripts/example_compare.sh\`; study folder \`$(basename "$study")\`), on $(date +%Y-%m-%d),
$(nproc) CPU core(s) (${cpu:-unknown CPU}), torch ${torch_version}: ${seconds} s wall time in all
($(( seconds / 60 )) min $(( seconds % 60 )) s; the report's Cost section splits it by phase).
EOF
echo "example study: $study -> $docs (${seconds} s)"
