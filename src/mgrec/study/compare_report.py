"""Writing a comparison study's findings: report.md and report.json, the paper's table
(table.md, table.csv), the differences figure (differences.png), and with the optional phases
robustness.json with one robustness-<model>.png per model, and flatness.json. Everything here
renders results computed in ``compare``; nothing is measured."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrec import atomic
from mgrec.analysis import stats
from mgrec.models import registry
from mgrec.report import SYNTHETIC_NOTE
from mgrec.study.report import (
    change_markdown,
    correlation_markdown,
    flatness_markdown,
    plot_robustness,
    significance_lines,
)
from mgrec.tables import ARM_SUFFIX, column_name, compare_table, table_metrics, to_csv

STRATEGY_NAMES = {"plain": "plain", "mg": "MG", "sam": "SAM", "asam": "ASAM"}


def _fmt(value: float | None, places: int = 3) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def slug(model: str) -> str:
    """A model's name for file names (a plugin's ``module:Class`` included)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", registry.find(model).display_name)


def labels_of(model: str) -> dict[str, str]:
    """The arms of ``model`` as the paper's rows name them: VBPR, VBPR + MG, VBPR + SAM."""
    return {strategy: f"{model}{suffix}" for strategy, suffix in ARM_SUFFIX.items()}


def budget_text(budget: str) -> str:
    """What the budget gave each arm, in words."""
    if budget == "equal":
        return (
            "every arm of a model trains as many models as its largest arm (an arm with a "
            "smaller grid trains it several times, from the seeds s, s + 1000, ...), so all "
            "choose among as many candidates"
        )
    if budget == "equal_grad":
        return (
            "every arm of a model takes about as many gradient evaluations as its costliest arm, "
            "planned at full epochs (plain 1 per batch, MG 1 + 1/beta, SAM/ASAM 2), through whole "
            "replicas of its grid from the seeds s, s + 1000, ...; the counted cost is under Cost"
        )
    return (
        "one replica each: an arm with a larger grid chooses among more candidates, as in the "
        "paper's tables"
    )


