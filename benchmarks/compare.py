"""Side-by-side and floor tables (markdown) from benchmark JSON files (a script, not a test).

    python benchmarks/compare.py benchmarks/results-cpu-3000x1500.json \
        --reference benchmarks/reference-cpu-3000x1500.json

Prints, per model, build / epoch / MG epoch / evaluation seconds of the reference and of mgrec
with the speed-up (reference / mgrec), their geometric means, and mgrec's arithmetic floor
(``floor_s``: the dense and sparse products the model's equations need, timed on the same
machine) with the ratio epoch / floor and the product that dominates the floor.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in json.loads(path.read_text())}


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
    parser.add_argument("ours", type=Path)
    parser.add_argument("--reference", type=Path)
    args = parser.parse_args()
    ours = load(args.ours)
    if args.reference is not None:
        print(side_by_side(ours, load(args.reference)), end="\n\n")
    print(floor_table(ours))


if __name__ == "__main__":
    main()
