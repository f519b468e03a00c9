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

from mgrec import atomic, experiment, runner
from mgrec import config as configuration
from mgrec.analysis import stats
from mgrec.data.synthetic import EMBEDDED_NAME
from mgrec.errors import UserError
from mgrec.experiment import Experiment, check_combination
from mgrec.models import Recommender
from mgrec.paths import project_path
from mgrec.report import SYNTHETIC_NOTE, headline_metrics, pick_winner
from mgrec.trainer import Trainer

REPLICA_STRIDE = 1000  # seed offset between the no-MG arm's replicas
MG_GRID_KEYS = ("alpha1", "alpha2", "beta")


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


def _winner(results: Sequence[Mapping[str, Any]], split: str, config: Mapping[str, Any]) -> Any:
    winner = pick_winner(results, split, str(config["valid_metric"]).lower())
    if winner is None:
        raise UserError(f"no combination of the study has a {split} result")
    return winner["test"]


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
        check_combination(combo)
    if output is not None:
        runner.check_output(output)
    if flatness:
        check_flatness_settings(mg_base.get("flatness_settings") or {})
    if dry_run:
        for seed in seeds:
            runner.dry_run({**mg_base, "seed": [seed]})
            runner.dry_run(
                {**plain_base, "seed": [seed + k * REPLICA_STRIDE for k in range(replicas)]}
            )
        return None
    folder = study_folder(mg_base, plain_base, seeds, budget)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_seed = []
    per_seed_trials = len(mg_combos) + len(plain_combos) * replicas
    print(
        f"MG study of {model} on {dataset}: {n_seeds} seed(s); per seed, MG trains "
        f"{len(mg_combos)} combinations and no-MG {len(plain_combos) * replicas} ({budget} budget); "
        f"folder {folder}"
    )
    grids = []
    for seed in seeds:  # every seed's two arms, trained together (in parallel with executor ray)
        grids.append({**mg_base, "seed": [seed]})
        grids.append({**plain_base, "seed": [seed + k * REPLICA_STRIDE for k in range(replicas)]})
    with tqdm(
        total=per_seed_trials * n_seeds, desc="study trials", unit="trial", disable=None
    ) as bar:
        outcomes = runner.train_grids(grids, quiet=True, on_trial=lambda row: bar.update(1))
    seconds = {"training": time.perf_counter() - start}
    for index, seed in enumerate(seeds):
        mg_run, plain_run = outcomes[2 * index], outcomes[2 * index + 1]
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
                    "mg": _winner(mg_run["results"], "test", mg_base),
                    "plain": _winner(first_replica, "test", mg_base),
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
    report: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "metrics_shown": headline_metrics(mg_base),
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
    }
    if robustness:
        from mgrec import robustness as robust

        phase = time.perf_counter()
        report["robustness"] = robust.run(per_seed, folder, mg_base)
        seconds["robustness"] = time.perf_counter() - phase
    if flatness:
        phase = time.perf_counter()
        settings = mg_base.get("flatness_settings") or {}
        report["flatness"] = study_flatness(per_seed, folder, mg_base, settings)
        if robustness:
            report["flatness_vs_robustness"] = flatness_vs_robustness(
                report["flatness"], report["robustness"], folder
            )
        seconds["flatness"] = time.perf_counter() - phase
    seconds["total"] = time.perf_counter() - start
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    write_report(report, folder)
    if output is not None:
        runner.write_output(output, report)
    return report


CONVERGE = {
    "max_epochs": 50,  # training continued for at most this many epochs ...
    "window": 3,  # ... until the epoch loss fell by less than
    "tol": 1e-3,  # tol (relative) over the last `window` epochs
}


def continue_to_plateau(
    built: Experiment,
    model: Recommender,
    combo: Mapping[str, Any],
    seed: int,
    rule: Mapping[str, Any],
) -> dict[str, Any]:
    """Continue training ``model`` with its combination's own procedure (optimizer, learning rate
    schedule, MG setting and training-time randomness; a fresh optimizer state) until the epoch
    training loss plateaus: the first epoch e >= window with (L[e - window] - L[e]) / |L[e -
    window]| < tol, or after max_epochs. Returns the rule and the epoch losses."""
    from mgrec.rng import init_seed

    init_seed(seed)
    built.batches.seed(seed)
    trainer = Trainer(model, combo)
    window, tol = int(rule["window"]), float(rule["tol"])
    losses: list[float] = []
    for _ in range(int(rule["max_epochs"])):
        model.pre_epoch_processing()
        losses.append(trainer.train_epoch(built.batches))
        trainer.scheduler.step()
        if len(losses) > window:
            before = losses[-1 - window]
            if not math.isfinite(losses[-1]) or (before - losses[-1]) < tol * abs(before):
                break
    model.prepare_scoring()
    return {
        **dict(rule),
        "epochs": len(losses),
        "losses": losses,
        "plateau": len(losses) < int(rule["max_epochs"]),
    }


def check_flatness_settings(settings: Mapping[str, Any]) -> None:
    """Refuse unknown keys in ``flatness_settings`` before anything is trained."""
    from mgrec.analysis import flatness

    if not isinstance(settings, Mapping):
        raise UserError(f"flatness_settings must be a mapping, got {settings!r}")
    known = {*flatness.SETTINGS, *CONVERGE}
    for key in settings:
        if key not in known:
            raise UserError(
                f"flatness_settings: unknown key '{key}'{configuration.closest(key, known)}; "
                f"known: {', '.join(sorted(known))}"
            )


