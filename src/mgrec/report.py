"""Results tables and training-curve plots (presentation only: no training logic here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_LABELS = {"recall": "REC", "precision": "PREC", "map": "MAP", "ndcg": "NDCG"}


def metric_table(
    rows: Mapping[str, Mapping[str, float]], topk: Sequence[int], metrics: Sequence[str]
) -> str:
    """A markdown table: one row per entry of ``rows`` (e.g. valid/test), one column per metric@k."""
    names = [m.lower() for m in metrics]
    columns = [f"{name}@{k}" for name in names for k in topk]
    header = (
        "| split | "
        + " | ".join(f"{METRIC_LABELS.get(c.split('@')[0], c)}@{c.split('@')[1]}" for c in columns)
        + " |"
    )
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for label, values in rows.items():
        cells = [f"{values[c]:.4f}" if c in values else "-" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_table(
    results: Sequence[Mapping[str, Any]], valid_metric: str, test_metrics: Sequence[str]
) -> str:
    """A markdown table of every finished combination: its parameters, best epoch and scores."""
    if not results:
        return "(no finished combinations)"
    keys = [
        k
        for k in results[0]["params"]
        if k != "seed" or len({str(r["params"]["seed"]) for r in results}) > 1
    ]
    header = [
        "#",
        *keys,
        "best epoch",
        f"valid {valid_metric}",
        *(f"test {m}" for m in test_metrics),
        "stopped",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in results:
        valid = r["valid"].get(valid_metric)
        cells = [
            str(r["index"] + 1),
            *(str(r["params"][k]) for k in keys),
            "-" if r["best_epoch"] is None else str(r["best_epoch"]),
            "-" if valid is None else f"{valid:.4f}",
            *("-" if m not in r["test"] else f"{r['test'][m]:.4f}" for m in test_metrics),
            r["stopped"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curve(
    history: Sequence[Mapping[str, Any]], valid_metric: str, path: Path, title: str
) -> None:
    """A PNG with the training loss and the validation metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    losses = [h["loss"] for h in history]
    evaluated = [(h["epoch"], h["valid"][valid_metric]) for h in history if h.get("valid")]
    fig, loss_axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_axis.plot(epochs, losses, color="tab:blue", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    if evaluated:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(
            *zip(*evaluated, strict=True), color="tab:orange", marker=".", label=valid_metric
        )
        metric_axis.set_ylabel(f"valid {valid_metric}", color="tab:orange")
    loss_axis.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
