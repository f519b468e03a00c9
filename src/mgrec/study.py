"""Does Mirror Gradient help? Seeded studies of MG against plain training with equal budgets.

For each study seed s (the config's first seed, then s+1, s+2, ...):

- the **MG arm** tunes the model's grid times MG's grid (alpha1 x alpha2 x beta: |G| x |A|
  trained combinations, all with seed s);
- the **no-MG arm** tunes the model's grid. Under the equal budget (``study_budget: equal``, the
  default) every grid point is trained |A| times, from the seeds s, s + 1000, s + 2000, ..., so
  both arms train |G| x |A| models and choose among as many candidates. ``study_budget:
  reference`` gives it one replica (|G| models), as the paper's tables did.

Both arms select their winner **by validation**; the study reports each winner's test metrics per
seed, the per-arm mean and std, and the paired difference MG - no-MG with a 95 % t interval, a
paired t-test and a Wilcoxon signed-rank test. Beside it, labelled, what the reference's protocol
would have reported from the same runs: winners selected **by test**, no-MG limited to its first
replica (the unequal budget).

Every trial is one grid combination of ``runner.train_grid``: its config in, its results line and
checkpoint out, persisted when it finishes, so a re-run resumes and trials could be spread over
processes or machines.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgrec import config as configuration
from mgrec import runner
from mgrec.analysis import stats
from mgrec.data.synthetic import EMBEDDED_NAME
from mgrec.errors import UserError
from mgrec.paths import project_path

REPLICA_STRIDE = 1000  # seed offset between the no-MG arm's replicas
MG_GRID_KEYS = ("alpha1", "alpha2", "beta")
REPORTED = ("recall@5", "recall@20", "ndcg@5", "ndcg@20")  # per-seed table and plot
FLATNESS_SETTINGS = {
    "rhos": (0.01, 0.02, 0.05, 0.1),  # relative perturbation sizes for sharpness
    "draws": 10,  # random perturbations per rho
    "alphas": tuple(round(float(a), 2) for a in np.linspace(-1.0, 1.0, 21)),  # 1-D curve points
    "iterations": 20,  # power-iteration steps for the top Hessian eigenvalue
}


def study_folder(
    mg_config: Mapping[str, Any], plain_config: Mapping[str, Any], seeds: Sequence[int], budget: str
) -> Path:
    identity = hashlib.sha1(
        json.dumps(
            [
                configuration.identity(mg_config),
                configuration.identity(plain_config),
                list(seeds),
                budget,
            ]
        ).encode()
    ).hexdigest()[:10]
    name = f"study-mg-{mg_config['model']}-{identity}"
    return project_path(mg_config["results_dir"]) / str(mg_config["dataset"]) / name


def _epoch_seconds(results: Sequence[Mapping[str, Any]]) -> float:
    """Mean training seconds per epoch over the finished combinations' metrics files."""
    seconds = []
    for result in results:
        path = Path(result["folder"]) / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                seconds.append(json.loads(line)["train_seconds"])
    return float(np.mean(seconds)) if seconds else math.nan


def run_study(
    model: str,
    dataset: str,
    n_seeds: int,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    robustness: bool = False,
    flatness: bool = False,
) -> dict[str, Any]:
    """Run (or resume) an MG study; write its report into the study folder and return it."""
    if n_seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {n_seeds}")
    mg_base = configuration.load_config(
        model, dataset, mg=True, config_files=config_files, overrides=overrides
    )
    plain_base = configuration.load_config(
        model, dataset, mg=False, config_files=config_files, overrides=overrides
    )
    budget = str(mg_base.get("study_budget", "equal"))
    if budget not in ("equal", "reference"):
        raise UserError(f"config key 'study_budget' must be 'equal' or 'reference', got {budget!r}")
    first_seed = configuration.grid_values(mg_base, "seed")[0]
    seeds = [int(first_seed) + i for i in range(n_seeds)]
    mg_candidates = math.prod(len(configuration.grid_values(mg_base, key)) for key in MG_GRID_KEYS)
    replicas = mg_candidates if budget == "equal" else 1
    mg_combos = configuration.grid({**mg_base, "seed": seeds[0]})  # one seed's trials per arm
    plain_combos = configuration.grid({**plain_base, "seed": seeds[0]})
    for combo in mg_combos + plain_combos:
        configuration.validate(combo)
        runner.model_class(model).check_config(combo)
    folder = study_folder(mg_base, plain_base, seeds, budget)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_seed = []
    print(
        f"MG study of {model} on {dataset}: {n_seeds} seed(s); per seed, MG trains "
        f"{len(mg_combos)} combinations and no-MG {len(plain_combos) * replicas} ({budget} budget); "
        f"folder {folder}"
    )
    for seed in tqdm(seeds, desc="study seeds", unit="seed"):
        mg_run = runner.train_grid({**mg_base, "seed": [seed]}, quiet=True)
        plain_seeds = [seed + k * REPLICA_STRIDE for k in range(replicas)]
        plain_run = runner.train_grid({**plain_base, "seed": plain_seeds}, quiet=True)
        if mg_run["by_valid"] is None or plain_run["by_valid"] is None:
            raise UserError(f"seed {seed}: an arm finished no combination with a validation result")
        first_replica = [r for r in plain_run["results"] if r["params"]["seed"] == seed]
        per_seed.append(
            {
                "seed": seed,
                "mg": mg_run["by_valid"]["test"],
                "plain": plain_run["by_valid"]["test"],
                "mg_params": mg_run["by_valid"]["params"],
                "plain_params": plain_run["by_valid"]["params"],
                "mg_checkpoint": mg_run["by_valid"]["checkpoint"],
                "plain_checkpoint": plain_run["by_valid"]["checkpoint"],
                "reference_protocol": {
                    "mg": runner.pick_winner(
                        mg_run["results"], "test", mg_base["valid_metric"].lower()
                    )["test"],
                    "plain": runner.pick_winner(
                        first_replica, "test", mg_base["valid_metric"].lower()
                    )["test"],
                },
                "epoch_seconds": {
                    "mg": _epoch_seconds(mg_run["results"]),
                    "plain": _epoch_seconds(plain_run["results"]),
                },
                "runs": {"mg": mg_run["run_dir"], "plain": plain_run["run_dir"]},
            }
        )
    runner.setup_logging(None)
    metrics = [f"{m.lower()}@{k}" for m in mg_base["metrics"] for k in mg_base["topk"]]
    report = {
        "model": model,
        "dataset": dataset,
        "synthetic": dataset == EMBEDDED_NAME,
        "seeds": seeds,
        "budget": budget,
        "candidates_per_arm": {"mg": mg_candidates, "plain_replicas": replicas},
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
        "seconds": round(time.perf_counter() - start, 1),
    }
    if robustness:
        from mgrec import robustness as robust

        report["robustness"] = robust.run(per_seed, folder)
    if flatness:
        from mgrec.analysis import flatness as flat_analysis  # noqa: F401  (imported on demand)

        report["flatness"] = study_flatness(per_seed, folder)
    write_report(report, folder)
    return report


