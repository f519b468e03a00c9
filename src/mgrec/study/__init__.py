"""Does Mirror Gradient help? Seeded studies of MG against plain training with equal budgets
(``run_study``, ``mgrec --study mg``), and of several models and strategies at once
(``compare.run_compare``, ``mgrec --study compare``).

``run_study`` (``mgrec --study mg``) trains, for every study seed, both arms of the protocol
(``protocol``: arms, seeds, equal or reference budget, the study folder) as grids of
``runs.train.train_grids``: each trial is one grid combination, its config in, its results line and
checkpoint out, persisted when it finishes, so a re-run resumes and trials can be spread over
processes or machines. It then compares the arms' validation winners across seeds
(``mgrec.analysis.stats``: per-arm mean and std, the paired difference MG - no-MG with a 95 %
t interval, a paired t-test and a Wilcoxon signed-rank test), optionally measures their
robustness under feature shift (``robustness``) and the flatness of their training loss
(``flatness``, with ``continuation`` training them on to a plateau), and writes the report
(``report``).
"""

from __future__ import annotations

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
from mgrec.study.compare import run_compare
from mgrec.study.flatness import (
    check_settings,
    flatness_vs_robustness,
    split_settings,
    study_flatness,
)
from mgrec.study.report import (
    write_flatness,
    write_flatness_robustness,
    write_report,
    write_robustness,
)

__all__ = ["run_compare", "run_study"]


def run_study(
    model: str,
    dataset: str,
    n_seeds: int,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    robustness: bool = False,
    flatness: bool = False,
    output: Path | None = None,
    dry_run: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) an MG study; write its report into the study folder (and ``output``,
    when given) and return it. ``dry_run`` prints what would be trained and writes nothing."""
    plan = protocol.load(model, dataset, n_seeds, config_files, overrides)
    if output is not None:
        check_output(output)
    if flatness:
        check_settings(plan.mg.get("flatness_settings") or {})
    if dry_run:
        for seed in plan.seeds:
            plan_grid(plan.mg_grid(seed))
            plan_grid(plan.plain_grid(seed))
        return None
    folder = plan.folder
    protocol.write_study_file(plan)
    start = time.perf_counter()
    print(
        f"MG study of {model} on {dataset}: {n_seeds} seed(s); per seed, MG trains "
        f"{plan.mg_trials} combinations and no-MG {plan.plain_trials} ({plan.budget} budget); "
        f"folder {folder}"
    )
    with tqdm(
        total=(plan.mg_trials + plan.plain_trials) * n_seeds,
        desc="study trials",
        unit="trial",
        disable=None,
    ) as bar:
        outcomes = train_grids(plan.grids(), quiet=True, on_trial=lambda row: bar.update(1))
    seconds = {"training": time.perf_counter() - start}
    per_seed = [
        protocol.seed_record(seed, outcomes[2 * index], outcomes[2 * index + 1], plan.mg)
        for index, seed in enumerate(plan.seeds)
    ]
    setup_logging()
    mg_base = plan.mg
    metrics = [f"{m.lower()}@{k}" for m in mg_base["metrics"] for k in mg_base["topk"]]
    report: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "metrics_shown": headline_metrics(mg_base),
        "synthetic": dataset == EMBEDDED_NAME,
        "seeds": plan.seeds,
        "budget": plan.budget,
        "candidates_per_arm": {"mg": plan.mg_candidates, "plain_replicas": plan.replicas},
        "selection": "validation",
        "per_seed": per_seed,
        "comparison": stats.compare_metrics(per_seed, metrics),
        "reference_protocol": stats.compare_metrics(
            [{"seed": r["seed"], **r["reference_protocol"]} for r in per_seed], metrics
        ),
        "epoch_seconds": {
            arm: float(np.nanmean([r["epoch_seconds"][arm] for r in per_seed]))
            for arm in ("mg", "plain")
        },
    }
    if robustness:
        phase = time.perf_counter()
        report["robustness"] = robust.run(per_seed, mg_base)
        # the paired statistics of the change from clean, corrected over their own family
        report["robustness"]["comparison"] = robust.change_comparisons(report["robustness"], ["mg"])
        write_robustness(report["robustness"], folder, mg_base, len(per_seed))
        seconds["robustness"] = time.perf_counter() - phase
    if flatness:
        phase = time.perf_counter()
        rule, knobs = split_settings(mg_base.get("flatness_settings"))
        report["flatness"] = study_flatness(per_seed, mg_base, rule, knobs)
        write_flatness(report["flatness"], folder, mg_base, knobs["draws"])
        if robustness:
            link = flatness_vs_robustness(report["flatness"], report["robustness"])
            write_flatness_robustness(link, folder)
            report["flatness_vs_robustness"] = link
        seconds["flatness"] = time.perf_counter() - phase
    seconds["total"] = time.perf_counter() - start
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    write_report(report, folder)
    if output is not None:
        write_output(output, report)
    return report
