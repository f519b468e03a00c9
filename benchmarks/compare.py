"""Side-by-side and floor tables (markdown) from benchmark JSON files (a script, not a test).

    python benchmarks/compare.py benchmarks/results-cpu-3000x1500.json \
        --reference benchmarks/reference-cpu-3000x1500.json

Several files on either side are rounds of the same benchmark (e.g. one per model and round,
the rounds interleaved with the reference's): each timing is the median over the rounds that
have it (the per-round figures kept under ``rounds``), every other key comes from the first
file naming the model, and ``--merged`` / ``--merged_reference`` write the merged rows.

Prints, per model, build / epoch / MG epoch / evaluation seconds of the reference and of mgrec
with the speed-up (reference / mgrec), their geometric means, and mgrec's arithmetic floor
(``floor_s``: the dense and sparse products the model's equations need, timed on the same
machine) with the ratio epoch / floor and the product that dominates the floor.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

TIMED = ("build_s", "epoch_s", "epoch_mg_s", "eval_s")
RATIOS = (("ratio", "epoch_s", "floor_s"), ("ratio_mg", "epoch_mg_s", "floor_mg_s"))


def load(*paths: Path) -> dict[str, dict[str, Any]]:
    """Rows by model, in first-seen order; over several files, the median of each timing."""
    rounds: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        rows = json.loads(path.read_text())
        for row in [rows] if isinstance(rows, dict) else rows:  # a worker's file: one row
            rounds.setdefault(row["model"], []).append(row)
    merged = {}
    for model, rows in rounds.items():
        row = dict(rows[0])
        if len(rows) > 1:
            row["rounds"] = {
                key: [r[key] for r in rows if key in r] for key in TIMED if key in rows[0]
            }
            row.update({key: statistics.median(values) for key, values in row["rounds"].items()})
            for key, measured, floor_key in RATIOS:
                if row.get(floor_key) and measured in row:
                    row[key] = row[measured] / row[floor_key]
        merged[model] = row
    return merged


def cell(ref: float | None, ours: float | None) -> str:
    if ref is None or ours is None:
        return "-"
    return f"{ref:.3f} / {ours:.3f} ({ref / ours:.1f}x)"


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def side_by_side(ours: dict[str, dict[str, Any]], ref: dict[str, dict[str, Any]]) -> str:
    keys = ("build_s", "epoch_s", "epoch_mg_s", "eval_s")
    lines = [
        "| model | build s (ref / ours) | epoch s (ref / ours) | MG epoch s (ref / ours) "
        "| eval s (ref / ours) |",
        "|---|---|---|---|---|",
    ]
    speedups: dict[str, list[float]] = {k: [] for k in keys}
    for model, row in ours.items():
        other = ref.get(model, {})
        cells = []
        for key in keys:
            a, b = other.get(key), row.get(key)
            cells.append(cell(a, b))
            if a and b:
                speedups[key].append(a / b)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    means = ", ".join(f"{k} {geomean(v):.1f}x" for k, v in speedups.items())
    return "\n".join(lines) + f"\n\nGeometric means of the speed-ups: {means}."


def floor_table(ours: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | floor GFLOP (epoch / MG) | floor s (epoch / MG) | epoch s (plain / MG) "
        "| epoch / floor (plain / MG) | largest product of the floor |",
        "|---|---|---|---|---|---|",
    ]
    for model, row in ours.items():
        floor = row.get("floor")
        if not floor:
            continue
        products = floor["epoch"]["products"]
        top = max(products, key=lambda p: p["seconds"])
        share = top["seconds"] / floor["epoch"]["seconds"]
        dims = "x".join(str(d) for d in top["dims"])
        lines.append(
            f"| {model} | {floor['epoch']['gflop']:.1f} / {floor['epoch_mg']['gflop']:.1f} "
            f"| {row['floor_s']:.3f} / {row['floor_mg_s']:.3f} "
            f"| {row['epoch_s']:.3f} / {row['epoch_mg_s']:.3f} "
            f"| {row['ratio']:.1f} / {row['ratio_mg']:.1f} "
            f"| {top['label']} ({top['kind']} {dims}, {top['role']}): {share:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", type=Path, nargs="+")
    parser.add_argument("--reference", type=Path, nargs="+")
    parser.add_argument("--merged", type=Path, help="write mgrec's merged rows here (JSON)")
    parser.add_argument("--merged_reference", type=Path, help="the reference's merged rows")
    args = parser.parse_args()
    ours = load(*args.ours)
    reference = load(*args.reference) if args.reference else None
    for path, rows in ((args.merged, ours), (args.merged_reference, reference)):
        if path is not None and rows is not None:
            path.write_text(json.dumps(list(rows.values()), indent=2) + "\n")
    if reference is not None:
        print(side_by_side(ours, reference), end="\n\n")
    print(floor_table(ours))


if __name__ == "__main__":
    main()
