"""How long the command line takes to answer a mistake (a script, not a timed test).

    python scripts/answer_time.py [--repeats 5]

Runs ``python src/main.py`` with typical mistakes and prints the median wall time of each, and
whether torch was imported before the answer (it should not be: arguments and inputs are
checked first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISTAKES = {
    "a typo'd model name": ["--model", "DRAGN"],
    "an unknown option": ["--model", "VBPR", "--learning_rat=0.1"],
    "a bad shared value": ["--model", "VBPR", "--learning_rate=-1"],
    "a bad model value": ["--model", "VBPR", "--reg_weight=-1"],
    "a missing dataset": ["--model", "VBPR", "--dataset", "nope"],
    "--seeds without --study": ["--model", "VBPR", "--seeds=3"],
}
PROBE = "import sys, runpy; sys.argv = ['main.py', *sys.argv[1:]]; "
PROBE += "code = 0\ntry:\n    runpy.run_path('src/main.py', run_name='__main__')\n"
PROBE += "except SystemExit as e:\n    code = e.code\n"
PROBE += (
    "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print(f"python {sys.version.split()[0]}; median of {args.repeats} runs each")
    print("| mistake | answer (first line) | seconds | torch |")
    print("|---|---|---|---|")
    for label, argv in MISTAKES.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=env,
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            times.append(time.perf_counter() - start)
        lines = done.stderr.strip().splitlines()
        answer = lines[0][:70] if lines else "(nothing)"
        print(f"| {label} | `{answer}` | {statistics.median(times):.2f} | {lines[-1]} |")


if __name__ == "__main__":
    main()
