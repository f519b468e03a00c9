"""Draw the README's figures into images/: python scripts/make_figures.py

- mg_schedule.png: which batches take a Mirror Gradient double step (beta = 3), and what the
  two steps are;
- dataflow.png: how data flows through mgrec's layers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

IMAGES = Path(__file__).resolve().parents[1] / "images"


def mg_schedule(path: Path, n_batches: int = 8, beta: int = 3) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=120)
    for b in range(n_batches):
        mirror = b % beta == 0
        color = "#f4a261" if mirror else "#8ecae6"
        ax.add_patch(
            FancyBboxPatch((b * 1.1, 0), 0.9, 0.8, boxstyle="round,pad=0.02", fc=color, ec="k")
        )
        ax.text(b * 1.1 + 0.45, 0.4, f"batch {b}", ha="center", va="center", fontsize=8)
        if mirror:
            ax.text(
                b * 1.1 + 0.45,
                1.25,
                "+ step on\n$\\alpha_1 L$",
                ha="center",
                fontsize=7,
                color="#1d3557",
            )
            ax.text(
                b * 1.1 + 0.45,
                -0.55,
                "mirror step on\n$-\\alpha_2 L$ (same batch)",
                ha="center",
                fontsize=7,
                color="#9b2226",
            )
        else:
            ax.text(b * 1.1 + 0.45, 1.25, "step on\n$L$", ha="center", fontsize=7, color="#1d3557")
    ax.text(-0.2, 2.1, f"Mirror Gradient as the reference trainer runs it (beta = {beta}): batch index b % beta == 0 "
            "takes two optimizer steps", fontsize=9)  # fmt: skip
    ax.text(
        -0.2,
        -1.25,
        "The index restarts at 0 every epoch; the epoch loss sums first-pass losses only.",
        fontsize=8,
    )
    ax.set_xlim(-0.3, n_batches * 1.1)
    ax.set_ylim(-1.4, 2.4)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def dataflow(path: Path) -> None:
    """The layers and where one trial starts and ends (a dashed frame)."""
    boxes = {
        "config": (
            0.0,
            4.2,
            "configs/*.yaml + --config, --key=value\nconfig.py: layered, validated;\nthe grid: one dict per combination",
        ),
        "runner": (
            0.0,
            2.4,
            "runs/: grid (open, record, close),\nthe claim loop; folder.py: claims,\nresults.jsonl (one line each)",
        ),
        "executor": (
            0.0,
            0.6,
            "executor: local (in order)\nor ray (runs/ray.py:\none Ray task per combination)",
        ),
        "experiment": (
            3.6,
            4.2,
            "experiment.py (composition root)\ndata, device, evaluators,\nbatches, model inputs, model",
        ),
        "data": (
            7.2,
            4.2,
            "data/: MMRec layout, validated,\nfingerprinted; sampler; cache/\n(kNN and user graphs)",
        ),
        "trial": (
            3.6,
            2.4,
            "trial.py: train one combination\nmetrics.jsonl, training_state.pth\n(resume), checkpoint -> row",
        ),
        "trainer": (
            7.2,
            2.4,
            "trainer.py: epochs, early stopping;\noptim/: MirrorGradient, PlainStep\n(knows no model)",
        ),
        "models": (
            10.8,
            3.3,
            "models/*.py: Recommender\nloss, scorer, randomness\n(graphs.py shared)",
        ),
        "evaluator": (
            7.2,
            0.6,
            "evaluator.py, metrics.py\nfull ranking in blocks\n(knows no training)",
        ),
        "report": (
            3.6,
            0.6,
            "report.py, tables.py\nsummary.md, winners, plots,\nresults/index.csv, mgrec table",
        ),
        "studies": (
            10.8,
            0.6,
            "study/ (protocol, robustness,\nflatness, report), analysis/:\nbuilt on grid runs",
        ),
    }
    arrows = [
        ("config", "runner"), ("runner", "executor"), ("executor", "trial"), ("config", "experiment"),
        ("data", "experiment"), ("experiment", "trial"), ("trial", "trainer"), ("trainer", "models"),
        ("trial", "evaluator"), ("evaluator", "models"), ("trial", "runner"), ("runner", "report"),
        ("studies", "runner"), ("experiment", "models"),
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(13, 5.6), dpi=120)
    width, height = 3.1, 1.15
    for name, (x, y, text) in boxes.items():
        face = "#fff3e0" if name in ("trial", "experiment") else "#edf6f9"
        ax.add_patch(
            FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.05", fc=face, ec="#006d77")
        )
        ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=7)
    # One trial: from the combination's config to its results row.
    ax.add_patch(
        FancyBboxPatch((3.45, 2.2), 7.25, 3.4, boxstyle="round,pad=0.05", fc="none", ec="#bc6c25",
                       linestyle="--")
    )  # fmt: skip
    ax.text(3.55, 5.45, "one trial: a combination's config in -> its results row and checkpoint out "
            "(a Ray task runs exactly this)", fontsize=7.5, color="#bc6c25")  # fmt: skip

    def exit_fraction(dx: float, dy: float) -> float:
        """Fraction of the centre-to-centre vector at which it leaves a box (plus a margin)."""
        limits = [(width / 2 + 0.1) / abs(dx) if dx else float("inf"),
                  (height / 2 + 0.1) / abs(dy) if dy else float("inf")]  # fmt: skip
        return min(limits)

    for a, b in arrows:
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        ca, cb = (xa + width / 2, ya + height / 2), (xb + width / 2, yb + height / 2)
        dx, dy = cb[0] - ca[0], cb[1] - ca[1]
        f = exit_fraction(dx, dy)
        start, end = (ca[0] + f * dx, ca[1] + f * dy), (cb[0] - f * dx, cb[1] - f * dy)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="#555"))
    ax.text(0.0, 5.95, "mgrec: layers and data flow (the trainer never sees a model's internals; "
            "the evaluator never sees training)", fontsize=9)  # fmt: skip
    ax.set_xlim(-0.2, 14.1)
    ax.set_ylim(0.4, 6.2)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    IMAGES.mkdir(exist_ok=True)
    mg_schedule(IMAGES / "mg_schedule.png")
    dataflow(IMAGES / "dataflow.png")
    print(f"wrote {IMAGES / 'mg_schedule.png'} and {IMAGES / 'dataflow.png'}")
