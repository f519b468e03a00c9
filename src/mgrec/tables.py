"""The paper's table (``mgrec table``): every figure from runs that are comparable, and named.

One figure per cell comes from one **run group**: one run folder (its model, arm, dataset and
every non-grid setting: evaluation rules, top-k, fresh or cached scoring, the training budget)
and one seed. Within a group the reference's protocol applies: the winner over its grid points,
by validation (``--select test``: by test, the reference's own choice, labelled). Where several
groups match a cell (runs with other settings, or several seeds), the table shows one row per
group, labelled with the settings that tell them apart, or, for several seeds, stops and says
how to choose (``--seed``, ``--run``, ``--where key=value``, or ``--study``); it never pools
them. Every row names its run folder.

``mgrec table --study NAME`` tabulates a study instead: each arm's test metrics as mean ± std
over the study's seeds of its validation winners (the study's own rule), the reference's
protocol (selection by test) only when asked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mgrec.config import NON_IDENTITY_KEYS, RECORD_KEYS, STRATEGIES, parse_value
from mgrec.errors import UserError
from mgrec.index import finished_rows, runs, seeds_of, studies
from mgrec.models import registry
from mgrec.report import MASK_RULES, SYNTHETIC_NOTE, pick_winner

PAPER_METRICS = ("recall@5", "precision@5", "map@5", "ndcg@5")
PAPER_LABELS = ("REC@5", "PREC@5", "MAP@5", "NDCG@5")
# How a table names each strategy's row: "VBPR", "VBPR + MG", "VBPR + SAM".
ARM_SUFFIX = {"plain": "", "mg": " + MG", "sam": " + SAM", "asam": " + ASAM"}
# The tables of the Mirror-Gradient README (github.com/Qrange-group/Mirror-Gradient, commit
# 70739786): REC, PREC, MAP, NDCG at 5, each model without and with MG. Values as published;
# the paper's protocol selects its winners on the test split.
PUBLISHED_SOURCE = "the Mirror-Gradient README (Qrange-group/Mirror-Gradient, commit 7073978)"
PUBLISHED: dict[str, dict[tuple[str, bool], tuple[float, float, float, float]]] = {
    "sports": {
        ("VBPR", False): (0.0353, 0.0079, 0.0189, 0.0235),
        ("VBPR", True): (0.0375, 0.0084, 0.0203, 0.0251),
        ("MMGCN", False): (0.0216, 0.0049, 0.0114, 0.0143),
        ("MMGCN", True): (0.0241, 0.0054, 0.0126, 0.0158),
        ("GRCN", False): (0.0360, 0.0080, 0.0196, 0.0241),
        ("GRCN", True): (0.0383, 0.0086, 0.0207, 0.0256),
        ("DualGNN", False): (0.0374, 0.0084, 0.0206, 0.0253),
        ("DualGNN", True): (0.0387, 0.0086, 0.0212, 0.0261),
        ("SLMRec", False): (0.0429, 0.0095, 0.0233, 0.0288),
        ("SLMRec", True): (0.0449, 0.0099, 0.0242, 0.0299),
        ("BM3", False): (0.0353, 0.0078, 0.0194, 0.0238),
        ("BM3", True): (0.0386, 0.0086, 0.0210, 0.0259),
        ("FREEDOM", False): (0.0446, 0.0098, 0.0232, 0.0291),
        ("FREEDOM", True): (0.0466, 0.0102, 0.0242, 0.0303),
        ("DRAGON", False): (0.0449, 0.0098, 0.0239, 0.0296),
        ("DRAGON", True): (0.0465, 0.0102, 0.0248, 0.0307),
    },
    "elec": {
        ("VBPR", False): (0.0182, 0.0042, 0.0098, 0.0122),
        ("VBPR", True): (0.0203, 0.0046, 0.0110, 0.0136),
        ("MMGCN", False): (0.0140, 0.0033, 0.0075, 0.0094),
        ("MMGCN", True): (0.0157, 0.0036, 0.0084, 0.0106),
        ("GRCN", False): (0.0226, 0.0051, 0.0126, 0.0155),
        ("GRCN", True): (0.0250, 0.0057, 0.0139, 0.0171),
        ("DualGNN", False): (0.0238, 0.0054, 0.0132, 0.0162),
        ("DualGNN", True): (0.0249, 0.0056, 0.0139, 0.0170),
        ("BM3", False): (0.0280, 0.0062, 0.0157, 0.0192),
        ("BM3", True): (0.0285, 0.0063, 0.0159, 0.0195),
        ("FREEDOM", False): (0.0252, 0.0056, 0.0139, 0.0171),
        ("FREEDOM", True): (0.0260, 0.0058, 0.0144, 0.0176),
    },
}


@dataclass
class RunGroup:
    """The rows of one run folder (and seed) that a cell's figure may come from."""

    model: str
    mg: bool
    folder: Path
    settings: dict[str, Any]  # the folder's config.yaml, without records and grid keys
    rows: list[dict[str, Any]]
    label: str = ""  # the settings that tell it from the cell's other groups
    strategy: str = ""  # plain, mg, sam, asam (older run.json files: from ``mg``)

    @property
    def seeds(self) -> list[int]:
        return seeds_of(self.rows)