def arms_markdown(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "| arm | grid points (model x strategy) | strategy's own points | replicas | models "
        "trained per seed | planned passes per seed (batch-epochs at full epochs) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in report["arms"]:
        lines.append(
            f"| {arm['label']} | {arm['combinations']} | {arm['candidates']} | {arm['replicas']} "
            f"| {arm['trials_per_seed']} | {arm['planned_passes_per_seed']:g} |"
        )
    return lines


def cost_markdown(report: Mapping[str, Any]) -> list[str]:
    seeds = len(report["seeds"])
    lines = [
        f"| arm | models trained per seed | epochs (all {seeds} seeds) | gradient evaluations per "
        "seed (mean) | x plain | training seconds (all seeds) | x plain | s / epoch | trial "
        "seconds (all seeds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, by_strategy in report["cost"].items():
        for strategy, c in by_strategy.items():
            lines.append(
                f"| {model}{ARM_SUFFIX[strategy]} | {c['trials_per_seed']} | {c['epochs_total']} "
                f"| {c['grad_evals_per_seed']:.1f} | {_fmt(c['grad_evals_vs_plain'], 2)} | "
                f"{c['train_seconds_total']:.2f} | {_fmt(c['train_seconds_vs_plain'], 2)} | "
                f"{_fmt(c['epoch_seconds'])} | {c['trial_seconds_total']:.1f} |"
            )
    seconds = report["seconds"]
    phases = ", ".join(f"{k} {v} s" for k, v in seconds.items() if k != "total")
    rows = ", ".join(f"{m} {n}" for m, n in report["train_rows"].items())
    return [
        *lines,
        "",
        "Gradient evaluations are forward-backward passes, counted from every combination the "
        "arm trained (all replicas): its trained epochs x ceil(training rows / train_batch_size) "
        f"batches (training rows: {rows}), plain 1 pass per batch, SAM/ASAM 2, MG 1 plus 1 on "
        "every mirror batch (every beta-th batch of an epoch). Training seconds are the trained "
        "epochs' own (metrics.jsonl, evaluation excluded); trial seconds add each trial's "
        "building and evaluation (the first trial also loads the data). Both are summed over "
        "trials, which overlap on the Ray executor. Wall time: "
        f"{phases}; whole study {seconds['total']} s.",
    ]


def family_lines(family: Mapping[str, Any], what: str) -> list[str]:
    return [
        f"**The family.** Every {what} of this study is one family of tests: {family['formula']} "
        f"comparisons; {family['t']} paired t-tests and {family['wilcoxon']} Wilcoxon tests could "
        "be made (an undefined test, e.g. no spread across seeds, is not counted). Each test's "
        "p-values are adjusted over its own family: Holm-Bonferroni (family-wise error) and "
        "Benjamini-Hochberg (false discovery rate). A difference is called significant only "
        f"when its adjusted p is below α = {family.get('alpha', stats.ALPHA):g}.",
        "",
    ]


def comparison_markdown(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Differences from plain training across seeds",
        "",
        "Paired by seed; 95 % t interval of the mean difference; paired t-test; Wilcoxon "
        "signed-rank; raw and adjusted p-values.",
        "",
        *family_lines(report["family"]["accuracy"], "comparison of a strategy with plain "
                      "training (each model x each strategy x each metric)"),
    ]  # fmt: skip
    for model, by_strategy in report["comparisons"].items():
        for strategy, comparison in by_strategy.items():
            other = f"{model}{ARM_SUFFIX[strategy]}"
            lines += [
                f"### {other} − {model}",
                "",
                stats.markdown_table(comparison, labels=(model, other)),
                *significance_lines(comparison),
                "",
            ]
    return lines


def robustness_markdown(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Robustness under feature shift (our protocol)",
        "",
        "Each seed's winner of every arm, evaluated on the test split under Gaussian noise on the "
        "item features and under information adjustment (a fraction of items' feature rows "
        "replaced by other items'); the same perturbation draws for every arm of a seed.",
        "",
        *family_lines(report["family"]["robustness"], "robustness comparison (each model x "
                      "each strategy x each shift x each metric)"),
    ]  # fmt: skip
    for model, result in report["robustness"].items():
        lines += [
            f"### {model}: mean over seeds (relative change from clean in brackets)",
            "",
            result["markdown"],
            "",
            *change_markdown(result["comparison"], labels_of(model)),
            f"See `robustness-{slug(model)}.png`.",
            "",
        ]
    return lines


def flatness_lines(report: Mapping[str, Any]) -> list[str]:
    def body(lines: list[str]) -> list[str]:  # without the heading and the "See ..." line
        kept = [line for line in lines[1:] if not line.startswith("See `")]
        while kept and not kept[-1]:
            kept.pop()
        return [*kept, ""]

    lines: list[str] = []
    for model, flat in report["flatness"].items():
        lines += [
            f"## Flatness of {model}'s winners (of the loss training minimised)",
            *body(flatness_markdown(flat)),
            f"See `flatness.json`, `flatness-{slug(model)}-winner.png` and "
            f"`flatness-{slug(model)}-converged.png`.",
            "",
        ]
        link = (report.get("flatness_vs_robustness") or {}).get(model)
        if link is not None:
            lines += [
                f"## {model}: flatness against robustness",
                *body(correlation_markdown(link)),
                f"See `flatness-robustness-{slug(model)}.png`.",
                "",
            ]
    return lines


def differences_figure(report: Mapping[str, Any], folder: Path) -> None:
    """differences.png: per non-plain strategy a panel of each model's differences from plain
    (the table's metrics) with their 95 % intervals; filled where Holm's correction keeps them."""
    others = [s for s in report["strategies"] if s != "plain"]
    if not others:
        return
    panels = {
        f"{ARM_SUFFIX[s].strip(' +')} − plain": {
            model: report["comparisons"][model][s] for model in report["models"]
        }
        for s in others
    }
    metrics = table_metrics(report["metrics"])
    stats.plot_differences(
        panels, metrics, folder / "differences.png",
        f"Test metrics on {report['dataset']}: strategy − plain over {len(report['seeds'])} seeds "
        "(filled: Holm-adjusted t-test p < 0.05)",
        metric_labels=[column_name(m) for m in metrics],
    )  # fmt: skip


def write_robustness_files(report: Mapping[str, Any], folder: Path) -> None:
    atomic.write_text(
        folder / "robustness.json",
        json.dumps(report["robustness"], indent=2, allow_nan=False) + "\n",
    )
    for model, result in report["robustness"].items():
        title = f"{model} on {report['dataset']}: mean over {len(report['seeds'])} seed(s)"
        plot_robustness(
            result["summary"], folder / f"robustness-{slug(model)}.png", result["metrics"][0],
            title, labels_of(model),
        )  # fmt: skip


def report_markdown(report: Mapping[str, Any], table: str) -> str:
    seeds: Sequence[int] = report["seeds"]
    lines = [
        f"# Which training strategy helps? {', '.join(report['models'])} with "
        f"{', '.join(STRATEGY_NAMES[s] for s in report['strategies'])} on {report['dataset']}",
        "",
    ]
    if report["synthetic"]:
        lines += [f"Note: {SYNTHETIC_NOTE}.", ""]
    lines += [
        f"Protocol (ours): {len(seeds)} seeds ({', '.join(map(str, seeds))}); per seed and model "
        "each strategy is an arm that tunes its own grid (the model's grid x the strategy's: MG "
        "alpha1 x alpha2 x beta, SAM/ASAM rho) and keeps its winner by **validation**; test "
        f"metrics of that winner. Budget: **{report['budget']}**: {budget_text(report['budget'])}.",
        "",
        "## Arms",
        "",
        *arms_markdown(report),
        "",
        "## The paper's table",
        "",
        table,
        "",
        "Also as `table.md` and `table.csv`; `differences.png` shows each model's differences "
        "from plain with their 95 % intervals, one panel per strategy.",
        "",
        *comparison_markdown(report),
        "## Cost",
        "",
        *cost_markdown(report),
        "",
    ]
    if "robustness" in report:
        lines += robustness_markdown(report)
    if "flatness" in report:
        lines += flatness_lines(report)
    return "\n".join(lines)


def write_compare_report(report: Mapping[str, Any], folder: Path) -> None:
    """report.md, report.json, table.md, table.csv, differences.png (and the robustness and
    flatness files) in the study folder; the markdown is also printed."""
    table, rows = compare_table(report)
    text = report_markdown(report, table)
    if "robustness" in report:
        write_robustness_files(report, folder)
    if "flatness" in report:
        atomic.write_text(
            folder / "flatness.json",
            json.dumps(report["flatness"], indent=2, allow_nan=False) + "\n",
        )
    atomic.write_text(folder / "table.md", table + "\n")
    atomic.write_text(folder / "table.csv", to_csv(rows))
    differences_figure(report, folder)
    atomic.write_text(folder / "report.md", text)
    atomic.write_text(
        folder / "report.json", json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
    )
    print(text)
    print(f"study report, table and figures: {folder}")