def study_flatness(
    per_seed: Sequence[Mapping[str, Any]],
    folder: Path,
    paths: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Flatness of every seed's MG and no-MG winners at two points: the validation winner as
    saved ("winner") and the same run continued on its training loss to a plateau
    ("converged", see ``continue_to_plateau``), on the same fixed batches with the same K draws
    of training randomness (``mgrec.analysis.flatness``). Writes flatness.json and the plots."""
    from mgrec import robustness as robust
    from mgrec.analysis import flatness

    given = dict(settings or {})
    rule = {**CONVERGE, **{k: given.pop(k) for k in list(given) if k in CONVERGE}}
    knobs = {**flatness.SETTINGS, **given}
    results: dict[str, Any] = {}
    with tqdm(total=2 * len(per_seed), desc="flatness", unit="checkpoint", disable=None) as bar:
        for record in per_seed:
            for arm in ("plain", "mg"):
                checkpoint_path = record[f"{arm}_checkpoint"]
                stored, combo = robust.load_checkpoint(checkpoint_path, paths)
                built = experiment.build(combo)
                model = built.build_model(stored["state_dict"], str(checkpoint_path))
                model.prepare_scoring()
                batches = flatness.fixed_batches(
                    built.batches, int(knobs["batches"]), record["seed"]
                )
                label = f"{'MG' if arm == 'mg' else 'no-MG'} seed {record['seed']}"
                winner = flatness.analyse(model, batches, record["seed"], **knobs)
                continued = continue_to_plateau(built, model, combo, record["seed"], rule)
                converged = flatness.analyse(model, batches, record["seed"], **knobs)
                results[label] = {
                    "arm": arm, "seed": record["seed"], "checkpoint": checkpoint_path,
                    "winner": winner, "converged": {**converged, "continued": continued},
                }  # fmt: skip
                bar.update(1)
    for point in ("winner", "converged"):
        flatness.plot(
            {label: r[point] for label, r in results.items()}, folder / f"flatness-{point}.png",
            title=f"{paths['model']} on {paths['dataset']}: flatness at the {point} points (K = {knobs['draws']} draws)",
        )  # fmt: skip
    atomic.write_text(
        folder / "flatness.json", json.dumps(results, indent=2, allow_nan=False) + "\n"
    )
    return results


FLATNESS_MEASURES = ("lambda_max", "lambda_min", "trace", "sharpness_mean", "sharpness_worst")


def flatness_vs_robustness(
    flat: Mapping[str, Any], robust_result: Mapping[str, Any], folder: Path, point: str = "winner"
) -> dict[str, Any]:
    """Per checkpoint (seed x arm): its flatness measures at ``point`` beside its robustness
    drops (mean relative drop of the headline metric over the noise shifts and over the
    information-adjustment shifts), and their Spearman rank correlations with permutation
    p-values. The link "flatter -> more robust", tested on the study's own checkpoints."""
    metric = robust_result["metrics"][0]
    drops: dict[tuple[int, str], dict[str, list[float]]] = {}
    for row in robust_result["rows"]:
        value = row.get(f"{metric} drop")
        if row["kind"] != "clean" and value is not None:
            drops.setdefault((row["seed"], row["arm"]), {}).setdefault(row["kind"], []).append(
                value
            )
    pairs = []
    for record in flat.values():
        result = record[point]
        middle = len(result["rho"]) // 2
        measures = {
            "lambda_max": result["lambda_max"], "lambda_min": result["lambda_min"],
            "trace": result["trace"], "sharpness_mean": result["sharpness_mean"][middle],
            "sharpness_worst": result["sharpness_worst"][middle],
        }  # fmt: skip
        mine = drops.get((record["seed"], record["arm"]), {})
        pairs.append({
            "seed": record["seed"], "arm": record["arm"], **measures,
            **{f"{kind} drop": float(np.mean(v)) for kind, v in mine.items()},
        })  # fmt: skip
    table = []
    for measure in FLATNESS_MEASURES:
        for kind in ("noise", "adjust"):
            usable = [p for p in pairs if f"{kind} drop" in p]
            test = stats.spearman_permutation(
                [p[measure] for p in usable], [p[f"{kind} drop"] for p in usable], seed=0
            )
            table.append({"measure": measure, "robustness": f"{kind} drop", **test})
    rho_at = flat[next(iter(flat))][point]["rho"][len(flat[next(iter(flat))][point]["rho"]) // 2]
    result = {
        "point": point,
        "metric": metric,
        "sharpness_rho": rho_at,
        "pairs": pairs,
        "correlations": table,
    }
    _plot_pairs(pairs, folder / "flatness-robustness.png", metric, rho_at)
    return result


def _plot_pairs(pairs: Sequence[Mapping[str, Any]], path: Path, metric: str, rho: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mgrec.report import save_figure

    fig, axes = plt.subplots(
        2, len(FLATNESS_MEASURES), figsize=(3.2 * len(FLATNESS_MEASURES), 6), dpi=100
    )
    for row, kind in enumerate(("noise", "adjust")):
        for col, measure in enumerate(FLATNESS_MEASURES):
            axis = axes[row][col]
            for arm, color in (("plain", "tab:blue"), ("mg", "tab:orange")):
                mine = [p for p in pairs if p["arm"] == arm and f"{kind} drop" in p]
                axis.scatter([p[measure] for p in mine], [100 * p[f"{kind} drop"] for p in mine],
                             color=color, label="MG" if arm == "mg" else "no-MG", s=18)  # fmt: skip
            axis.set_xlabel(
                measure + (f" (rho {rho})" if measure.startswith("sharpness") else ""), fontsize=8
            )
            if col == 0:
                axis.set_ylabel(f"{metric} drop, {kind} (%)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Flatness (validation winners) against robustness, per checkpoint", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(value: float | None, places: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{places}f}"
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
