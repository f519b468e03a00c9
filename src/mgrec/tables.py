"""What finished runs add up to: the run index (``mgrec runs``) and the paper's table
(``mgrec table``).

Every run folder holds a ``run.json`` written with its summary (model, dataset, MG, the grid's
size, how many combinations are finished, the validation winner's test metrics, the test masking
rule, when). ``results/index.csv`` lists them all and is rebuilt from those files after every run,
so it is never out of step with the folders.

``mgrec table --dataset D`` lays out the paper's README table: one row per model and per MG/no-MG
arm, REC/PREC/MAP/NDCG@5 of the arm's validation winner over every finished combination of that
model and arm on D (all runs pooled, one masking rule at a time), the published values beside it
where the paper has them, and the difference.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrec import atomic
from mgrec.errors import UserError
from mgrec.paths import project_path, user_path
from mgrec.report import MASK_RULES, SYNTHETIC_NOTE, pick_winner

PAPER_METRICS = ("recall@5", "precision@5", "map@5", "ndcg@5")
PAPER_LABELS = ("REC@5", "PREC@5", "MAP@5", "NDCG@5")
MODEL_ORDER = ("VBPR", "MMGCN", "GRCN", "DualGNN", "SLMRec", "BM3", "FREEDOM", "DRAGON", "LayerGCN")
# The tables of the Mirror-Gradient README (github.com/Qrange-group/Mirror-Gradient, commit
# 70739786): REC, PREC, MAP, NDCG at 5, each model without and with MG. Values as published;
# the paper's protocol selects its winners on the test split.
PUBLISHED_SOURCE = "the Mirror-Gradient README (Qrange-group/Mirror-Gradient, commit 7073978)"
PUBLISHED: dict[str, dict[tuple[str, bool], tuple[float, float, float, float]]] = {
    "sports": {
        ("VBPR", False): (0.0353, 0.0079, 0.0189, 0.0235),
        ("VBPR", True): (0.0375, 0.0084, 0.0203, 0.0251),
        ("MMGCN", False): (0.0216, 0.0049, 0.0114, 0.0143),
        ("MMGCN", True): (0.0241, 0.0054, 0.0126, 0.0158),
        ("GRCN", False): (0.0360, 0.0080, 0.0196, 0.0241),
        ("GRCN", True): (0.0383, 0.0086, 0.0207, 0.0256),
        ("DualGNN", False): (0.0374, 0.0084, 0.0206, 0.0253),
        ("DualGNN", True): (0.0387, 0.0086, 0.0212, 0.0261),
        ("SLMRec", False): (0.0429, 0.0095, 0.0233, 0.0288),
        ("SLMRec", True): (0.0449, 0.0099, 0.0242, 0.0299),
        ("BM3", False): (0.0353, 0.0078, 0.0194, 0.0238),
        ("BM3", True): (0.0386, 0.0086, 0.0210, 0.0259),
        ("FREEDOM", False): (0.0446, 0.0098, 0.0232, 0.0291),
        ("FREEDOM", True): (0.0466, 0.0102, 0.0242, 0.0303),
        ("DRAGON", False): (0.0449, 0.0098, 0.0239, 0.0296),
        ("DRAGON", True): (0.0465, 0.0102, 0.0248, 0.0307),
    },
    "elec": {
        ("VBPR", False): (0.0182, 0.0042, 0.0098, 0.0122),
        ("VBPR", True): (0.0203, 0.0046, 0.0110, 0.0136),
        ("MMGCN", False): (0.0140, 0.0033, 0.0075, 0.0094),
        ("MMGCN", True): (0.0157, 0.0036, 0.0084, 0.0106),
        ("GRCN", False): (0.0226, 0.0051, 0.0126, 0.0155),
        ("GRCN", True): (0.0250, 0.0057, 0.0139, 0.0171),
        ("DualGNN", False): (0.0238, 0.0054, 0.0132, 0.0162),
        ("DualGNN", True): (0.0249, 0.0056, 0.0139, 0.0170),
        ("BM3", False): (0.0280, 0.0062, 0.0157, 0.0192),
        ("BM3", True): (0.0285, 0.0063, 0.0159, 0.0195),
        ("FREEDOM", False): (0.0252, 0.0056, 0.0139, 0.0171),
        ("FREEDOM", True): (0.0260, 0.0058, 0.0144, 0.0176),
    },
}
INDEX_COLUMNS = (
    "updated", "model", "dataset", "mg", "finished", "total", "test_mask", "winner",
    "test_recall@5", "test_ndcg@5", "folder",
)  # fmt: skip


def run_record(
    config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], winner: Mapping[str, Any] | None,
    total: int, folder: Path,
) -> dict[str, Any]:  # fmt: skip
    """The ``run.json`` of a run folder: what the index lists."""
    return {
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": config["model"],
        "dataset": config["dataset"],
        "mg": bool(config["mg"]),
        "finished": len(results),
        "total": total,
        "test_mask": "train+valid" if config.get("test_mask_valid") else "train",
        "winner": None if winner is None else f"combo-{winner['index']:03d}",
        "test_recall@5": None if winner is None else winner["test"].get("recall@5"),
        "test_ndcg@5": None if winner is None else winner["test"].get("ndcg@5"),
        "folder": str(folder),
    }


def record_run(record: Mapping[str, Any], results_root: Path) -> None:
    """Write the run's ``run.json`` and rebuild ``<results_root>/index.csv``."""
    atomic.write_text(
        Path(record["folder"]) / "run.json", json.dumps(dict(record), indent=2) + "\n"
    )
    write_index(results_root)