def study_flatness(per_seed: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, Any]:
    """Flatness measures of every seed's MG and no-MG winners (see ``mgrec.analysis.flatness``)."""
    from mgrec import robustness as robust
    from mgrec.analysis import flatness

    results: dict[str, Any] = {}
    for record in per_seed:
        for arm in ("plain", "mg"):
            model, batches = robust.load_for_analysis(
                record[f"{arm}_checkpoint"], seed=record["seed"]
            )
            label = f"{'MG' if arm == 'mg' else 'no-MG'} seed {record['seed']}"
            results[label] = flatness.analyse(
                model, batches, seed=record["seed"], **FLATNESS_SETTINGS
            )
    flatness.plot(
        results, folder / "flatness.png", title="Validation winners: sharpness and 1-D loss curves"
    )
    (folder / "flatness.json").write_text(
        json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return results


def _fmt(value: float | None, places: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{places}f}"
    )


def write_report(report: Mapping[str, Any], folder: Path) -> None:
    """report.md, report.json and seeds.png in the study folder; the markdown is also printed."""
    seeds = report["per_seed"]
    lines = [f"# Does Mirror Gradient help {report['model']} on {report['dataset']}?", ""]
    if report["synthetic"]:
        lines += [f"Note: {runner.SYNTHETIC_NOTE}.", ""]
    budget = report["budget"]
    lines += [
        f"Protocol (ours): {len(seeds)} seeds; per seed each arm tunes its grid and keeps its winner by "
        f"**validation**; test metrics of that winner. Budget: **{budget}** "
        + (
            f"(no-MG trains every grid point {report['candidates_per_arm']['plain_replicas']} times from "
            "different seeds, so both arms train as many models)."
            if budget == "equal"
            else "(no-MG trains each grid point once: MG gets more candidates, as in the paper)."
        ),
        "",
        "## Per seed (test metrics of each arm's validation winner)",
        "",
        "| seed | "
        + " | ".join(f"no-MG {m}" for m in REPORTED)
        + " | "
        + " | ".join(f"MG {m}" for m in REPORTED)
        + " |",
        "|---" * (1 + 2 * len(REPORTED)) + "|",
    ]
    for record in seeds:
        cells = [_fmt(record["plain"].get(m)) for m in REPORTED] + [
            _fmt(record["mg"].get(m)) for m in REPORTED
        ]
        lines.append(f"| {record['seed']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## MG - no-MG across seeds (paired; 95 % t interval; paired t-test; Wilcoxon signed-rank)",
        "",
        stats.markdown_table(report["comparison"]),
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
        + f". Whole study: {report['seconds']} s.",
        "",
    ]
    if "robustness" in report:
        lines += [
            "## Robustness under feature shift (our protocol)",
            "",
            report["robustness"]["markdown"],
            "",
        ]
    if "flatness" in report:
        lines += ["## Flatness", "", "See `flatness.json` and `flatness.png`.", ""]
    text = "\n".join(lines)
    (folder / "report.md").write_text(text, encoding="utf-8")
    (folder / "report.json").write_text(
        json.dumps(report, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
    )
    stats.plot_seeds(
        [{"seed": r["seed"], "mg": r["mg"], "plain": r["plain"]} for r in seeds],
        list(REPORTED),
        folder / "seeds.png",
        f"{report['model']} on {report['dataset']}: test metrics per seed (validation-selected)",
    )
    print(text)
    print(f"study report, JSON and plots: {folder}")
