"""The run index: every run folder's ``run.json``, ``results/index.csv``, and the studies.

A run folder holds one model, arm (MG or not) and dataset under one set of non-grid settings;
its ``results.jsonl`` gathers every combination ever finished there, from every command that
used those settings (a grid that grows, a study's seeds). ``run.json`` says what it holds: the
results and the distinct seeds among them, the last command's grid (finished / total), the test
masking rule and the validation winner of that grid. ``results/index.csv`` lists them all and is
rebuilt from those files after every run, so it is never out of step with the folders.

A study is a first-class thing: its folder (``study-...``) holds ``study.json`` (kind, model, or
models and strategies for a comparison study, dataset, seeds, budget, and the run folders of
each arm), written when it starts, and its report when it ends. ``mgrec runs`` lists the
studies and marks the run folders they use.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrec import atomic
from mgrec.config import STRATEGY_LABELS, strategy_name

INDEX_COLUMNS = (
    "updated", "model", "dataset", "mg", "results", "seeds", "finished", "total", "test_mask",
    "winner", "test_recall@5", "test_ndcg@5", "studies", "folder",
)  # fmt: skip
STUDY_FILE = "study.json"
RESULTS = "results.jsonl"


def finished_rows(folder: Path) -> list[dict[str, Any]]:
    """Every finished combination recorded in a run folder (the last line of a key wins)."""
    path = folder / RESULTS
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line (a killed writer)
        if isinstance(row, dict) and "key" in row:
            rows[row["key"]] = row
    return list(rows.values())


def seeds_of(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """The distinct seeds of ``rows``, in order."""
    return sorted({int(r["params"]["seed"]) for r in rows if "seed" in r.get("params", {})})


def run_record(
    config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], winner: Mapping[str, Any] | None,
    total: int, folder: Path,
) -> dict[str, Any]:  # fmt: skip
    """The ``run.json`` of a run folder: ``results`` (the grid just run) and its ``winner``,
    and everything the folder holds."""
    held = finished_rows(folder)
    return {
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": config["model"],
        "dataset": config["dataset"],
        "mg": bool(config["mg"]),
        "strategy": strategy_name(config),
        "results": len(held),
        "seeds": len(seeds_of(held)),
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # being written right now, or damaged: left out
    return value if isinstance(value, dict) else None


def studies(results_root: Path) -> list[dict[str, Any]]:
    """Every study under ``results_root`` (``<dataset>/<study>/study.json``), newest first, each
    with its ``folder`` and whether its report is written (``reported``)."""
    found = []
    for path in sorted(results_root.glob(f"*/*/{STUDY_FILE}")):
        study = _read_json(path)
        if study is not None:
            study["folder"] = str(path.parent)
            study["name"] = path.parent.name
            study["reported"] = (path.parent / "report.json").is_file()
            found.append(study)
    return sorted(found, key=lambda s: s.get("created", ""), reverse=True)


def study_of_runs(results_root: Path) -> dict[str, list[str]]:
    """Run folder -> the names of the studies that use it."""
    used: dict[str, list[str]] = {}
    for study in studies(results_root):
        for folder in {f for folders in study.get("arms", {}).values() for f in folders}:
            used.setdefault(str(folder), []).append(study["name"])
    return used


def runs(results_root: Path) -> list[dict[str, Any]]:
    """Every run's record under ``results_root`` (``<dataset>/<run>/run.json``), newest first,
    with the studies that use it."""
    used = study_of_runs(results_root)
    found = []
    for path in sorted(results_root.glob("*/*/run.json")):
        record = _read_json(path)
        if record is not None:
            record.setdefault("results", record.get("finished"))
            record["studies"] = ", ".join(used.get(record["folder"], []))
            found.append(record)
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


def _score(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def runs_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The index as a readable markdown table: per run folder, what it holds (results and
    seeds), the last grid (finished / total) and its winner, and the studies that use it."""
    lines = [
        "| updated | model | dataset | MG | results (seeds) | last grid | test mask | winner | "
        "test REC@5 | test NDCG@5 | in study | folder |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['updated']} | {r['model']} | {r['dataset']} | {STRATEGY_LABELS.get(str(r.get('strategy')), 'MG' if r['mg'] else 'no MG')} | "
            f"{r.get('results', '-')} ({r.get('seeds', '-')}) | {r['finished']}/{r['total']} | "
            f"{r['test_mask']} | {r['winner'] or '-'} | {_score(r, 'test_recall@5')} | "
            f"{_score(r, 'test_ndcg@5')} | {r.get('studies') or '-'} | {r['folder']} |"
        )
    return "\n".join(lines)


def studies_table(found: Sequence[Mapping[str, Any]]) -> str:
    """The studies as a markdown table."""
    lines = [
        "| created | study | model | dataset | arms | seeds | budget | report | folder |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in found:
        seeds = s.get("seeds", [])
        # an MG study has one model and the arms mg, plain; a comparison study lists its
        # models and strategies (its arms are every model with every strategy)
        model = s.get("model") or ", ".join(s.get("models", []))
        arms = ", ".join(s.get("strategies") or s.get("arms", {}))
        lines.append(
            f"| {s.get('created', '-')} | {s['name']} | {model} | {s.get('dataset')} | "
            f"{arms} | {len(seeds)} | {s.get('budget', '-')} | "
            f"{'written' if s['reported'] else 'not yet'} | {s['folder']} |"
        )
    return "\n".join(lines)