def runs(results_root: Path) -> list[dict[str, Any]]:
    """Every run's record under ``results_root`` (``<dataset>/<run>/run.json``), newest first."""
    found = []
    for path in sorted(results_root.glob("*/*/run.json")):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a run being written right now, or a damaged file: left out
    return sorted(found, key=lambda r: r.get("updated", ""), reverse=True)


def write_index(results_root: Path) -> Path:
    """Rebuild ``index.csv``: one line per run, newest first."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in runs(results_root):
        writer.writerow(record)
    path = results_root / "index.csv"
    atomic.write_text(path, buffer.getvalue())
    return path


def runs_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The index as a readable markdown table."""
    lines = [
        "| updated | model | dataset | MG | finished | test mask | winner | test REC@5 | test NDCG@5 | folder |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        score = [
            f"{r[k]:.4f}" if isinstance(r.get(k), (int, float)) else "-"
            for k in ("test_recall@5", "test_ndcg@5")
        ]
        lines.append(
            f"| {r['updated']} | {r['model']} | {r['dataset']} | {'MG' if r['mg'] else 'no MG'} | "
            f"{r['finished']}/{r['total']} | {r['test_mask']} | {r['winner'] or '-'} | "
            f"{score[0]} | {score[1]} | {r['folder']} |"
        )
    return "\n".join(lines)


def _finished(folder: Path) -> list[dict[str, Any]]:
    path = folder / "results.jsonl"
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row["key"]] = row
    return list(rows.values())


