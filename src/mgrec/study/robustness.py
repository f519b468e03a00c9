"""Robustness under feature shift (our protocol; the paper's experiments were never released).

The paper motivates two risks: item text stuffed with popular tags, and images changed after
training. We model them as shifts of a trained model's item features at test time:

- **noise**: Gaussian noise on image and/or text features, sigma x each dimension's std;
- **adjust** ("information adjustment"): for a fraction p of items, the feature row is replaced
  by another random item's row.

A checkpoint is rebuilt with the shifted features (``experiment.restore`` on the shifted data)
and scored on the test split (representations recomputed from its parameters). Models that
build item graphs from features at construction (FREEDOM's and DRAGON's kNN graphs) rebuild
them from the shifted features. Models whose scores never read the features (LayerGCN; BM3 and
FREEDOM use them only in their training losses, FREEDOM also through its kNN graph) are affected
only through such graphs, if at all. sigma = 0 and p = 0 reproduce the clean evaluation exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgrec import checkpoint, experiment
from mgrec.analysis import perturb, stats
from mgrec.data.dataset import RecData
from mgrec.report import headline_metrics
from mgrec.study import report

MODALITY_SETS = ("image", "text", "both")


def shifts() -> list[dict[str, Any]]:
    """The shifts evaluated: clean, noise at every level and adjustment at every fraction, each
    on image, text and both."""
    grid = [{"kind": "clean", "level": 0.0, "modalities": "both"}]
    for kind, levels in (("noise", perturb.NOISE_LEVELS), ("adjust", perturb.ADJUST_FRACTIONS)):
        grid += [
            {"kind": kind, "level": level, "modalities": m}
            for level in levels
            for m in MODALITY_SETS
        ]
    return grid


def label(shift: Mapping[str, Any]) -> str:
    """A shift's row label: "clean", "noise sigma=0.5 (image)", "adjust p=0.3 (both)"."""
    if shift["kind"] == "clean":
        return "clean"
    symbol = "sigma" if shift["kind"] == "noise" else "p"
    return f"{shift['kind']} {symbol}={shift['level']} ({shift['modalities']})"


def reported(config: Mapping[str, Any]) -> list[str]:
    """The metrics robustness reports: the validation metric and NDCG at its cut-off."""
    return headline_metrics(config, cutoffs=1)


def shifted_data(data: RecData, shift: Mapping[str, Any], seed: int) -> RecData:
    """``data`` with its item features shifted (``seed`` draws the perturbation)."""
    image, text = perturb.shifted_features(
        data.feature("v"),
        data.feature("t"),
        shift["kind"],
        shift["level"],
        shift["modalities"],
        seed,
    )
    features = {m: f for m, f in (("v", image), ("t", text)) if f is not None}
    return dataclasses.replace(data, features=features)


def evaluate_shifts(
    checkpoint_path: str | Path, seed: int, paths: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Test metrics of one checkpoint under every shift (``seed`` draws the perturbations),
    always on the clean test split."""
    stored = checkpoint.read(Path(checkpoint_path))
    combo = experiment.checkpoint_combo(stored, paths)
    source = str(checkpoint_path)
    clean = experiment.restore(stored, combo, source)
    test = clean.experiment.evaluators["test"]
    rows = []
    for shift in shifts():
        model = clean.model
        if shift["kind"] != "clean":
            data = shifted_data(clean.experiment.data, shift, seed)
            model = experiment.restore(stored, combo, source, data=data).model
        metrics = experiment.evaluate(model, test)
        rows.append({**shift, "label": label(shift), **{m: metrics[m] for m in reported(combo)}})
    return rows


def run(
    per_seed: Sequence[Mapping[str, Any]],
    paths: Mapping[str, Any],
    arms: Sequence[str] = ("plain", "mg"),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate every seed's winners of ``arms`` (records with ``seed`` and
    ``<arm>_checkpoint``) under all shifts.

    Returns ``{"metrics", "rows", "summary", "markdown"}``; the summary gives, per shift, the
    mean over seeds of each metric and of its relative drop from clean, for every arm
    (``labels`` name them in the markdown: no-MG and MG by default).
    """
    metrics = reported(paths)
    rows = []
    total = len(arms) * len(per_seed)
    with tqdm(total=total, desc="robustness", unit="checkpoint", disable=None) as bar:
        for record in per_seed:
            for arm in arms:
                for row in evaluate_shifts(record[f"{arm}_checkpoint"], record["seed"], paths):
                    rows.append({"seed": record["seed"], "arm": arm, **row})
                bar.update(1)
    clean = {(r["seed"], r["arm"]): r for r in rows if r["kind"] == "clean"}
    for row in rows:
        base = clean[(row["seed"], row["arm"])]
        for metric in metrics:
            row[f"{metric} drop"] = (
                (base[metric] - row[metric]) / base[metric] if base[metric] else None
            )
    summary = []
    for shift in shifts():
        name = label(shift)
        entry: dict[str, Any] = {"label": name, **shift}
        for arm in arms:
            mine = [r for r in rows if r["label"] == name and r["arm"] == arm]
            for metric in metrics:
                drops = [r[f"{metric} drop"] for r in mine if r[f"{metric} drop"] is not None]
                entry[f"{arm} {metric}"] = float(np.mean([r[metric] for r in mine]))
                entry[f"{arm} {metric} drop"] = float(np.mean(drops)) if drops else None
        summary.append(entry)
    return {
        "metrics": metrics,
        "rows": rows,
        "summary": summary,
        "markdown": report.robustness_markdown(summary, metrics, arms, labels),
    }


def change_comparisons(
    result: Mapping[str, Any], arms: Sequence[str], baseline: str = "plain"
) -> dict[str, dict[str, Any]]:
    """The paired statistics of robustness: per arm of ``arms``, against ``baseline``, for
    every shift (not clean) and metric, the per-seed **change from clean** (shifted - clean
    score of the same checkpoint, in the metric's units; negative = worse) compared across
    seeds as the clean metrics are (``stats.compare_metrics``: means and stds, the paired
    difference arm - baseline with its 95 % interval, t and Wilcoxon p-values). A positive
    difference means the arm degrades less. Keys: ``"<shift label> <metric>"``.

    The p-values are corrected over these comparisons only; a study corrects again over its
    whole robustness family (``stats.correct_family``)."""
    metrics = result["metrics"]
    by_key = {(r["seed"], r["arm"], r["label"]): r for r in result["rows"]}
    seeds = sorted({r["seed"] for r in result["rows"]})
    keys = [(label(s), m) for s in shifts() if s["kind"] != "clean" for m in metrics]
    out = {}
    for arm in arms:
        records = []
        for seed in seeds:
            record: dict[str, Any] = {"seed": seed}
            for slot, name in (("mg", arm), ("plain", baseline)):
                clean = by_key[(seed, name, "clean")]
                record[slot] = {
                    f"{shift} {m}": by_key[(seed, name, shift)][m] - clean[m] for shift, m in keys
                }
            records.append(record)
        out[arm] = stats.compare_metrics(records, [f"{shift} {m}" for shift, m in keys])
    return out
