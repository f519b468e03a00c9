"""Sweep throughput: one grid, trained by the local executor and by Ray (a script, not a test).

    python benchmarks/sweep.py                                   # CPU: local, Ray x1, Ray x2
    python benchmarks/sweep.py --device cuda --packing 1,2,4,8   # GPU: trials per GPU

Each mode trains the same grid (default: FREEDOM on the embedded dataset, 12 combinations:
4 reg_weight x 3 alpha2 values, 12 epochs each) into its own fresh results folder, with
``deterministic: true`` so every mode must produce the same rows (checked), and prints the wall
time, combinations per hour and the speed-up over the local executor. On the CPU, Ray xN runs N
trials at once with ``cpus_per_trial`` = cores / N and one torch thread per CPU; on a GPU,
``gpus_per_trial`` = 1 / N packs N trials per device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grid_args(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        "--model", args.model, "--dataset", args.dataset, f"--epochs={args.epochs}",
        "--stopping_step=1000", f"--reg_weight={args.reg_weight}", f"--alpha2={args.alpha2}",
        "--deterministic=True", f"--use_gpu={args.device == 'cuda'}",
        f"--results_dir={out / 'results'}", f"--checkpoint_dir={out / 'checkpoints'}",
        f"--cache_dir={out / 'cache'}", *args.extra,
    ]  # fmt: skip


def run_mode(name: str, command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one ``mgrec`` command (run in its own process)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "src" / "main.py"), *command], env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return seconds


def rows(out: Path) -> dict[str, dict]:
    found = {}
    for path in out.glob("results/*/*/results.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            found[row["key"]] = {k: row[k] for k in ("best_epoch", "valid", "test")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="FREEDOM")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--reg_weight", default="[0.0,0.00001,0.0001,0.001]")
    parser.add_argument("--alpha2", default="[0.1,0.2,0.3]")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--packing", default="1,2", help="trials at once per machine (CPU) or per GPU (cuda)"
    )
    parser.add_argument("--output", help="JSON file for the figures")
    parser.add_argument("extra", nargs="*", help="more --key=value overrides for every mode")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)
    figures = []
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        local_dir = base / "local"
        threads = cores if args.device == "cpu" else 1
        local_s = run_mode("local", [*grid_args(args, local_dir), f"--threads={threads}"], env)
        reference = rows(local_dir)
        n = len(reference)
        figures.append({"mode": "local", "seconds": local_s, "combos": n})
        for packing in [int(p) for p in args.packing.split(",")]:
            out = base / f"ray{packing}"
            if args.device == "cpu":
                cpus = max(1, cores // packing)
                extra = [f"--cpus_per_trial={cpus}", f"--threads={cpus}", "--gpus_per_trial=0"]
            else:
                extra = ["--cpus_per_trial=1", f"--gpus_per_trial={1 / packing}"]
            seconds = run_mode(
                f"ray x{packing}", [*grid_args(args, out), "--executor=ray", *extra], env
            )
            same = rows(out) == reference
            figures.append(
                {"mode": f"ray x{packing}", "seconds": seconds, "combos": n, "same_rows": same}
            )
    machine = f"{platform.processor() or platform.machine()}, {cores} cores"
    print(
        f"{args.model} on {args.dataset}: {figures[0]['combos']} combinations x {args.epochs} epochs; {machine}"
    )
    print(f"{'mode':10} {'seconds':>8} {'combos/hour':>12} {'speed-up':>9} {'same rows':>10}")
    for figure in figures:
        per_hour = 3600 * figure["combos"] / figure["seconds"]
        speedup = figures[0]["seconds"] / figure["seconds"]
        figure.update(per_hour=per_hour, speedup=speedup)
        print(
            f"{figure['mode']:10} {figure['seconds']:8.1f} {per_hour:12.0f} {speedup:8.2f}x {str(figure.get('same_rows', '-')):>10}"
        )
    if args.output:
        Path(args.output).write_text(
            json.dumps({"machine": machine, "figures": figures}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
