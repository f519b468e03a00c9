"""A fault drill (a script, not a test): kill a training run with SIGKILL at random moments, again
and again, and check that the finished grid equals an uninterrupted run of the same command.

    python scripts/fault_drill.py [--kills 20] [--model FREEDOM] [--epochs 40] [--seed 0]

Each round starts the command, waits a random time, kills it (kill -9: no clean-up runs), and
starts it again, until it finishes; every combination's results row must then equal the
uninterrupted run's (best epoch, epochs, validation and test metrics), no row may be recorded
twice and no metrics file may repeat or skip an epoch. Prints the faults tried, survived and lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("best_epoch", "epochs", "stopped", "valid", "test")


def command(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "src" / "main.py"), "--model", args.model, "--dataset", "tiny",
        f"--data_path={out.parent / 'data'}", f"--epochs={args.epochs}", "--stopping_step=1000",
        "--reg_weight=[0.001,0.0001]", "--alpha2=[0.1,0.2]", "--dropout=0.5", "--knn_k=5",
        "--threads=1", "--use_gpu=False", f"--results_dir={out / 'r'}",
        f"--checkpoint_dir={out / 'c'}", f"--cache_dir={out / 'cache'}",
    ]  # fmt: skip


def rows(out: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in out.glob("r/tiny/*/results.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["key"] in found:
                raise SystemExit(f"LOST: {row['key']} recorded twice")
            found[row["key"]] = {k: row[k] for k in COMPARED}
            epochs = [
                json.loads(x)["epoch"] for x in (Path(row["folder"]) / "metrics.jsonl").open()
            ]
            if epochs != list(range(row["epochs"])):
                raise SystemExit(f"LOST: {row['folder']} metrics epochs {epochs}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--model", default="FREEDOM")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_dataset

    chance = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        tiny_dataset(base / "data")
        clean = base / "clean"
        start = time.perf_counter()
        subprocess.run(command(args, clean), env=env, check=True, capture_output=True)
        one_run = time.perf_counter() - start
        expected = rows(clean)
        drilled = base / "drilled"
        kills = 0
        while True:
            process = subprocess.Popen(
                command(args, drilled), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if kills < args.kills:
                # Kill within the first few seconds after start-up (~3 s): each resumed run has
                # less left to do, so a late kill would often find it finished.
                time.sleep(chance.uniform(2.5, 4.5))
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    kills += 1
                    continue
            _, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(
                    f"LOST: the run failed after {kills} kills:\n{err.decode()[-2000:]}"
                )
            break
        got = rows(drilled)
        lost = [k for k in expected if got.get(k) != expected[k]]
        print(
            f"{args.model}, {len(expected)} combinations x {args.epochs} epochs (one run {one_run:.1f} s)"
        )
        print(f"faults tried: {kills} kill -9; survived: {kills if not lost else 0}; "
              f"combinations differing from the uninterrupted run: {len(lost)} of {len(expected)}")  # fmt: skip
        if lost:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
