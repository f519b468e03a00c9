"""``mgrec table`` (the paper's table, or a study's) and ``mgrec runs`` (every run and study)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mgrec import atomic, index, tables
from mgrec.errors import UserError
from mgrec.paths import project_path, user_path


def parser(command: str) -> argparse.ArgumentParser:
    """The arguments of ``mgrec table`` or ``mgrec runs``."""
    parser = argparse.ArgumentParser(prog=f"mgrec {command}", allow_abbrev=False)
    add = parser.add_argument
    add("--results_dir", default="results", help="where the runs are (default results/)")
    if command == "runs":
        parser.description = "Every run folder and study under results/, newest first."
        return parser
    parser.description = (
        "The paper's table (REC/PREC/MAP/NDCG@5, with and without MG) from finished runs: one "
        "row per run folder and seed, never pooled; or a study's arms (mean ± std over seeds)."
    )
    add("--dataset", "-d", help="the dataset of the runs (not with --study)")
    add("--study", metavar="NAME", help="tabulate a study (see `mgrec runs`) instead of runs")
    add("--models", help="comma-separated (default: the paper's nine, then any other run)")
    add("--select", default="valid", choices=["valid", "test"], help="winner by valid or test")
    add("--seed", type=int, help="only the runs of this seed")
    add(
        "--run",
        action="append",
        default=[],
        metavar="FOLDER",
        help="only this run folder's name (repeatable)",
    )
    add(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this setting (repeatable), e.g. epochs=3",
    )
    add("--test_mask_valid", action="store_true", help="runs with the RecBole masking rule")
    add("--csv", metavar="FILE.csv", help="also write the rows as CSV")
    add("--markdown", metavar="FILE.md", help="also write the table as markdown")
    return parser


def run(command: str, argv: Sequence[str]) -> int:
    """``mgrec table ...`` and ``mgrec runs ...``."""
    args = parser(command).parse_args(list(argv))
    root = user_path(args.results_dir) if args.results_dir != "results" else project_path("results")
    if not root.is_dir():
        raise UserError(
            f"{root}: no results folder (train something first, or pass --results_dir=DIR)"
        )
    if command == "runs":
        index.write_index(root)
        print(index.runs_table(index.runs(root)))
        found = index.studies(root)
        if found:
            print("\nStudies (`mgrec table --study NAME` tabulates one):\n")
            print(index.studies_table(found))
        return 0
    if args.study:
        if args.dataset or args.models or args.seed is not None or args.run or args.where:
            raise UserError(
                "--study tabulates the whole study: drop --dataset, --models, --seed, --run and --where"
            )
        text, rows = tables.study_table(root, args.study, args.select)
    else:
        if not args.dataset:
            raise UserError("mgrec table needs --dataset NAME (or --study NAME)")
        models = [m.strip() for m in args.models.split(",")] if args.models else None
        mask = "train+valid" if args.test_mask_valid else "train"
        text, rows = tables.paper_table(
            root, args.dataset, models, args.select, mask, args.seed,
            [name for item in args.run for name in item.split(",")], tables.parse_where(args.where),
        )  # fmt: skip
    print(text)
    if args.markdown:
        atomic.write_text(user_path(args.markdown), text + "\n")
    if args.csv:
        atomic.write_text(user_path(args.csv), tables.to_csv(rows))
    return 0
