"""Writing a study's findings: report.md and report.json, and beside them robustness.json,
flatness.json and the figures (seeds, robustness, flatness, flatness against robustness).
Everything here renders results computed elsewhere; nothing is measured."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgrec import atomic
from mgrec.analysis import flatness, stats
from mgrec.report import SYNTHETIC_NOTE, save_figure
from mgrec.study.flatness import FLATNESS_MEASURES

MODALITY_STYLES = (("image", "-"), ("text", "--"), ("both", ":"))
ARM_COLORS = (
    ("plain", "tab:blue"),
    ("mg", "tab:orange"),
    ("sam", "tab:green"),
    ("asam", "tab:red"),
)
# How an MG study names its arms (a comparison study names plain training "plain")
ARM_NAMES = {"plain": "no-MG", "mg": "MG", "sam": "SAM", "asam": "ASAM"}


def _fmt(value: float | None, places: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{places}f}"
    )


def _arm(arm: str, labels: Mapping[str, str] | None = None) -> str:
    return (labels or ARM_NAMES).get(arm, arm)


# --- robustness ---------------------------------------------------------------------------------


def robustness_markdown(
    summary: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    arms: Sequence[str] = ("plain", "mg"),
    labels: Mapping[str, str] | None = None,
) -> str:
    """One row per shift: each arm's mean ``metrics`` over seeds and, in brackets, the mean
    relative change from that arm's clean score (negative = worse)."""

    def cell(entry: Mapping[str, Any], arm: str, metric: str) -> str:
        drop = entry[f"{arm} {metric} drop"]
        text = f"{entry[f'{arm} {metric}']:.4f}"
        return (
            text if entry["kind"] == "clean" or drop is None else f"{text} ({-100 * drop:+.1f} %)"
        )

    header = (
        "| shift | "
        + " | ".join(f"{_arm(arm, labels)} {m}" for arm in arms for m in metrics)
        + " |"
    )
    lines = [header, "|---" * (1 + len(arms) * len(metrics)) + "|"]
    for entry in summary:
        cells = [cell(entry, arm, m) for arm in arms for m in metrics]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_robustness(
    summary: Sequence[Mapping[str, Any]],
    path: Path,
    metric: str,
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> None:
    """The signed relative change of ``metric`` from clean (negative = worse) vs shift level,
    every arm of the summary (MG against no-MG in an MG study), per kind and modality set: the
    numbers of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for axis, kind in zip(axes, ("noise", "adjust"), strict=True):
        for modalities, style in MODALITY_STYLES:
            entries = [e for e in summary if e["kind"] == kind and e["modalities"] == modalities]
            levels = [0.0] + [e["level"] for e in entries]
            for arm, color in ARM_COLORS:
                if f"{arm} {metric}" not in summary[0]:
                    continue
                changes = [0.0] + [-100 * (e[f"{arm} {metric} drop"] or 0.0) for e in entries]
                axis.plot(
                    levels,
                    changes,
                    style,
                    color=color,
                    marker=".",
                    label=f"{_arm(arm, labels)} ({modalities})",
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
    save_figure(fig, path)


def write_robustness(
    result: Mapping[str, Any], folder: Path, paths: Mapping[str, Any], n_seeds: int
) -> None:
    """robustness.json and robustness.png (the first metric) in the study folder."""
    atomic.write_text(
        folder / "robustness.json", json.dumps(result, indent=2, allow_nan=False) + "\n"
    )
    title = f"{paths['model']} on {paths['dataset']}: mean over {n_seeds} seed(s)"
    plot_robustness(result["summary"], folder / "robustness.png", result["metrics"][0], title)


def change_markdown(
    comparisons: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str] | None = None,
    baseline: str = "plain",
) -> list[str]:
    """The paired statistics of robustness (``robustness.change_comparisons``, corrected over
    the study's robustness family): one table per arm against ``baseline``."""
    lines = [
        "Per seed, each checkpoint's change from its clean score (shifted - clean, in the "
        "metric's units; negative = worse); Δ = arm - baseline, so a positive Δ means the arm "
        "degrades less. Paired across seeds as the clean metrics are.",
        "",
    ]
    for arm, comparison in comparisons.items():
        lines += [
            f"### {_arm(arm, labels)} - {_arm(baseline, labels)}: change from clean under shift",
            "",
            stats.markdown_table(
                dict(comparison),
                labels=(_arm(baseline, labels), _arm(arm, labels)),
                first="Shift and metric (change from clean)",
            ),
            *significance_lines(comparison),
            "",
        ]
    return lines


# --- flatness -----------------------------------------------------------------------------------


def write_flatness(
    results: Mapping[str, Any],
    folder: Path,
    paths: Mapping[str, Any],
    draws: int,
    stem: str = "flatness",
    write_json: bool = True,
) -> None:
    """flatness.json (unless ``write_json`` is false) and one figure per point
    (``<stem>-winner.png``, ``<stem>-converged.png``)."""
    for point in ("winner", "converged"):
        flatness.plot(
            {label: r[point] for label, r in results.items()}, folder / f"{stem}-{point}.png",
            title=f"{paths['model']} on {paths['dataset']}: flatness at the {point} points (K = {draws} draws)",
        )  # fmt: skip
    if write_json:
        atomic.write_text(
            folder / "flatness.json", json.dumps(results, indent=2, allow_nan=False) + "\n"
        )


def plot_flatness_robustness(
    pairs: Sequence[Mapping[str, Any]],
    path: Path,
    metric: str,
    rho: float,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Each flatness measure against each robustness drop, one point per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(FLATNESS_MEASURES), figsize=(3.2 * len(FLATNESS_MEASURES), 6), dpi=100
    )
    for row, kind in enumerate(("noise", "adjust")):
        for col, measure in enumerate(FLATNESS_MEASURES):
            axis = axes[row][col]
            for arm, color in ARM_COLORS:
                mine = [p for p in pairs if p["arm"] == arm and f"{kind} drop" in p]
                if not mine:
                    continue
                axis.scatter([p[measure] for p in mine], [100 * p[f"{kind} drop"] for p in mine],
                             color=color, label=_arm(arm, labels), s=18)  # fmt: skip
            axis.set_xlabel(
                measure + (f" (rho {rho})" if measure.startswith("sharpness") else ""), fontsize=8
            )
            if col == 0:
                axis.set_ylabel(f"{metric} drop, {kind} (%)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Flatness (validation winners) against robustness, per checkpoint", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_flatness_robustness(
    result: Mapping[str, Any],
    folder: Path,
    name: str = "flatness-robustness.png",
    labels: Mapping[str, str] | None = None,
) -> None:
    """flatness-robustness.png, or ``name`` (the numbers are in report.json)."""
    plot_flatness_robustness(
        result["pairs"], folder / name, result["metric"], result["sharpness_rho"], labels
    )


def flatness_markdown(flat: Mapping[str, Any]) -> list[str]:
    """The flatness table: per checkpoint and point, the curvature, sharpness at the middle ρ,
    and where the 1-D curve has its minimum."""
    first = next(iter(flat.values()))["winner"]
    middle = len(first["rho"]) // 2
    rho = first["rho"][middle]
    lines = [
        "## Flatness (of the loss training minimised)",
        "",
        f"Loss: {first['fixed']}; {first['settings']['batches']} fixed training batches; seed per "
        "checkpoint. Points: the validation winner as saved, and the same run continued on its "
        "training loss to a plateau (converged).",
        "",
        f"| checkpoint | point | λ_max | λ_min | trace ± se | sharpness mean (ρ {rho}) | worst (ρ {rho}) | curve argmin α | ‖∇L‖ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, record in flat.items():
        for point in ("winner", "converged"):
            r = record[point]
            argmin = r["alpha"][int(np.argmin(r["loss"]))]
            lines.append(
                f"| {label} | {point} | {r['lambda_max']:.4g} | {r['lambda_min']:.4g} | "
                f"{r['trace']:.4g} ± {r['trace_stderr']:.2g} | {r['sharpness_mean'][middle]:.4g} | "
                f"{r['sharpness_worst'][middle]:.4g} | {argmin:+.2f} | {r['gradient_norm']:.3g} |"
            )
    return [
        *lines,
        "",
        "See `flatness.json`, `flatness-winner.png` and `flatness-converged.png`.",
        "",
    ]


def correlation_markdown(result: Mapping[str, Any]) -> list[str]:
    """The flatness-against-robustness table: Spearman ρ and p per measure and kind of shift."""
    lines = [
        "## Flatness against robustness (per checkpoint, Spearman ρ with a permutation p-value)",
        "",
        f"Robustness: the mean relative drop of {result['metric']} over the noise shifts and over "
        "the information-adjustment shifts; sharpness at "
        f"ρ = {result['sharpness_rho']}; {len(result['pairs'])} checkpoints (validation winners).",
        "",
        "| flatness measure | robustness | Spearman ρ | p |",
        "|---|---|---|---|",
    ]
    for row in result["correlations"]:
        lines.append(
            f"| {row['measure']} | {row['robustness']} | {_fmt(row['rho'], 3)} | {_fmt(row['p'], 3)} |"
        )
    return [*lines, "", "See `flatness-robustness.png`.", ""]


# --- the report ---------------------------------------------------------------------------------


def significance_lines(comparison: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Which differences are significant after correcting for the family of tests (and which
    raw p-values below alpha do not survive it): the only significance the report claims."""
    found = stats.significant_after_correction(comparison)
    first = next(iter(comparison.values()), {})
    if "family" not in first:  # a report written before corrections existed
        return []
    alpha, family = first["alpha"], first["family"]

    def names(key: str) -> str:
        return ", ".join(found[key]) or "none"

    lines = [
        f"**Significant after correction** (α = {alpha:g}; family of {family['t']} t-tests and "
        f"{family['wilcoxon']} Wilcoxon tests):",
        "",
        f"- Holm-Bonferroni (family-wise error): t-test {names('t_holm')}; Wilcoxon "
        f"{names('wilcoxon_holm')}.",
        f"- Benjamini-Hochberg (false discovery rate): t-test {names('t_bh')}; Wilcoxon "
        f"{names('wilcoxon_bh')}.",
    ]
    if found["raw_only"]:
        lines.append(
            f"- Raw p below {alpha:g} but not significant after either correction (not evidence "
            f"of a difference): {names('raw_only')}."
        )
    return lines


def budget_sentence(budget: str, replicas: int) -> str:
    """What an MG study's budget gave the no-MG arm, in words."""
    if budget == "equal":
        return (
            f"(no-MG trains every grid point {replicas} times from different seeds, so both arms "
            "train as many models)."
        )
    if budget == "equal_grad":
        return (
            f"(no-MG trains every grid point {replicas} times from different seeds, so both arms "
            "take about as many gradient evaluations at full epochs: MG takes 1 + 1/beta per batch)."
        )
    return "(no-MG trains each grid point once: MG gets more candidates, as in the paper)."


def write_report(report: Mapping[str, Any], folder: Path) -> None:
    """report.md, report.json and seeds.png in the study folder; the markdown is also printed."""
    seeds = report["per_seed"]
    shown = report["metrics_shown"]
    lines = [f"# Does Mirror Gradient help {report['model']} on {report['dataset']}?", ""]
    if report["synthetic"]:
        lines += [f"Note: {SYNTHETIC_NOTE}.", ""]
    budget = report["budget"]
    lines += [
        f"Protocol (ours): {len(seeds)} seeds; per seed each arm tunes its grid and keeps its winner by "
        f"**validation**; test metrics of that winner. Budget: **{budget}** "
        + budget_sentence(budget, report["candidates_per_arm"]["plain_replicas"]),
        "",
        "## Per seed (test metrics of each arm's validation winner)",
        "",
        "| seed | "
        + " | ".join(f"no-MG {m}" for m in shown)
        + " | "
        + " | ".join(f"MG {m}" for m in shown)
        + " |",
        "|---" * (1 + 2 * len(shown)) + "|",
    ]
    for record in seeds:
        cells = [_fmt(record["plain"].get(m)) for m in shown] + [
            _fmt(record["mg"].get(m)) for m in shown
        ]
        lines.append(f"| {record['seed']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## MG - no-MG across seeds (paired; 95 % t interval; paired t-test; Wilcoxon signed-rank; "
        "p-values corrected for multiplicity)",
        "",
        stats.markdown_table(report["comparison"]),
        *significance_lines(report["comparison"]),
        "",
        "## What the reference's protocol would report from the same runs",
        "",
        "Winners selected by **test** score; no-MG limited to one replica (MG gets "
        f"{report['candidates_per_arm']['mg']}x the candidates). Shown for comparison, not as evidence.",
        "",
        stats.markdown_table(report["reference_protocol"]),
        "",
        "## Cost",
        "",
        f"Mean training seconds per epoch: no-MG {_fmt(report['epoch_seconds']['plain'], 3)}, "
        f"MG {_fmt(report['epoch_seconds']['mg'], 3)}"
        + (
            f" (MG overhead {100 * (report['epoch_seconds']['mg'] / report['epoch_seconds']['plain'] - 1):.0f} %)"
            if report["epoch_seconds"]["plain"] > 0
            else ""
        )
        + ". Wall time: "
        + ", ".join(f"{k} {v} s" for k, v in report["seconds"].items() if k != "total")
        + f"; whole study {report['seconds']['total']} s.",
        "",
    ]
    if "robustness" in report:
        lines += [
            "## Robustness under feature shift (our protocol)",
            "",
            report["robustness"]["markdown"],
            "",
        ]
        if "comparison" in report["robustness"]:
            lines += change_markdown(report["robustness"]["comparison"])
    if "flatness" in report:
        lines += flatness_markdown(report["flatness"])
    if "flatness_vs_robustness" in report:
        lines += correlation_markdown(report["flatness_vs_robustness"])
    text = "\n".join(lines)
    atomic.write_text(folder / "report.md", text)
    atomic.write_text(
        folder / "report.json", json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
    )
    stats.plot_seeds(
        [{"seed": r["seed"], "mg": r["mg"], "plain": r["plain"]} for r in seeds],
        list(shown),
        folder / "seeds.png",
        f"{report['model']} on {report['dataset']}: test metrics per seed (validation-selected)",
    )
    print(text)
    print(f"study report, JSON and plots: {folder}")