def paper_table(
    results_root: Path, dataset: str, models: Sequence[str] = MODEL_ORDER, select: str = "valid",
    test_mask: str = "train",
) -> tuple[str, list[dict[str, Any]]]:  # fmt: skip
    """The paper's table for ``dataset`` from the finished runs under ``results_root``.

    Per model and arm, the winner over every finished combination (of every run of that model and
    arm with the ``test_mask`` rule) by ``select`` ("valid": the sound protocol; "test": the
    reference's, labelled). Returns the markdown and the rows (for CSV).
    """
    if select not in ("valid", "test"):
        raise UserError(f"--select must be 'valid' or 'test', got {select!r}")
    published = PUBLISHED.get(dataset.lower(), {})
    pooled: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for record in runs(results_root):
        if record["dataset"] != dataset or record.get("test_mask", "train") != test_mask:
            continue
        pooled.setdefault((record["model"], record["mg"]), []).extend(
            _finished(Path(record["folder"]))
        )
    rows = []
    for model in models:
        for mg in (False, True):
            candidates = [r for r in pooled.get((model, mg), []) if r.get("valid")]
            winner = pick_winner(candidates, select, "recall@5") if candidates else None
            row: dict[str, Any] = {
                "model": model, "mg": mg, "selected_by": select, "test_mask": test_mask,
                "candidates": len(candidates),
                "folder": None if winner is None else winner["folder"],
            }  # fmt: skip
            for metric in PAPER_METRICS:
                row[metric] = None if winner is None else winner["test"].get(metric)
            paper = published.get((model, mg))
            for metric, value in zip(PAPER_METRICS, paper or (None,) * 4, strict=True):
                row[f"published {metric}"] = value
                ours = row[metric]
                row[f"difference {metric}"] = (
                    None if value is None or ours is None else ours - value
                )
            rows.append(row)
    return _markdown(rows, dataset, select, test_mask, bool(published)), rows


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _markdown(
    rows: list[dict[str, Any]], dataset: str, select: str, mask: str, has_paper: bool
) -> str:
    title = f"# {dataset}: test metrics @5 of each arm's winner "
    title += (
        "by validation" if select == "valid" else "**selected by test** (the reference's protocol)"
    )
    lines = [title, ""]
    if dataset == "synthetic":
        lines += [f"Note: {SYNTHETIC_NOTE}.", ""]
    lines += [f"Evaluation: {MASK_RULES[mask]}.", ""]
    header = ["model", *PAPER_LABELS]
    if has_paper:
        header += [f"paper {m}" for m in PAPER_LABELS] + [f"Δ {m}" for m in PAPER_LABELS]
    header += ["combinations"]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        name = row["model"] + (" + MG" if row["mg"] else "")
        if row["candidates"] == 0:
            cells = ["no finished run"] + ["-"] * (len(PAPER_METRICS) - 1)
        else:
            cells = [_cell(row[m]) for m in PAPER_METRICS]
        if has_paper:
            paper = [row[f"published {m}"] for m in PAPER_METRICS]
            cells += ["not published" if v is None else _cell(v) for v in paper]
            cells += [_cell(row[f"difference {m}"], signed=True) for m in PAPER_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['candidates']} |")
    if has_paper:
        lines += [
            "",
            f"Published values: {PUBLISHED_SOURCE}; the paper selected them on the test split.",
        ]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def run(command: str, argv: Sequence[str]) -> int:
    """``mgrec table ...`` and ``mgrec runs ...``."""
    parser = argparse.ArgumentParser(prog=f"mgrec {command}", allow_abbrev=False)
    parser.add_argument(
        "--results_dir", default="results", help="where the runs are (default results/)"
    )
    if command == "table":
        parser.description = (
            "The paper's table (REC/PREC/MAP/NDCG@5, with and without MG) from finished runs."
        )
        parser.add_argument("--dataset", "-d", required=True)
        parser.add_argument("--models", help="comma-separated (default: all nine)")
        parser.add_argument(
            "--select",
            default="valid",
            choices=["valid", "test"],
            help="winner by valid (default) or test",
        )
        parser.add_argument(
            "--test_mask_valid", action="store_true", help="runs with the RecBole masking rule"
        )
        parser.add_argument("--csv", metavar="FILE.csv", help="also write the rows as CSV")
        parser.add_argument(
            "--markdown", metavar="FILE.md", help="also write the table as markdown"
        )
    else:
        parser.description = (
            "Every run under results/, newest first (also written to results/index.csv)."
        )
    args = parser.parse_args(list(argv))
    root = user_path(args.results_dir) if args.results_dir != "results" else project_path("results")
    if not root.is_dir():
        raise UserError(
            f"{root}: no results folder (train something first, or pass --results_dir=DIR)"
        )
    if command == "runs":
        write_index(root)
        print(runs_table(runs(root)))
        return 0
    models = [m.strip() for m in args.models.split(",")] if args.models else list(MODEL_ORDER)
    unknown = [m for m in models if m not in MODEL_ORDER]
    if unknown:
        raise UserError(
            f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODEL_ORDER)}"
        )
    mask = "train+valid" if args.test_mask_valid else "train"
    text, rows = paper_table(root, args.dataset, models, args.select, mask)
    print(text)
    if args.markdown:
        atomic.write_text(user_path(args.markdown), text + "\n")
    if args.csv:
        atomic.write_text(user_path(args.csv), _csv(rows))
    return 0
