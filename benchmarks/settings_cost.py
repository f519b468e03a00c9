"""What the reliability settings cost per epoch (a script that prints figures, not a test).

    python benchmarks/settings_cost.py                        # DRAGON on the embedded dataset
    python benchmarks/settings_cost.py --model FREEDOM --epochs 30 --repeats 5 --threads 2

Trains one combination of MODEL without MG for a fixed number of epochs (no early stopping) in a
fresh process per run, under three settings:

    baseline        save_every 0 (no training state), deterministic false
    save_every=1    the training state (model, optimizer, RNGs, best state) saved every epoch
    deterministic   torch's deterministic algorithms (bit-identical reruns at any thread count)

and prints, per setting, the median over ``--repeats`` runs of the wall seconds per epoch of the
whole combination (the trial's recorded ``seconds`` / epochs, so the state saves are included)
and of the training part alone (``train_seconds`` of metrics.jsonl), with the difference to the
baseline. Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXED = {  # one grid point per model: a single combination
    "DRAGON": ["--reg_weight=0.001", "--learning_rate=0.001"],
    "FREEDOM": ["--dropout=0.8", "--reg_weight=0.0"],
    "VBPR": ["--reg_weight=0.001"],
}
SETTINGS = {
    "baseline": ["--save_every=0", "--deterministic=False"],
    "save_every=1": ["--save_every=1", "--deterministic=False"],
    "deterministic": ["--save_every=0", "--deterministic=True"],
}


def one_run(args: argparse.Namespace, setting: list[str], folder: Path) -> tuple[float, float]:
    """(wall seconds per epoch, train seconds per epoch) of one fresh combination."""
    command = [
        sys.executable, str(ROOT / "src" / "main.py"), "--model", args.model, "--not_mg",
        *FIXED[args.model], f"--epochs={args.epochs}", f"--stopping_step={args.epochs}",
        f"--threads={args.threads}", f"--results_dir={folder / 'results'}",
        f"--checkpoint_dir={folder / 'checkpoints'}", *setting,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
    (results,) = (folder / "results").rglob("results.jsonl")
    row = json.loads(results.read_text().splitlines()[0])
    (metrics,) = (folder / "results").rglob("metrics.jsonl")
    train = [json.loads(line)["train_seconds"] for line in metrics.read_text().splitlines()]
    return row["seconds"] / row["epochs"], statistics.fmean(train)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(FIXED), default="DRAGON")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    figures: dict[str, tuple[float, float]] = {}
    for name, setting in SETTINGS.items():
        walls, trains = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                wall, train = one_run(args, setting, Path(tmp))
            walls.append(wall)
            trains.append(train)
        figures[name] = (statistics.median(walls), statistics.median(trains))
    base_wall, base_train = figures["baseline"]
    print(
        f"{args.model} on synthetic, {args.epochs} epochs, {args.threads} threads, "
        f"median of {args.repeats} runs"
    )
    print(
        f"{'setting':15} {'wall s/epoch':>13} {'vs baseline':>12} {'train s/epoch':>14} {'vs':>8}"
    )
    for name, (wall, train) in figures.items():
        print(
            f"{name:15} {wall:13.4f} {1000 * (wall - base_wall):+10.1f}ms "
            f"{train:14.4f} {100 * (train / base_train - 1):+7.1f}%"
        )


if __name__ == "__main__":
    main()
