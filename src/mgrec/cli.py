"""The command line: ``python src/main.py [--model M] [--dataset D] [--not_mg] [--key=value ...]``.

Flags as the reference's ``main.py`` (``--model``, ``--dataset``, ``--not_mg``, ``--resume``)
plus ``--config FILE.yaml``, ``--output FILE.json``, ``--dry_run`` and the study flags; every
other ``--key=value`` (or ``--key value``) overrides a config key, parsed as YAML. Flags are
never abbreviated (``--seed=5`` sets the config key ``seed``, it is not ``--seeds``). A mistake by
the user, or a fault of the environment (a full disk, a read-only folder), ends with one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from mgrec import __version__
from mgrec.config import (
    DIRECTORY_KEYS,
    available_models,
    closest,
    known_keys,
    parse_value,
    run_settings,
)
from mgrec.errors import UserError
from mgrec.paths import user_path

DEFAULT_MODEL = "DRAGON"
DEFAULT_DATASET = "synthetic"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgrec",
        description="Train and evaluate multimodal recommenders with Mirror Gradient (WWW 2024). "
        "Other commands: mgrec prepare ... (raw Amazon files -> a dataset), mgrec table ... "
        "(the paper's table from finished runs), mgrec runs (every run, one line each).",
        epilog="Any other --key=value overrides a config key (see configs/overall.yaml), e.g. "
        "--epochs=5 --learning_rate=0.001 --reg_weight=[0.1,0.01]. A list makes a grid.",
        allow_abbrev=False,
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
    add(
        "--output",
        metavar="FILE.json",
        help="write the winner's (or checkpoint's, or study's) results as JSON",
    )
    add("--dry_run", action="store_true", help="print the grid and what is finished; train nothing")
    add(
        "--study", choices=["mg"], help="run a seeded MG vs no-MG study (see README: Does MG help?)"
    )
    add("--seeds", type=int, default=5, help="number of study seeds (default 5)")
    add("--robustness", action="store_true", help="with --study: evaluate under feature shifts")
    add("--flatness", action="store_true", help="with --study: measure curvature and sharpness")
    add(
        "--build_user_graph",
        action="store_true",
        help="write the dataset's user_graph_dict.npy (DualGNN/DRAGON) into its folder and exit",
    )
    add("--force", action="store_true", help="with --build_user_graph: replace an existing file")
    parser.add_argument("--version", action="version", version=f"mgrec {__version__}")
    return parser


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [o for action in parser._actions for o in action.option_strings if o.startswith("--")]


def parse_overrides(tokens: Sequence[str], flags: Sequence[str] = ()) -> dict[str, Any]:
    """``--key=value`` / ``--key value`` tokens -> {key: YAML-parsed value}.

    A key that is neither a config key nor a flag is an error naming the closest of either.
    Folder keys (``data_path``, ``results_dir``, ...) are resolved from the working directory.
    """
    vocabulary = known_keys()
    overrides: dict[str, Any] = {}
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if not token.startswith("--") or len(token) == 2:
            raise UserError(f"unexpected argument '{token}': overrides are written --key=value")
        key, has_value, value = token[2:].partition("=")
        if key not in vocabulary:
            hint = closest(f"--{key}", [*flags, *(f"--{k}" for k in vocabulary)])
            raise UserError(f"unknown option or config key '--{key}'{hint}")
        if not has_value:
            if position + 1 >= len(tokens) or tokens[position + 1].startswith("--"):
                raise UserError(f"--{key} needs a value: write --{key}=VALUE")
            position += 1
            value = tokens[position]
        parsed = parse_value(value)
        if key in DIRECTORY_KEYS and isinstance(parsed, str):
            parsed = str(user_path(parsed))
        overrides[key] = parsed
        position += 1
    return overrides


def _existing_files(paths: Sequence[str], what: str) -> list[Path]:
    files = [user_path(p) for p in paths]
    for file in files:
        if not file.is_file():
            raise UserError(f"{file}: {what} not found")
    return files


def _output_path(value: str | None) -> Path | None:
    if value is None:
        return None
    output = user_path(value)
    if output.suffix.lower() != ".json":
        raise UserError(f"--output {value}: the output file must end in .json")
    return output


def run(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run; raises UserError for user mistakes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:  # `mgrec prepare ...` = `python -m mgrec.prepare ...`
        from mgrec import prepare

        return prepare.run(argv[1:])
    if argv[:1] in (["table"], ["runs"]):
        from mgrec import tables

        return tables.run(argv[0], argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    from mgrec import config as configuration  # imported after parsing: `--help` stays fast
    from mgrec import runner

    overrides = parse_overrides(rest, _flags(parser))
    for key in ("model", "dataset"):
        if key in overrides:
            raise UserError(f"use --{key} NAME rather than --{key}=... as an override")
    config_files = _existing_files(args.config, "config file")
    from_files = run_settings(config_files)  # a saved config.yaml runs what it ran
    model = args.model or from_files.get("model") or DEFAULT_MODEL
    dataset = args.dataset or from_files.get("dataset") or DEFAULT_DATASET
    mg = not args.not_mg and bool(overrides.pop("mg", from_files.get("mg", True)))
    output = _output_path(args.output)
    if (args.robustness or args.flatness) and not args.study:
        raise UserError("--robustness and --flatness go with --study mg")
    if args.force and not args.build_user_graph:
        raise UserError("--force goes with --build_user_graph")
    import torch

    for warning in configuration.settings_warnings(
        config_files, overrides, mg=mg, gpu_visible=torch.cuda.is_available()
    ):
        print(f"mgrec: warning: {warning}", file=sys.stderr)
    if args.study:
        from mgrec import study

        study.run_study(
            model, dataset, args.seeds, config_files, overrides,
            robustness=args.robustness, flatness=args.flatness, output=output, dry_run=args.dry_run,
        )  # fmt: skip
        return 0
    if args.build_user_graph:
        config = configuration.load_config(
            model, dataset, mg=False, config_files=config_files, overrides=overrides
        )
        print(runner.build_user_graph_file(config, force=args.force))
        return 0
    if args.resume:
        return _resume(args, model, dataset, mg, config_files, overrides, output)
    config = configuration.load_config(
        model, dataset, mg=mg, config_files=config_files, overrides=overrides
    )
    if args.dry_run:
        runner.dry_run(config)
        return 0
    runner.train_grid(config, output=output, argv=["mgrec", *argv])
    return 0


def _resume(
    args: argparse.Namespace,
    model: str,
    dataset: str,
    mg: bool,
    config_files: list[Path],
    overrides: dict[str, Any],
    output: Path | None,
) -> int:
    """``--resume CKPT``: evaluate a checkpoint (an mgrec one brings its config)."""
    from mgrec import checkpoint, runner
    from mgrec import config as configuration

    path = _existing_files([args.resume], "checkpoint file")[0]
    saved = checkpoint.read(path).get("config")
    if saved is not None:
        if args.model is not None and args.model != saved.get("model"):
            raise UserError(
                f"{path}: this checkpoint holds a {saved.get('model')} model, not {args.model}"
            )
        combo = configuration.checkpoint_config(saved, args.dataset, config_files, overrides)
    else:
        base = configuration.load_config(
            model, dataset, mg=mg, config_files=config_files, overrides=overrides
        )
        combo = configuration.grid(base)[0]
    runner.evaluate_checkpoint(path, combo, output=output)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: finished work is kept and the process ends cleanly."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user mistakes and environment faults print one line and exit non-zero."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(argv)
    except UserError as error:
        return _fail(f"mgrec: error: {error}", 2)
    except OSError as error:  # the environment: a full disk, a read-only or missing folder
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"mgrec: error: {error.strerror or error}{where}", 1)
    except KeyboardInterrupt as interrupt:
        what = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        return _fail(
            f"mgrec: {what}; finished combinations are kept, and a re-run continues the "
            "unfinished one from its last saved epoch",
            143 if isinstance(interrupt, Terminated) else 130,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    try:
        from mgrec import runner

        runner.log_to_files(message)
    except Exception:  # noqa: BLE001 - reporting an error must never raise another
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
