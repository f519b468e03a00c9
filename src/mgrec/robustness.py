"""Robustness under feature shift (our protocol; the paper's experiments were never released).

The paper motivates two risks: item text stuffed with popular tags, and images changed after
training. We model them as shifts of a trained model's item features at test time:

- **noise**: Gaussian noise on image and/or text features, sigma x each dimension's std;
- **adjust** ("information adjustment"): for a fraction p of items, the feature row is replaced
  by another random item's row.

A checkpoint is rebuilt with the shifted features and scored on the test split (representations
recomputed from its parameters). Models that build item graphs from features at construction
(FREEDOM's and DRAGON's kNN graphs) rebuild them from the shifted features. Models whose scores
never read the features (LayerGCN; BM3 and FREEDOM use them only in their training losses,
FREEDOM also through its kNN graph) are affected only through such graphs, if at all.
sigma = 0 and p = 0 reproduce the clean evaluation exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mgrec import atomic, checkpoint, experiment, report
from mgrec.analysis import perturb
from mgrec.analysis.flatness import fixed_batches
from mgrec.config import with_paths
from mgrec.models import Recommender

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


def _label(shift: Mapping[str, Any]) -> str:
    if shift["kind"] == "clean":
        return "clean"
    symbol = "sigma" if shift["kind"] == "noise" else "p"
    return f"{shift['kind']} {symbol}={shift['level']} ({shift['modalities']})"


def reported(config: Mapping[str, Any]) -> list[str]:
    """The metrics robustness reports: the validation metric and NDCG at its cut-off."""
    return report.headline_metrics(config, cutoffs=1)


def load_checkpoint(
    checkpoint_path: str | Path, paths: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A study checkpoint's stored payload and the combination to rebuild it with: its stored
    config, with the path-like keys taken from ``paths`` (the study's own config)."""
    stored = checkpoint.read(Path(checkpoint_path))
    return stored, with_paths(stored["config"], paths)


def evaluate_shifts(
    checkpoint_path: str | Path, seed: int, paths: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Test metrics of one checkpoint under every shift (``seed`` draws the perturbations)."""
    stored, combo = load_checkpoint(checkpoint_path, paths)
    clean = experiment.build(combo)
    rows = []
    for shift in shifts():
        built = clean
        if shift["kind"] != "clean":
            data = clean.data
            image, text = perturb.shifted_features(
                data.feature("v"),
                data.feature("t"),
                shift["kind"],
                shift["level"],
                shift["modalities"],
                seed,
            )
            features = {m: f for m, f in (("v", image), ("t", text)) if f is not None}
            built = experiment.build(combo, data=dataclasses.replace(data, features=features))
        model = built.build_model(stored["state_dict"], str(checkpoint_path))
        model.prepare_scoring()
        metrics = experiment.evaluate(model, clean.evaluators["test"])
        rows.append({**shift, "label": _label(shift), **{m: metrics[m] for m in reported(combo)}})
    return rows


def run(
    per_seed: Sequence[Mapping[str, Any]], folder: Path, paths: Mapping[str, Any]
) -> dict[str, Any]:
    """Evaluate every seed's MG and no-MG winners under all shifts; write robustness.{json,png}.

    Returns ``{"rows": [...], "summary": [...], "markdown": str}``; the summary gives, per shift,
    the mean over seeds of each metric and of its relative drop from clean, for both arms.
    """
    metrics = reported(paths)
    rows = []
    with tqdm(total=2 * len(per_seed), desc="robustness", unit="checkpoint", disable=None) as bar:
        for record in per_seed:
            for arm in ("plain", "mg"):
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
        label = _label(shift)
        entry: dict[str, Any] = {"label": label, **shift}
        for arm in ("plain", "mg"):
            mine = [r for r in rows if r["label"] == label and r["arm"] == arm]
            for metric in metrics:
                drops = [r[f"{metric} drop"] for r in mine if r[f"{metric} drop"] is not None]
                entry[f"{arm} {metric}"] = float(np.mean([r[metric] for r in mine]))
                entry[f"{arm} {metric} drop"] = float(np.mean(drops)) if drops else None
        summary.append(entry)
    result = {
        "metrics": metrics,
        "rows": rows,
        "summary": summary,
        "markdown": markdown(summary, metrics),
    }
    atomic.write_text(
        folder / "robustness.json", json.dumps(result, indent=2, allow_nan=False) + "\n"
    )
    title = f"{paths['model']} on {paths['dataset']}: mean over {len(per_seed)} seed(s)"
    plot(summary, folder / "robustness.png", metrics[0], title)
    return result


def markdown(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """One row per shift: each arm's mean ``metrics`` over seeds and, in brackets, the mean
    relative change from that arm's clean score (negative = worse)."""

    def cell(entry: Mapping[str, Any], arm: str, metric: str) -> str:
        drop = entry[f"{arm} {metric} drop"]
        text = f"{entry[f'{arm} {metric}']:.4f}"
        return (
            text if entry["kind"] == "clean" or drop is None else f"{text} ({-100 * drop:+.1f} %)"
        )

    header = (
        "| shift | " + " | ".join(f"{arm} {m}" for arm in ("no-MG", "MG") for m in metrics) + " |"
    )
    lines = [header, "|---" * (1 + 2 * len(metrics)) + "|"]
    for entry in summary:
        cells = [cell(entry, arm, m) for arm in ("plain", "mg") for m in metrics]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: Sequence[Mapping[str, Any]], path: Path, metric: str, title: str = "") -> None:
    """The signed relative change of ``metric`` from clean (negative = worse) vs shift level,
    MG against no-MG, per kind and modality set: the numbers of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for axis, kind in zip(axes, ("noise", "adjust"), strict=True):
        for modalities, style in zip(MODALITY_SETS, ("-", "--", ":"), strict=True):
            entries = [e for e in summary if e["kind"] == kind and e["modalities"] == modalities]
            levels = [0.0] + [e["level"] for e in entries]
            for arm, color in (("plain", "tab:blue"), ("mg", "tab:orange")):
                changes = [0.0] + [-100 * (e[f"{arm} {metric} drop"] or 0.0) for e in entries]
                axis.plot(
                    levels,
                    changes,
                    style,
                    color=color,
                    marker=".",
                    label=f"{'MG' if arm == 'mg' else 'no-MG'} ({modalities})",
                )
        axis.set_xlabel(
            "sigma (x feature std)" if kind == "noise" else "fraction of items adjusted"
        )
        axis.set_ylabel(f"{metric} change from clean (%)")
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.set_title(
            "Gaussian noise" if kind == "noise" else "information adjustment", fontsize=9
        )
    axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    report.save_figure(fig, path)


def load_for_analysis(
    checkpoint_path: str | Path, seed: int, paths: Mapping[str, Any], n_batches: int = 4
) -> tuple[Recommender, list[torch.Tensor]]:
    """A checkpoint's model (recomputing, on clean features) and ``n_batches`` fixed training
    batches drawn with ``seed``: the inputs of the flatness measures."""
    stored, combo = load_checkpoint(checkpoint_path, paths)
    built = experiment.build(combo)
    model = built.build_model(stored["state_dict"], str(checkpoint_path))
    model.prepare_scoring()
    return model, fixed_batches(built.batches, n_batches, seed)
