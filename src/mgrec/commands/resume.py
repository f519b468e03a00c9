"""``--resume CKPT``: evaluate a checkpoint on valid and test, and compare with what it stored.

An mgrec checkpoint brings its own config, its best epoch's metrics and its scoring state (see
``Recommender.scoring_state``): it is scored exactly as the run that wrote it scored, so the
recomputed metrics equal the stored ones; one line says whether they do, and when they differ
both are printed with the cause found. Its checksum is verified first (``checkpoint.read``): a
damaged file is one line and is not evaluated. A bare reference state_dict is built with the
model's YAML defaults (the first value of each grid key), scored from its parameters, and noted
as unverified (it carries no checksum and no metrics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrec import checkpoint, report
from mgrec import config as configuration
from mgrec.atomic import write_point
from mgrec.commands.output import check_output, metrics_payload, write_output
from mgrec.data.synthetic import EMBEDDED_NAME
from mgrec.errors import UserError
from mgrec.experiment import Restored, check_combination, restore
from mgrec.provenance import code_fingerprint
from mgrec.runs.logs import setup_logging

QUICK_EVAL_METRICS = ("recall@5", "precision@5", "map@5", "ndcg@5")
# Settings that change what the metrics measure, or how the scores are made.
EVALUATION_KEYS = ("topk", "metrics", "test_mask_valid", "fresh_eval")
SPLITS = ("valid", "test")


def resume_combo(
    path: Path,
    model: str,
    dataset: str,
    mg: bool,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    named: tuple[str | None, str | None] = (None, None),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint's payload (verified: see ``checkpoint.read``) and the combination to
    evaluate it with. ``model`` and ``dataset`` build a bare state_dict; ``named`` are the model
    and dataset the user named (None: not given): an mgrec checkpoint must hold the model named,
    and is evaluated on its own dataset unless another is named."""
    stored = checkpoint.read(path)
    saved = stored.get("config")
    named_model, named_dataset = named
    if saved is not None:
        if named_model is not None and named_model != saved.get("model"):
            raise UserError(
                f"{path}: this checkpoint holds a {saved.get('model')} model, not {named_model}"
            )
        return stored, configuration.checkpoint_config(
            saved, named_dataset, config_files, overrides
        )
    base = configuration.load_config(
        model, dataset, mg=mg, config_files=config_files, overrides=overrides
    )
    return stored, configuration.grid(base)[0]


def difference_causes(restored: Restored, combo: Mapping[str, Any]) -> list[str]:
    """Why recomputed metrics may differ from the ones a checkpoint stored (none found: [])."""
    stored = restored.stored
    saved = stored.get("config") or {}
    causes = []
    if combo.get("dataset") != stored.get("dataset"):
        causes.append(
            f"evaluated on {combo.get('dataset')}, but its metrics are from {stored.get('dataset')}"
        )
    elif restored.experiment.inputs != stored.get("inputs"):
        recorded, now = stored.get("inputs") or {}, restored.experiment.inputs
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        causes.append(f"the data files changed since it was trained ({', '.join(changed)})")
    changed_settings = [
        f"{k} {saved.get(k)!r} -> {combo.get(k)!r}"
        for k in EVALUATION_KEYS
        if k in saved and saved.get(k) != combo.get(k)
    ]
    if changed_settings:
        causes.append(f"evaluation settings differ from the run's ({', '.join(changed_settings)})")
    if "scoring" not in stored:
        causes.append(
            "the checkpoint holds no scoring state (an older mgrec's), so it was scored from its "
            "parameters, not from what the run scored with (a cached representation, a random "
            "neighbour draw)"
        )
    code = code_fingerprint(str(combo["model"]))
    if stored.get("code") not in (None, code):
        causes.append(
            f"the model's code changed since it was trained ({stored.get('code')} -> {code})"
        )
    return causes


def compare(
    recomputed: Mapping[str, Mapping[str, float]], stored: Mapping[str, Any] | None
) -> tuple[int, int, list[str]]:
    """``(differing, compared, names)``: how many figures of ``recomputed`` differ from
    ``stored`` (exactly), how many were compared, and the first differing ones (``split
    metric``)."""
    differing, compared, names = 0, 0, []
    for split in SPLITS:
        before = (stored or {}).get(split) or {}
        for metric, value in recomputed[split].items():
            if metric not in before:
                continue
            compared += 1
            old = before[metric]
            same = old == value or (math.isnan(old) and math.isnan(value))
            if not same:
                differing += 1
                names.append(f"{split} {metric} {old:.4f} -> {value:.4f}")
    return differing, compared, names


def evaluate_checkpoint(
    path: Path,
    stored: Mapping[str, Any],
    combo: Mapping[str, Any],
    output: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``stored`` (read from ``path``) built as ``combo``, scored as the run that wrote
    it scored; print the results and how they compare with the stored metrics, and write
    ``output``. Returns ``{"valid": ..., "test": ...}``."""
    setup_logging()
    check_combination(combo)
    if output is not None:
        check_output(output)
    restored = restore(stored, combo, str(path), as_stored=True)
    experiment, model = restored.experiment, restored.model
    results = {split: experiment.evaluate(model, split) for split in SPLITS}
    print("\t".join(QUICK_EVAL_METRICS))
    print("\t".join(f"{results['test'][m]:.4f}" for m in QUICK_EVAL_METRICS))
    print()
    if combo["dataset"] == EMBEDDED_NAME:
        print(f"Note: {report.SYNTHETIC_NOTE}.")
    if not stored.get("verified"):
        print(
            f"Note: {path} carries no checksum (a state_dict from elsewhere, or a checkpoint of "
            "an older mgrec), so it could not be verified."
        )
    rule = experiment.evaluators["test"].mask_rule
    print(f"{combo['model']} checkpoint {path} on {combo['dataset']} ({report.MASK_RULES[rule]}):")
    print(report.metric_table(results, combo["topk"], combo["metrics"]))
    metrics = stored.get("metrics")
    differing, compared, names = compare(results, metrics)
    epoch = stored.get("best_epoch")
    at = f" (best epoch {epoch})" if epoch is not None else ""
    if not compared:
        print("Stored metrics: none in this file (a bare state_dict), so nothing to compare.")
    elif not differing:
        print(f"Stored metrics{at}: all {compared} figures match the recomputed ones exactly.")
    else:
        causes = difference_causes(restored, combo) or [
            "none found (same data, settings and code: floating-point differences of another "
            "device, thread count or library version?)"
        ]
        shown = "; ".join(names[:3]) + ("; ..." if len(names) > 3 else "")
        print(
            f"Stored metrics{at}: {differing} of {compared} figures differ from the recomputed "
            f"ones ({shown}); cause: {'; '.join(causes)}."
        )
        assert metrics is not None
        rows = {}
        for split in SPLITS:
            rows[f"{split} (stored)"] = metrics.get(split) or {}
            rows[f"{split} (now)"] = results[split]
        print(report.metric_table(rows, combo["topk"], combo["metrics"]))
    if output is not None:
        with write_point(
            output,
            "the checkpoint is evaluated (its figures are printed above), but --output is not "
            "written; re-running the command writes it",
        ):
            write_output(output, metrics_payload(results["valid"], results["test"], rule))
    return results
