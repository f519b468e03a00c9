#!/usr/bin/env bash
# Create .venv with everything mgrec needs (once; again when pyproject.toml changes).
# Sourced by run.sh and test.sh. TORCH_SPEC picks the torch build (default torch==2.13.0;
# e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" for a CPU-only wheel).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="$root/.venv"
stamp="$venv/.mgrec-installed"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "mgrec: setting up $venv (first run only)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install --quiet ${TORCH_SPEC:-torch==2.13.0}
    fi
    # The optional extras the tests use are installed too (TensorBoard, Ray, the text encoder,
    # SAM).
    "$venv/bin/python" -m pip install --quiet -e "$root[dev,tensorboard,ray,prepare,sam]"
    touch "$stamp"
fi
