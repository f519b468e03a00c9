"""The flatness of a study's winners (``mgrec.analysis.flatness``) and its link to their
robustness: is a flatter winner a more robust one?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgrec import checkpoint, experiment
from mgrec import config as configuration
from mgrec.analysis import flatness, stats
from mgrec.errors import UserError
from mgrec.study.continuation import CONVERGE, continue_to_plateau

FLATNESS_MEASURES = ("lambda_max", "lambda_min", "trace", "sharpness_mean", "sharpness_worst")


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse unknown keys in ``flatness_settings`` before anything is trained."""
    if not isinstance(settings, Mapping):
        raise UserError(f"flatness_settings must be a mapping, got {settings!r}")
    known = {*flatness.SETTINGS, *CONVERGE}
    for key in settings:
        if key not in known:
            raise UserError(
                f"flatness_settings: unknown key '{key}'{configuration.closest(key, known)}; "
                f"known: {', '.join(sorted(known))}"
            )


def split_settings(settings: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``flatness_settings`` as (the continuation's rule, the measures' knobs), defaults filled
    in (``CONVERGE``, ``flatness.SETTINGS``)."""
    given = dict(settings or {})
    rule = {**CONVERGE, **{k: given.pop(k) for k in list(given) if k in CONVERGE}}
    return rule, {**flatness.SETTINGS, **given}


ARM_NAMES = {"plain": "no-MG", "mg": "MG", "sam": "SAM", "asam": "ASAM"}


def study_flatness(
    per_seed: Sequence[Mapping[str, Any]],
    paths: Mapping[str, Any],
    rule: Mapping[str, Any],
    knobs: Mapping[str, Any],
    arms: Sequence[str] = ("plain", "mg"),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Flatness of every seed's winners of ``arms`` (records with ``seed`` and
    ``<arm>_checkpoint``; MG and no-MG by default) at two points: the validation winner as
    saved ("winner") and the same run continued on its training loss to a plateau
    ("converged", ``continue_to_plateau`` under ``rule``), on the same fixed batches with the
    same K draws of training randomness (the measures' ``knobs``).

    Returns ``{label: {"arm", "seed", "checkpoint", "winner", "converged"}}``, labels such as
    "MG seed 3" (``labels`` name the arms; the arms in order for each seed).
    """
    names = labels or ARM_NAMES
    results: dict[str, Any] = {}
    total = len(arms) * len(per_seed)
    with tqdm(total=total, desc="flatness", unit="checkpoint", disable=None) as bar:
        for record in per_seed:
            for arm in arms:
                checkpoint_path = record[f"{arm}_checkpoint"]
                stored = checkpoint.read(Path(checkpoint_path))
                combo = experiment.checkpoint_combo(stored, paths)
                restored = experiment.restore(stored, combo, str(checkpoint_path))
                built, model = restored.experiment, restored.model
                batches = flatness.fixed_batches(
                    built.batches, int(knobs["batches"]), record["seed"]
                )
                label = f"{names.get(arm, arm)} seed {record['seed']}"
                winner = flatness.analyse(model, batches, record["seed"], **knobs)
                continued = continue_to_plateau(built, model, combo, record["seed"], rule)
                converged = flatness.analyse(model, batches, record["seed"], **knobs)
                results[label] = {
                    "arm": arm, "seed": record["seed"], "checkpoint": checkpoint_path,
                    "winner": winner, "converged": {**converged, "continued": continued},
                }  # fmt: skip
                bar.update(1)
    return results


def flatness_vs_robustness(
    flat: Mapping[str, Any], robust_result: Mapping[str, Any], point: str = "winner"
) -> dict[str, Any]:
    """Per checkpoint (seed x arm): its flatness measures at ``point`` beside its robustness
    drops (mean relative drop of the headline metric over the noise shifts and over the
    information-adjustment shifts), and their Spearman rank correlations with permutation
    p-values. The link "flatter -> more robust", tested on the study's own checkpoints.

    Returns ``{"point", "metric", "sharpness_rho", "pairs", "correlations"}``.
    """
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
    rhos = flat[next(iter(flat))][point]["rho"]
    return {
        "point": point,
        "metric": metric,
        "sharpness_rho": rhos[len(rhos) // 2],
        "pairs": pairs,
        "correlations": table,
    }
