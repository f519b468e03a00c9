"""The command line: ``python src/main.py [--model M] [--dataset D] [--not_mg] [--key=value ...]``.

Flags as the reference's ``main.py`` (``--model``, ``--dataset``, ``--not_mg``, ``--resume``)
plus ``--config FILE.yaml`` and ``--output FILE.json``; every other ``--key=value`` (or
``--key value``) overrides a config key, parsed as YAML. A mistake by the user ends with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mgrec import __version__
from mgrec.config import available_models, load_config, parse_value
from mgrec.errors import UserError
from mgrec.paths import user_path

DEFAULT_MODEL = "DRAGON"
DEFAULT_DATASET = "synthetic"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgrec",
        description="Train and evaluate multimodal recommenders with Mirror Gradient (WWW 2024).",
        epilog="Any other --key=value overrides a config key (see configs/overall.yaml), e.g. "
        "--epochs=5 --learning_rate=0.001 --reg_weight=[0.1,0.01]. A list makes a grid.",
    )
    models = ", ".join(available_models())
    add = parser.add_argument
    add("--model", "-m", help=f"model name (default {DEFAULT_MODEL}): {models}")
    add("--dataset", "-d", help=f"dataset folder under data_path (default {DEFAULT_DATASET})")
    add("--not_mg", action="store_true", help="train without Mirror Gradient (the ablation)")
    add("--resume", metavar="CKPT", help="evaluate a checkpoint (ours or a reference state_dict)")
    add(
        "--config", metavar="FILE.yaml", action="append", default=[], help="extra YAML (repeatable)"
    )
    add("--output", metavar="FILE.json", help='write {"valid": {...}, "test": {...}} metrics')
    add(
        "--study", choices=["mg"], help="run a seeded MG vs no-MG study (see README: Does MG help?)"
    )
    add("--seeds", type=int, default=5, help="number of study seeds (default 5)")
    add("--robustness", action="store_true", help="with --study: evaluate under feature shifts")
    add("--flatness", action="store_true", help="with --study: measure sharpness, curves, Hessian")
    add(
        "--build_user_graph",
        action="store_true",
        help="write the dataset's user_graph_dict.npy (DualGNN/DRAGON) into its folder and exit",
    )
    parser.add_argument("--version", action="version", version=f"mgrec {__version__}")
    return parser


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """``--key=value`` / ``--key value`` tokens -> {key: YAML-parsed value}."""
    overrides: dict[str, Any] = {}
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if not token.startswith("--") or len(token) == 2:
            raise UserError(f"unexpected argument '{token}': overrides are written --key=value")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if position + 1 >= len(tokens) or tokens[position + 1].startswith("--"):
                raise UserError(f"--{key} needs a value: write --{key}=VALUE")
            position += 1
            value = tokens[position]
        overrides[key] = parse_value(value)
        position += 1
    return overrides


def run(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run; raises UserError for user mistakes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:  # `mgrec prepare ...` = `python -m mgrec.prepare ...`
        from mgrec import prepare

        return prepare.run(argv[1:])
    args, rest = build_parser().parse_known_args(argv)
    from mgrec import runner  # imported after parsing: `--help` stays fast (no torch import)

    overrides = parse_overrides(rest)
    for key in ("model", "dataset"):
        if key in overrides:
            raise UserError(f"use --{key} NAME rather than --{key}=... as an override")
    model = args.model or DEFAULT_MODEL
    dataset = args.dataset or DEFAULT_DATASET
    config_files = [user_path(f) for f in args.config]
    for file in config_files:
        if not file.is_file():
            raise UserError(f"{file}: config file not found")
    output = user_path(args.output) if args.output else None
    if output is not None and output.suffix.lower() != ".json":
        raise UserError(f"--output {args.output}: the output file must end in .json")
    if (args.robustness or args.flatness) and not args.study:
        raise UserError("--robustness and --flatness go with --study mg")
    if args.study:
        from mgrec import study

        study.run_study(
            model, dataset, args.seeds, config_files, overrides,
            robustness=args.robustness, flatness=args.flatness,
        )  # fmt: skip
        return 0
    if args.build_user_graph:
        config = load_config(
            model, dataset, mg=False, config_files=config_files, overrides=overrides
        )
        print(runner.build_user_graph_file(config))
        return 0
    if args.resume:
        runner.evaluate_checkpoint(
            user_path(args.resume), model, dataset, mg=not args.not_mg, config_files=config_files,
            overrides=overrides, output=output, model_given=args.model is not None,
            dataset_given=args.dataset is not None,
        )  # fmt: skip
        return 0
    config = load_config(
        model, dataset, mg=not args.not_mg, config_files=config_files, overrides=overrides
    )
    runner.train_grid(config, output=output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user mistakes print one line and exit with status 2."""
    try:
        return run(argv)
    except UserError as error:
        print(f"mgrec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "mgrec: interrupted; finished combinations are kept and skipped on re-run",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
