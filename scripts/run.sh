#!/usr/bin/env bash
# Set up (first run only), then train: arguments go to src/main.py (default: DRAGON's grid with
# Mirror Gradient on the embedded synthetic dataset). No need to activate .venv first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
exec "$root/.venv/bin/python" "$root/src/main.py" "$@"
