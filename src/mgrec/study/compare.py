"""Which training strategy helps which model? A study across models and strategies in one
command (``mgrec --study compare --models VBPR,LayerGCN --strategies plain,mg,sam``).

Per seed and model, every strategy is an arm (``protocol``: the model's grid times the
strategy's, replicas for equal budgets, the winner by validation); all arms of all seeds are
handed to ``runs.train.train_grids`` at once (resumable; in parallel with ``executor: ray``).
Each non-plain arm is then compared with its model's plain arm across seeds
(``stats.compare_metrics``), and every comparison of the study (each model x each non-plain
strategy x each metric) is one family, corrected together (``stats.correct_family``:
Holm-Bonferroni and Benjamini-Hochberg, the t-tests and the Wilcoxon tests each over their
own). Robustness under feature shift and flatness run for every arm; robustness's paired
statistics (change from clean, per shift and metric) form a second family. The cost of each
arm is counted in gradient evaluations (forward-backward passes) from the epochs each
combination trained, and in trial seconds. ``compare_report`` writes it all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgrec.analysis import stats
from mgrec.commands.dry_run import dry_run as plan_grid
from mgrec.commands.output import check_output, write_output
from mgrec.data.synthetic import EMBEDDED_NAME
from mgrec.report import headline_metrics
from mgrec.runs.logs import setup_logging
from mgrec.runs.train import train_grids
from mgrec.study import protocol
from mgrec.study import robustness as robust
from mgrec.study.compare_report import slug, write_compare_report
from mgrec.study.flatness import (
    check_settings,
    flatness_vs_robustness,
    split_settings,
    study_flatness,
)
from mgrec.study.report import write_flatness, write_flatness_robustness

# How a comparison study names its arms (plain is plain training, not "no MG")
LABELS = {"plain": "plain", "mg": "MG", "sam": "SAM", "asam": "ASAM"}


def family_formula(models: int, others: int, metrics: int, what: str = "metrics") -> str:
    """``2 models x 2 strategies against plain x 16 metrics = 64``."""
    return (
        f"{models} model{'s' * (models != 1)} x {others} "
        f"strateg{'ies' if others != 1 else 'y'} against plain x {metrics} {what} "
        f"= {models * others * metrics}"
    )


def train_rows(config: Mapping[str, Any]) -> int:
    """The training interactions of the config's dataset (rows of the training batches)."""
    from mgrec.experiment import load_data

    return len(load_data(config).train)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def cost_summary(
    plan: protocol.Plan, per_seed: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per model and strategy: what the arm was planned to cost per seed (trained models,
    passes per batch-epoch at full epochs) and what it cost, counted (gradient evaluations,
    epochs, summed training and trial seconds, mean epoch time), with the ratios of gradient
    evaluations and training seconds to the model's plain arm."""
    out: dict[str, dict[str, Any]] = {}
    for model in plan.models:
        records = [r for r in per_seed if r["model"] == model]
        mine: dict[str, Any] = {}
        for strategy in plan.strategies:
            arm = plan.arm(model, strategy)
            arms = [r["arms"][strategy] for r in records]
            evaluations = [a["grad_evals"] for a in arms]
            epoch_seconds = [a["epoch_seconds"] for a in arms if a["epoch_seconds"] is not None]
            mine[strategy] = {
                "combinations": arm.combos, "replicas": arm.replicas,
                "trials_per_seed": arm.trials,
                "planned_passes_per_seed": arm.cost * arm.replicas,
                "grad_evals_per_seed": float(np.mean(evaluations)),
                "grad_evals_total": int(sum(evaluations)),
                "epochs_total": int(sum(a["epochs"] for a in arms)),
                "trial_seconds_total": round(float(sum(a["seconds"] for a in arms)), 3),
                "train_seconds_total": round(float(sum(a["train_seconds"] for a in arms)), 3),
                "epoch_seconds": _finite(float(np.mean(epoch_seconds))) if epoch_seconds else None,
            }  # fmt: skip
        plain = mine["plain"]
        for entry in mine.values():
            entry["grad_evals_vs_plain"] = (
                entry["grad_evals_total"] / plain["grad_evals_total"]
                if plain["grad_evals_total"]
                else None
            )
            entry["train_seconds_vs_plain"] = (
                entry["train_seconds_total"] / plain["train_seconds_total"]
                if plain["train_seconds_total"]
                else None
            )
        out[model] = mine
    return out


def comparisons(
    plan: protocol.Plan, per_seed: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every non-plain arm against its model's plain arm across seeds (paired by seed), each
    metric; corrected as one family over the whole study. Returns ``{model: {strategy:
    compare_metrics output}}`` and the family (sizes, formula)."""
    others = [s for s in plan.strategies if s != "plain"]
    found: dict[str, dict[str, Any]] = {}
    for model in plan.models:
        records = [r for r in per_seed if r["model"] == model]
        found[model] = {
            strategy: stats.compare_metrics(
                [
                    {
                        "seed": r["seed"],
                        "mg": r["arms"][strategy]["test"],
                        "plain": r["arms"]["plain"]["test"],
                    }
                    for r in records
                ],
                metrics,
            )  # fmt: skip
            for strategy in others
        }
    sizes = stats.correct_family([c for by_model in found.values() for c in by_model.values()])
    family = {
        **sizes,
        "comparisons": len(plan.models) * len(others) * len(metrics),
        "formula": family_formula(len(plan.models), len(others), len(metrics)),
        "alpha": stats.ALPHA,
    }
    return found, family


def checkpoint_records(per_seed: Sequence[Mapping[str, Any]], model: str) -> list[dict[str, Any]]:
    """``model``'s seeds as the robustness and flatness runners take them: ``{"seed": s,
    "<strategy>_checkpoint": path, ...}``, one per seed."""
    return [
        {"seed": r["seed"], **{f"{s}_checkpoint": r["arms"][s]["checkpoint"] for s in r["arms"]}}
        for r in per_seed
        if r["model"] == model
    ]


def robustness_phase(
    plan: protocol.Plan, per_seed: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every arm's winners under every feature shift, per model; the paired statistics of
    each non-plain arm's change from clean against plain's, corrected as one family over the
    study. Returns ``{model: robustness result with "comparison"}`` and the family."""
    others = [s for s in plan.strategies if s != "plain"]
    results: dict[str, Any] = {}
    for model in plan.models:
        records = checkpoint_records(per_seed, model)
        result = robust.run(records, plan.arm(model, "plain").config, plan.strategies, LABELS)
        result["comparison"] = robust.change_comparisons(result, others)
        results[model] = result
    sizes = stats.correct_family(
        [c for result in results.values() for c in result["comparison"].values()]
    )
    first = next(iter(results.values()))
    keys = len(next(iter(first["comparison"].values()))) if others else 0
    family = {
        **sizes,
        "comparisons": len(plan.models) * len(others) * keys,
        "formula": family_formula(len(plan.models), len(others), keys, "(shift, metric) pairs"),
        "alpha": stats.ALPHA,
    }
    return results, family


def flatness_phase(
    plan: protocol.Plan,
    per_seed: Sequence[Mapping[str, Any]],
    folder: Path,
    robustness: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every arm's winners' flatness, per model (figures ``flatness-<model>-winner.png`` and
    ``-converged.png``), and with robustness its link to the robustness drops
    (``flatness-robustness-<model>.png``). Returns ``({model: flatness}, {model: link})``."""
    rule, knobs = split_settings(plan.base.get("flatness_settings"))
    flat: dict[str, Any] = {}
    links: dict[str, Any] = {}
    for model in plan.models:
        records = checkpoint_records(per_seed, model)
        config = plan.arm(model, "plain").config
        flat[model] = study_flatness(records, config, rule, knobs, plan.strategies, LABELS)
        paths = {"model": model, "dataset": plan.dataset}
        write_flatness(flat[model], folder, paths, knobs["draws"], f"flatness-{slug(model)}", False)
        if robustness is not None:
            links[model] = flatness_vs_robustness(flat[model], robustness[model])
            write_flatness_robustness(
                links[model], folder, f"flatness-robustness-{slug(model)}.png", LABELS
            )
    return flat, links


def run_compare(
    models: Sequence[str],
    strategies: Sequence[str],
    dataset: str,
    n_seeds: int,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    robustness: bool = False,
    flatness: bool = False,
    output: Path | None = None,
    dry_run: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) a comparison study of ``models`` x ``strategies`` (plain first); write
    its report, table and figures into the study folder (and ``output``, when given) and return
    the report. ``dry_run`` prints what would be trained and writes nothing."""
    plan = protocol.load_compare(models, strategies, dataset, n_seeds, config_files, overrides)
    if output is not None:
        check_output(output)
    if flatness:
        check_settings(plan.base.get("flatness_settings") or {})
    if dry_run:
        for seed in plan.seeds:
            for arm in plan.arms:
                plan_grid(arm.grid(seed))
        return None
    folder = plan.folder
    protocol.write_compare_file(plan)
    start = time.perf_counter()
    per_arm = "; ".join(
        f"{arm.label} {arm.trials}" + (f" ({arm.replicas} replicas)" if arm.replicas > 1 else "")
        for arm in plan.arms
    )
    print(
        f"Comparison study on {dataset}: {len(plan.models)} model(s) x {len(plan.strategies)} "
        f"strategies x {len(plan.seeds)} seed(s), {plan.budget} budget; combinations per seed: "
        f"{per_arm}; {plan.trials} in all; folder {folder}"
    )
    with tqdm(total=plan.trials, desc="study trials", unit="trial", disable=None) as bar:
        outcomes = train_grids(plan.grids(), quiet=True, on_trial=lambda row: bar.update(1))
    seconds = {"training": time.perf_counter() - start}
    setup_logging()
    rows = {model: train_rows(plan.arm(model, "plain").config) for model in plan.models}
    per_seed = []
    for s_index, seed in enumerate(plan.seeds):
        for model in plan.models:
            arms = {}
            for a_index, arm in enumerate(plan.arms):
                if arm.model == model:
                    outcome = outcomes[plan.outcome_index(s_index, a_index)]
                    arms[arm.strategy] = protocol.arm_record(seed, arm, outcome, rows[model])
            per_seed.append({"seed": seed, "model": model, "arms": arms})
    base = plan.base
    metrics = [f"{m.lower()}@{k}" for m in base["metrics"] for k in base["topk"]]
    found, family = comparisons(plan, per_seed, metrics)
    report: dict[str, Any] = {
        "kind": "compare",
        "models": plan.models,
        "strategies": plan.strategies,
        "dataset": dataset,
        "synthetic": dataset == EMBEDDED_NAME,
        "seeds": plan.seeds,
        "budget": plan.budget,
        "selection": "validation",
        "metrics": metrics,
        "metrics_shown": headline_metrics(base),
        "arms": [
            {
                "name": arm.name,
                "label": arm.label,
                "model": arm.model,
                "strategy": arm.strategy,
                "combinations": arm.combos,
                "candidates": arm.candidates,
                "replicas": arm.replicas,
                "trials_per_seed": arm.trials,
                "planned_passes_per_seed": arm.cost * arm.replicas,
            }
            for arm in plan.arms
        ],  # fmt: skip
        "train_rows": rows,
        "per_seed": per_seed,
        "comparisons": found,
        "family": {"accuracy": family},
        "cost": cost_summary(plan, per_seed),
    }
    robust_results = None
    if robustness:
        phase = time.perf_counter()
        robust_results, robust_family = robustness_phase(plan, per_seed)
        report["robustness"] = robust_results
        report["family"]["robustness"] = robust_family
        seconds["robustness"] = time.perf_counter() - phase
    if flatness:
        phase = time.perf_counter()
        report["flatness"], links = flatness_phase(plan, per_seed, folder, robust_results)
        if links:
            report["flatness_vs_robustness"] = links
        seconds["flatness"] = time.perf_counter() - phase
    seconds["total"] = time.perf_counter() - start
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    write_compare_report(report, folder)
    if output is not None:
        write_output(output, report)
    return report