def _settings(folder: Path) -> dict[str, Any]:
    """A run folder's non-grid settings (its config.yaml), for labelling and ``--where``."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    grid_keys = set(config.get("hyper_parameters") or [])
    skipped = {*RECORD_KEYS, *NON_IDENTITY_KEYS, "hyper_parameters", *grid_keys}
    return {k: v for k, v in config.items() if k not in skipped}


def run_groups(
    results_root: Path,
    dataset: str,
    test_mask: str = "train",
    seed: int | None = None,
    run_names: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
) -> list[RunGroup]:
    """The run groups on ``dataset`` with the masking rule ``test_mask``, narrowed to the run
    folders named, the settings of ``where`` and the ``seed``, when given."""
    groups = []
    for record in runs(results_root):
        folder = Path(record["folder"])
        if record["dataset"] != dataset or record.get("test_mask", "train") != test_mask:
            continue
        if run_names and folder.name not in run_names:
            continue
        settings = _settings(folder)
        if where and any(settings.get(k) != v for k, v in where.items()):
            continue
        rows = [r for r in finished_rows(folder) if r.get("valid")]
        if seed is not None:
            rows = [r for r in rows if r.get("params", {}).get("seed") == seed]
        if rows:
            strategy = record.get("strategy") or ("mg" if record["mg"] else "plain")
            groups.append(
                RunGroup(record["model"], bool(record["mg"]), folder, settings, rows, "", strategy)
            )
    return groups


def _label(group: RunGroup, others: Sequence[RunGroup]) -> str:
    """The settings of ``group`` that differ among ``others`` (``epochs=3, fresh_eval=True``)."""
    keys = sorted({k for g in others for k in g.settings})
    differing = [
        k for k in keys if len({json.dumps(g.settings.get(k), default=str) for g in others}) > 1
    ]
    return ", ".join(f"{k}={group.settings.get(k)}" for k in differing) or group.folder.name


def table_models(groups: Sequence[RunGroup]) -> list[str]:
    """The rows of a table: the paper's models in its order, then every other model with a run
    (built-in ones in the registry's order, then the rest by name)."""
    found = {g.model for g in groups}
    others = [m for m in registry.names() if m in found and m not in registry.paper_models()]
    outside = sorted(found - set(registry.names()))
    return [*registry.paper_models(), *others, *outside]


def paper_table(
    results_root: Path,
    dataset: str,
    models: Sequence[str] | None = None,
    select: str = "valid",
    test_mask: str = "train",
    seed: int | None = None,
    run_names: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The paper's table for ``dataset`` from the finished runs under ``results_root``: per
    model and arm, one row per run group (see the module's docstring). Returns the markdown and
    the rows (for CSV)."""
    if select not in ("valid", "test"):
        raise UserError(f"--select must be 'valid' or 'test', got {select!r}")
    groups = run_groups(results_root, dataset, test_mask, seed, run_names, where)
    published = PUBLISHED.get(dataset.lower(), {})
    rows = []
    for model in models if models is not None else table_models(groups):
        for strategy in STRATEGIES:
            mg = strategy == "mg"
            cell = [g for g in groups if g.model == model and g.strategy == strategy]
            if not cell and strategy not in ("plain", "mg"):
                continue  # SAM rows only where SAM runs exist
            for group in cell:
                if len(group.seeds) > 1:
                    raise UserError(
                        f"{model}{ARM_SUFFIX[strategy]} on {dataset}: {group.folder} holds runs of "
                        f"{len(group.seeds)} seeds ({', '.join(map(str, group.seeds[:6]))}"
                        f"{', ...' if len(group.seeds) > 6 else ''}), which a table does not pool: "
                        "choose one with --seed=S, or tabulate the study they belong to with "
                        "--study NAME (mean ± std over its seeds; `mgrec runs` lists the studies)"
                    )
                group.label = _label(group, cell) if len(cell) > 1 else ""
            cell.sort(key=lambda g: g.label)
            chosen: Sequence[RunGroup | None] = cell or [None]
            for found in chosen:
                paper = published.get((model, mg)) if strategy in ("plain", "mg") else None
                rows.append(_row(model, mg, found, select, test_mask, paper, strategy))
    return _markdown(rows, dataset, select, test_mask, bool(published)), rows


def _row(
    model: str, mg: bool, group: RunGroup | None, select: str, test_mask: str,
    paper: tuple[float, ...] | None, strategy: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    winner = None if group is None else pick_winner(group.rows, select, "recall@5")
    row: dict[str, Any] = {
        "model": model, "mg": mg, "strategy": strategy or ("mg" if mg else "plain"), "settings": "" if group is None else group.label,
        "selected_by": select, "test_mask": test_mask,
        "seed": None if group is None else group.seeds[0],
        "candidates": 0 if group is None else len(group.rows),
        "run": None if group is None else str(group.folder),
        "combination": None if winner is None else f"combo-{winner['index']:03d}",
    }  # fmt: skip
    for metric in PAPER_METRICS:
        row[metric] = None if winner is None else winner["test"].get(metric)
    for metric, value in zip(PAPER_METRICS, paper or (None,) * 4, strict=True):
        row[f"published {metric}"] = value
        ours = row[metric]
        row[f"difference {metric}"] = None if value is None or ours is None else ours - value
    return row


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _markdown(
    rows: list[dict[str, Any]], dataset: str, select: str, mask: str, has_paper: bool
) -> str:
    title = f"# {dataset}: test metrics @5 of each arm's winner "
    title += (
        "by validation" if select == "valid" else "**selected by test** (the reference's protocol)"
    )
    lines = [title, ""]
    if dataset == "synthetic":
        lines += [f"Note: {SYNTHETIC_NOTE}.", ""]
    lines += [
        f"Evaluation: {MASK_RULES[mask]}. Each row is one run folder and seed (its grid's winner; "
        "the run is named in the last column).",
        "",
    ]
    header = ["model", *PAPER_LABELS]
    if has_paper:
        header += [f"paper {m}" for m in PAPER_LABELS] + [f"Δ {m}" for m in PAPER_LABELS]
    header += ["combinations", "run"]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        name = row["model"] + ARM_SUFFIX[row["strategy"]]
        if row["settings"]:
            name += f" ({row['settings']})"
        if row["candidates"] == 0:
            cells = ["no finished run"] + ["-"] * (len(PAPER_METRICS) - 1)
        else:
            cells = [_cell(row[m]) for m in PAPER_METRICS]
        if has_paper:
            paper = [row[f"published {m}"] for m in PAPER_METRICS]
            cells += ["not published" if v is None else _cell(v) for v in paper]
            cells += [_cell(row[f"difference {m}"], signed=True) for m in PAPER_METRICS]
        run = "-" if row["run"] is None else f"{Path(row['run']).name} {row['combination']}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['candidates']} | {run} |")
    if has_paper:
        lines += [
            "",
            f"Published values: {PUBLISHED_SOURCE}; the paper selected them on the test split.",
        ]
    return "\n".join(lines)


# --- a study's table ---------------------------------------------------------------------------


def find_study(results_root: Path, name: str) -> dict[str, Any]:
    """The study named ``name`` (its folder name, a unique prefix of it, or its folder)."""
    found = studies(results_root)
    exact = [s for s in found if name in (s["name"], s["folder"])]
    matches = exact or [s for s in found if s["name"].startswith(name)]
    if len(matches) != 1:
        names = ", ".join(s["name"] for s in found) or "none yet"
        what = "matches several studies" if matches else "is no study"
        raise UserError(f"--study {name}: {what} under {results_root} (studies: {names})")
    return matches[0]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def study_table(
    results_root: Path, name: str, select: str = "valid"
) -> tuple[str, list[dict[str, Any]]]:
    """A study's arms as rows: mean ± std over its seeds of the test metrics of each seed's
    winner (by validation, the study's rule; ``select="test"``: the reference's protocol from
    the same runs, labelled)."""
    study = find_study(results_root, name)
    path = Path(study["folder"]) / "report.json"
    if not path.is_file():
        raise UserError(f"study {study['name']} has no report yet: run its command to finish it")
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("kind") == "compare":
        text, rows = compare_table(report, select)
        heading = (
            f"# Study {study['name']}: {', '.join(report['models'])} with "
            f"{', '.join(report['strategies'])} on {report['dataset']}"
        )
        return f"{heading}\n\nFolder {study['folder']}.\n\n{text}", rows
    per_seed = report["per_seed"]
    if select == "test":
        per_seed = [{"seed": r["seed"], **r["reference_protocol"]} for r in per_seed]
    metrics = [*PAPER_METRICS, "recall@20", "ndcg@20"]
    rows = []
    for arm in (a for a in ("plain", "mg") if a in per_seed[0]):
        row: dict[str, Any] = {"model": report["model"], "arm": arm, "seeds": len(per_seed)}
        for metric in metrics:
            values = [r[arm][metric] for r in per_seed if metric in r[arm]]
            if values:
                row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(values)
        rows.append(row)
    how = (
        "each seed's winner by validation (the study's rule)"
        if select == "valid"
        else "**each seed's winner selected by test** (the reference's protocol, shown for comparison)"
    )
    lines = [
        f"# Study {study['name']}: {report['model']} on {report['dataset']}",
        "",
        f"Test metrics, mean ± std over {len(per_seed)} seeds ({', '.join(str(r['seed']) for r in report['per_seed'])}) "
        f"of {how}; budget {report.get('budget')}; folder {study['folder']}.",
        "",
        "| arm | "
        + " | ".join(
            m.upper().replace("RECALL", "REC").replace("PRECISION", "PREC") for m in metrics
        )
        + " |",
        "|---" * (1 + len(metrics)) + "|",
    ]
    for row in rows:
        name = report["model"] + (" + MG" if row["arm"] == "mg" else "")
        cells = [
            f"{row[f'{m} mean']:.4f} ± {row[f'{m} std']:.4f}" if f"{m} mean" in row else "-"
            for m in metrics
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("synthetic"):
        lines += ["", f"Note: {SYNTHETIC_NOTE}."]
    return "\n".join(lines), rows


# The paper's columns: these measures at each of these cut-offs (the configured smallest and
# largest cut-offs when neither is configured)
TABLE_MEASURES = (("recall", "REC"), ("precision", "PREC"), ("map", "MAP"), ("ndcg", "NDCG"))
TABLE_CUTOFFS = (5, 20)
MARKS = {"holm": "*", "bh": "†"}


def table_metrics(metrics: Sequence[str]) -> list[str]:
    """The paper's columns found among ``metrics``: REC, PREC, MAP, NDCG at 5, then at 20."""
    cutoffs = sorted({int(m.partition("@")[2]) for m in metrics})
    chosen = [k for k in TABLE_CUTOFFS if k in cutoffs] or sorted({cutoffs[0], cutoffs[-1]})
    return [f"{m}@{k}" for k in chosen for m, _ in TABLE_MEASURES if f"{m}@{k}" in metrics]


def column_name(metric: str) -> str:
    """``recall@5`` -> ``REC@5``: the paper's column names."""
    measure, _, k = metric.partition("@")
    return f"{dict(TABLE_MEASURES).get(measure, measure.upper())}@{k}"


def mark(comparison: Mapping[str, Any] | None, test: str = "t") -> str:
    """``*`` where the difference is significant after Holm's correction, ``†`` where only
    after Benjamini-Hochberg's, else nothing (``test``: "t" or "wilcoxon")."""
    found = (comparison or {}).get("significant") or {}
    if found.get(f"{test}_holm"):
        return MARKS["holm"]
    return MARKS["bh"] if found.get(f"{test}_bh") else ""


def _p_value(comparison: Mapping[str, Any] | None, name: str) -> float | None:
    """A comparison's raw t-test p (``p_t``) or an adjusted p (``p_t_holm``, ...)."""
    if comparison is None:
        return None
    return comparison["t_test"]["p_value"] if name == "p_t" else comparison.get(name)


def compare_table(
    report: Mapping[str, Any], select: str = "valid"
) -> tuple[str, list[dict[str, Any]]]:
    """A comparison study's table in the paper's layout: for each model the rows "Model",
    "Model + MG", "Model + SAM" (one per strategy), the columns REC/PREC/MAP/NDCG @5 and @20,
    each "mean ± std" over the seeds of the test metrics of each seed's validation winner, with
    ``*`` where the paired t-test finds a difference from the model's plain row after
    Holm-Bonferroni's correction over the study's whole family, ``†`` where only after
    Benjamini-Hochberg's. ``select="test"``: the reference's protocol from the same runs
    (test-selected, first replica), labelled, with no marks. Returns the markdown and the rows
    (for CSV: per metric its mean, std, difference from plain, adjusted p-values, mark)."""
    metrics = table_metrics(report["metrics"])
    key = "test" if select == "valid" else "reference_protocol"
    rows: list[dict[str, Any]] = []
    for model in report["models"]:
        records = [r for r in report["per_seed"] if r["model"] == model]
        for strategy in report["strategies"]:
            comparison = report["comparisons"][model].get(strategy) if select == "valid" else None
            row: dict[str, Any] = {
                "model": model, "strategy": strategy, "row": model + ARM_SUFFIX[strategy],
                "seeds": len(records), "selected_by": select,
            }  # fmt: skip
            for metric in metrics:
                mean, std = _mean_std([r["arms"][strategy][key][metric] for r in records])
                row[f"{metric} mean"], row[f"{metric} std"] = mean, std
                if select == "valid":  # every row has every column (the CSV's header)
                    c = comparison[metric] if comparison is not None else None
                    row[f"{metric} difference"] = c["difference"]["mean"] if c else None
                    for name in ("p_t", "p_t_holm", "p_t_bh", "p_wilcoxon_holm"):
                        row[f"{metric} {name}"] = _p_value(c, name)
                    row[f"{metric} mark"] = mark(c)
            rows.append(row)
    lines = [
        "| Model | " + " | ".join(column_name(m) for m in metrics) + " |",
        "|---" * (1 + len(metrics)) + "|",
    ]
    for row in rows:
        cells = [
            f"{row[f'{m} mean']:.4f} ± {row[f'{m} std']:.4f}{row.get(f'{m} mark', '')}"
            for m in metrics
        ]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    seeds = report["seeds"]
    how = (
        "each seed's winner by validation (the study's rule)"
        if select == "valid"
        else "**each seed's winner selected by test, first replica only** (the reference's "
        "protocol, shown for comparison; no tests)"
    )
    lines += [
        "",
        f"Test metrics, mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))}) of "
        f"{how}; budget {report['budget']}.",
    ]
    if select == "valid":
        family = report["family"]["accuracy"]
        alpha = family.get("alpha", 0.05)
        lines += [
            f"{MARKS['holm']} differs from the model's plain row: paired t-test, Holm-Bonferroni "
            f"adjusted p < {alpha:g} over the study's whole family: {family['formula']} "
            "comparisons"
            + (
                "."
                if family["t"] == family["comparisons"]
                else f", of which {family['t']} t-tests are defined (the others have no spread "
                "across seeds)."
            ),
            f"{MARKS['bh']} significant only under Benjamini-Hochberg's adjustment (false "
            "discovery rate) over the same family, not under Holm's.",
            "Wilcoxon signed-rank p-values (raw and adjusted over their own family of "
            f"{family['wilcoxon']} tests) are in report.md; with {len(seeds)} seeds the smallest "
            f"possible two-sided Wilcoxon p is {2 / 2 ** len(seeds):.3g}.",
        ]
    if report.get("synthetic"):
        lines += ["", f"Note: {SYNTHETIC_NOTE}."]
    return "\n".join(lines), rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """``--where key=value`` filters (values parsed as YAML, as on the command line)."""
    where = {}
    for item in items:
        key, has_value, value = item.partition("=")
        if not has_value or not key:
            raise UserError(f"--where {item}: write --where KEY=VALUE (e.g. --where epochs=3)")
        where[key] = parse_value(value)
    return where
