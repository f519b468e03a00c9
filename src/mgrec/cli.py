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
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from mgrec.config import (
    DIRECTORY_KEYS,
    available_models,
    boolean_keys,
    known_keys,
    parse_value,
    run_settings,
)
from mgrec.errors import Terminated, UserError, closest, error_line
from mgrec.paths import user_path
from mgrec.version import __version__

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
    add(
        "--model",
        "-m",
        help=f"model name (default {DEFAULT_MODEL}): {models}; or a plugin's name, or an "
        "import path module:Class of your own mgrec.models.Recommender",
    )
    add("--dataset", "-d", help=f"dataset folder under data_path (default {DEFAULT_DATASET})")
    add(
        "--not_mg",
        action="store_true",
        help="train without Mirror Gradient (the ablation; = --strategy=plain). Other strategies: "
        "--strategy=plain|mg|sam|asam (sam/asam: sharpness-aware minimisation, radius --rho)",
    )
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
        "--study",
        choices=["mg", "compare"],
        help="mg: a seeded MG vs no-MG study of --model; compare: every model of --models with "
        "every strategy of --strategies (see docs/studies.md)",
    )
    add("--models", metavar="M1,M2", help="with --study compare: the models (default --model)")
    add(
        "--strategies",
        metavar="S1,S2",
        help="with --study compare: the strategies, plain among them (default plain,mg,sam)",
    )
    add("--seeds", type=int, help="with --study: the number of seeds (default 5)")
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


def parse_overrides(
    tokens: Sequence[str], flags: Sequence[str] = (), model: str | None = None
) -> dict[str, Any]:
    """``--key=value`` / ``--key value`` tokens -> {key: YAML-parsed value}; a bare ``--key``
    sets a true/false key true (``--tensorboard``, ``--deterministic``, ``--fresh_eval``).

    A key that is neither a config key (of the shipped files, or of ``model``'s own defaults)
    nor a flag is an error naming the closest of either. Folder keys (``data_path``,
    ``results_dir``, ...) are resolved from the working directory.
    """
    vocabulary = known_keys(model)
    booleans = boolean_keys(model)
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
            last = position + 1 >= len(tokens) or tokens[position + 1].startswith("--")
            if last and key in booleans:  # a bare switch: --tensorboard
                overrides[key] = True
                position += 1
                continue
            if last:
                raise UserError(f"--{key} needs a value: write --{key}=VALUE")
            position += 1
            value = tokens[position]
        parsed = parse_value(value)
        if key in DIRECTORY_KEYS and isinstance(parsed, str):
            parsed = str(user_path(parsed))
        overrides[key] = parsed
        position += 1
    return overrides


def _gpu_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


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


@dataclass
class Request:
    """What the command line asks for, resolved: the run's model, dataset and strategy, the
    user's config files and overrides, and the output file."""

    args: argparse.Namespace
    model: str
    dataset: str
    strategy: str
    config_files: list[Path]
    overrides: dict[str, Any]
    output: Path | None

    @property
    def mg(self) -> bool:
        return self.strategy == "mg"

    def load_config(self, **changes: Any) -> dict[str, Any]:
        """The resolved config of this request (``changes``: another model or strategy)."""
        from mgrec import config as configuration

        model = changes.get("model", self.model)
        strategy = changes.get("strategy", self.strategy)
        return configuration.load_config(
            model, self.dataset, mg=strategy == "mg", config_files=self.config_files,
            overrides=self.overrides, strategy=strategy,
        )  # fmt: skip


