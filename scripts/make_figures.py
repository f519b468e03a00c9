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
    boxes = {
        "config": (0.0, 3.0, "configs/*.yaml\n+ --config, --key=value\n(config.py)"),
        "data": (0.0, 1.5, "data/<name>/ (MMRec layout)\nload + validate\n(data/dataset.py)"),
        "batches": (3.3, 1.5, "TrainBatches\nshuffle + negatives on device\n(data/sampler.py)"),
        "model": (
            3.3,
            3.0,
            "Recommender (models/*.py)\ngraphs.py, frozen kNN graph\n-> cache/ (data/cache.py)",
        ),
        "trainer": (6.6, 3.0, "Trainer\nMG / plain steps, early stop\n(trainer.py)"),
        "evaluator": (6.6, 1.5, "Evaluator\nfull ranking, metrics\n(evaluator.py, metrics.py)"),
        "runner": (
            9.9,
            2.25,
            "runner.py: grid, results/,\ncheckpoints/, --resume,\ntables and plots (report.py)",
        ),
    }
    arrows = [
        ("config", "model"), ("data", "batches"), ("data", "model"), ("batches", "trainer"),
        ("model", "trainer"), ("model", "evaluator"), ("evaluator", "trainer"), ("trainer", "runner"),
        ("evaluator", "runner"), ("config", "data"),
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=120)
    width, height = 2.7, 1.0
    for x, y, text in boxes.values():
        ax.add_patch(
            FancyBboxPatch(
                (x, y), width, height, boxstyle="round,pad=0.05", fc="#edf6f9", ec="#006d77"
            )
        )
        ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=7.5)

    def exit_fraction(dx: float, dy: float) -> float:
        """Fraction of the centre-to-centre vector at which it leaves a box (plus a margin)."""
        limits = [(width / 2 + 0.12) / abs(dx) if dx else float("inf"),
                  (height / 2 + 0.12) / abs(dy) if dy else float("inf")]  # fmt: skip
        return min(limits)

    for a, b in arrows:
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        ca, cb = (xa + width / 2, ya + height / 2), (xb + width / 2, yb + height / 2)
        dx, dy = cb[0] - ca[0], cb[1] - ca[1]
        f = exit_fraction(dx, dy)
        start, end = (ca[0] + f * dx, ca[1] + f * dy), (cb[0] - f * dx, cb[1] - f * dy)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="#555"))
    ax.text(0.0, 4.3, "mgrec: how data flows (the trainer never sees a model's internals; "
            "the evaluator never sees training)", fontsize=9)  # fmt: skip
    ax.set_xlim(-0.2, 12.8)
    ax.set_ylim(1.2, 4.5)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    IMAGES.mkdir(exist_ok=True)
    mg_schedule(IMAGES / "mg_schedule.png")
    dataflow(IMAGES / "dataflow.png")
    print(f"wrote {IMAGES / 'mg_schedule.png'} and {IMAGES / 'dataflow.png'}")