def run(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run; raises UserError for user mistakes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:  # `mgrec prepare ...` = `python -m mgrec.prepare ...`
        from mgrec import prepare

        return prepare.run(argv[1:])
    if argv[:1] in (["table"], ["runs"]):
        from mgrec.commands import tables

        return tables.run(argv[0], argv[1:])
    request = _request(build_parser(), argv)
    args = request.args
    if args.study == "compare":
        return _compare(request)
    from mgrec import config as configuration

    for warning in configuration.settings_warnings(
        request.config_files, request.overrides, mg=request.mg, gpu_visible=_gpu_visible,
        model=request.model, strategy=request.strategy,
    ):  # fmt: skip
        print(f"mgrec: warning: {warning}", file=sys.stderr)
    if args.study:
        return _study_mg(request)
    if args.build_user_graph:
        from mgrec.commands.user_graph import build_user_graph_file

        print(build_user_graph_file(request.load_config(strategy="plain"), force=args.force))
        return 0
    if args.resume:
        from mgrec.commands import resume

        path = user_path(args.resume)  # checkpoint.read says what is wrong with it, in words
        stored, combo = resume.resume_combo(
            path, request.model, request.dataset, request.mg, request.config_files,
            request.overrides, named=(args.model, args.dataset),
        )  # fmt: skip
        resume.evaluate_checkpoint(path, stored, combo, output=request.output)
        return 0
    config = request.load_config()
    from mgrec import preflight

    preflight.check_run(config)  # before torch is imported: a mistake is answered at once
    if args.dry_run:
        from mgrec.commands.dry_run import dry_run

        dry_run(config)
        return 0
    from mgrec import api

    api.train_config(config, output=request.output, argv=["mgrec", *argv])
    return 0


def _request(parser: argparse.ArgumentParser, argv: list[str]) -> Request:
    """The arguments resolved and checked against each other (before torch is imported)."""
    args, rest = parser.parse_known_args(argv)
    from mgrec import config as configuration  # imported after parsing: `--help` stays fast

    config_files = _existing_files(args.config, "config file")
    from_files = run_settings(config_files)  # a saved config.yaml runs what it ran
    first_of_models = args.models.split(",")[0].strip() if args.models else None
    model = configuration.check_model(
        args.model or first_of_models or from_files.get("model") or DEFAULT_MODEL
    )
    overrides = parse_overrides(rest, _flags(parser), model)
    for key in ("model", "dataset"):
        if key in overrides:
            raise UserError(f"use --{key} NAME rather than --{key}=... as an override")
    given_strategy = args.not_mg or "strategy" in overrides or "mg" in overrides
    strategy = configuration.resolve_strategy(args.not_mg, overrides, from_files)
    for flag, given in (("--seeds", args.seeds is not None), ("--robustness", args.robustness),
                        ("--flatness", args.flatness)):  # fmt: skip
        if given and not args.study:
            raise UserError(
                f"{flag} goes with --study mg or --study compare (it means nothing for a single run)"
            )
    for flag, value in (("--models", args.models), ("--strategies", args.strategies)):
        if value is not None and args.study != "compare":
            raise UserError(f"{flag} goes with --study compare (one model and strategy run alone)")
    if args.force and not args.build_user_graph:
        raise UserError("--force goes with --build_user_graph")
    if args.study == "compare" and given_strategy:
        raise UserError(
            "--study compare trains the strategies of --strategies: drop --strategy, --not_mg "
            "and --mg"
        )
    dataset = args.dataset or from_files.get("dataset") or DEFAULT_DATASET
    output = _output_path(args.output)
    return Request(args, model, dataset, strategy, config_files, overrides, output)


def _study_mg(request: Request) -> int:
    """``--study mg``: MG against plain training, for one model."""
    from mgrec import preflight, study
    from mgrec.models import registry

    model, strategy = request.model, request.strategy
    if strategy not in ("mg", "plain"):
        raise UserError(
            f"--study mg compares MG with no MG: drop --strategy={strategy} (other "
            f"strategies: --study compare --strategies plain,mg,{strategy})"
        )
    if not registry.trains(model):
        raise UserError(
            f"--study mg compares training with and without Mirror Gradient, but {model} "
            "trains nothing: run it on its own (it is evaluated once)"
        )
    for arm in ("mg", "plain"):
        preflight.check_run(request.load_config(strategy=arm))
    args = request.args
    study.run_study(
        model, request.dataset, 5 if args.seeds is None else args.seeds, request.config_files,
        request.overrides, robustness=args.robustness, flatness=args.flatness,
        output=request.output, dry_run=args.dry_run,
    )  # fmt: skip
    return 0


def _names(value: str, flag: str) -> list[str]:
    """A comma-separated flag's names, each once, in order."""
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise UserError(f"{flag} {value}: write the names separated by commas, e.g. {flag} A,B")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{flag} names {', '.join(repeated)} twice")
    return names


def _compare(request: Request) -> int:
    """``--study compare``: every model of ``--models`` with every strategy of
    ``--strategies``, each refused in one line when it cannot be studied."""
    from mgrec import config as configuration
    from mgrec.models import registry

    args, model, overrides = request.args, request.model, request.overrides
    config_files, dataset = request.config_files, request.dataset
    if args.model and args.models:
        raise UserError("--study compare takes its models from --models: drop --model")
    models = _names(args.models, "--models") if args.models else [model]
    strategies = [
        configuration.check_strategy(s, "--strategies")
        for s in _names(args.strategies or "plain,mg,sam", "--strategies")
    ]
    if "plain" not in strategies:
        raise UserError(
            "--strategies must include plain: every other strategy is compared with plain training"
        )
    if len(strategies) < 2:
        raise UserError("--strategies needs plain and at least one other strategy to compare")
    strategies = ["plain", *(s for s in strategies if s != "plain")]
    for name in models:
        configuration.check_model(name)
        if not registry.trains(name):
            raise UserError(
                f"--study compare compares training strategies, but {name} trains nothing: "
                "leave it out of --models (it is evaluated once on its own)"
            )
    # SAM's keys are ignored only without a SAM arm, MG's only without an MG arm
    has_sam = next((s for s in strategies if s in configuration.SAM_STRATEGIES), None)
    shown = has_sam or ("mg" if "mg" in strategies else "plain")
    for name in models:
        for warning in configuration.settings_warnings(
            config_files, overrides, mg="mg" in strategies, gpu_visible=_gpu_visible,
            model=name, strategy=shown,
        ):  # fmt: skip
            print(f"mgrec: warning: {warning}", file=sys.stderr)
    from mgrec import preflight, study

    for name in models:
        for strategy in strategies:
            preflight.check_run(
                configuration.load_config(
                    name, dataset, strategy == "mg", config_files, overrides, strategy=strategy
                )
            )
    study.run_compare(
        models, strategies, dataset, 5 if args.seeds is None else args.seeds, config_files,
        overrides, robustness=args.robustness, flatness=args.flatness, output=request.output,
        dry_run=args.dry_run,
    )  # fmt: skip
    return 0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user mistakes and environment faults print one line and exit non-zero."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(argv)
    except (UserError, OSError, KeyboardInterrupt) as error:
        line = error_line(error)
        assert line is not None
        print(line[0], file=sys.stderr)
        return line[1]
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
