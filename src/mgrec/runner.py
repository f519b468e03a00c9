"""Running a grid: one trial per combination, its results recorded as each one finishes.

Data flow: config -> ``experiment`` (the composition root builds each combination's data,
evaluators, batches and model inputs) -> ``trial`` (trains one combination, resumably) -> the run
folder (``store``: numbering, claims, results.jsonl) -> ``report`` (tables, winners, plots).

A finished combination is skipped only when its recorded inputs (fingerprints of the data files)
and code match today's; otherwise it is retrained, saying why. A combination another process is
training (two identical commands at once) is left to it and its result read when it finishes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mgrec import atomic, checkpoint, report, tables
from mgrec import config as configuration
from mgrec.data import user_graph
from mgrec.data.dataset import load_dataset
from mgrec.data.synthetic import EMBEDDED_NAME, ensure_embedded
from mgrec.errors import UserError
from mgrec.experiment import (
    Experiment,
    ExperimentBuilder,
    build,
    check_combination,
    model_class,
)
from mgrec.paths import project_path
from mgrec.provenance import code_fingerprint, run_info
from mgrec.store import RunFolder
from mgrec.trial import STATE_FILE, TrialFiles, label
from mgrec.trial import run as run_trial

log = logging.getLogger("mgrec")
QUICK_EVAL_METRICS = ("recall@5", "precision@5", "map@5", "ndcg@5")
INPUT_FILES = {
    "inter": "inter_file_name",
    "v": "vision_feature_file",
    "t": "text_feature_file",
    "user_graph": "user_graph_dict_file",
}


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


class _LogFile(logging.FileHandler):
    """The run's train.log. A write that fails (a full disk) is reported in one line, once,
    and the file is left alone from then on: never logging's traceback blocks."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not self.failed:
            self.failed = True
            tqdm.write(
                f"mgrec: warning: cannot write {self.baseFilename}; the log goes on here only"
            )


def setup_logging(log_file: Path | None = None, quiet: bool = False) -> None:
    """Log INFO to the console (through tqdm; warnings only when ``quiet``) and, if given, to
    ``log_file``."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = _TqdmHandler()
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _LogFile(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file_handler)


_recent_logs: list[Path] = []  # the train.log files this process has written, latest last


def log_to_files(message: str) -> None:
    """Append ``message`` to the train.log this process wrote last (the CLI prints errors to
    the console itself); a log that cannot be written is left alone."""
    if not _recent_logs:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError), open(_recent_logs[-1], "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {message}\n")


def check_output(path: Path) -> None:
    """Refuse an ``--output`` file that cannot be written, before any training."""
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"--output {path}: the folder {folder} does not exist")
    try:
        probe = atomic.temp_path(path)
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--output {path}: cannot write there ({exc.strerror or exc})") from exc
    if path.exists() and (path.is_dir() or not path.is_file()):
        raise UserError(f"--output {path}: exists and is not a file")


def write_output(path: Path, payload: Mapping[str, Any]) -> None:
    """Write a JSON output file atomically (metric keys in lower case)."""
    atomic.write_text(Path(path), json.dumps(payload, indent=2, allow_nan=False) + "\n")


def metrics_payload(
    valid: Mapping[str, float], test: Mapping[str, float], rule: str
) -> dict[str, Any]:
    return {
        "valid": {k.lower(): v for k, v in valid.items()},
        "test": {k.lower(): v for k, v in test.items()},
        "test_mask": rule,
    }


def stale_reason(row: Mapping[str, Any], experiment: Experiment) -> str | None:
    """Why a recorded result no longer stands for this combination (None: it does)."""
    if row.get("code") != code_fingerprint():
        return f"it was trained by other code ({row.get('code') or 'an older mgrec'}, now {code_fingerprint()})"
    recorded, current = row.get("inputs") or {}, experiment.inputs
    changed = [k for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    if changed:
        names = [str(experiment.config.get(INPUT_FILES.get(k, ""), k)) for k in changed]
        return f"its data changed since it was trained ({', '.join(names)})"
    return None


def check_tensorboard(config: Mapping[str, Any]) -> None:
    """``tensorboard: true`` needs the optional extra; say how to get it before training."""
    if config.get("tensorboard"):
        try:
            import tensorboard  # noqa: F401
        except ImportError as exc:
            raise UserError(
                'tensorboard: true needs TensorBoard: pip install -e ".[tensorboard]" '
                "(or pip install tensorboard)"
            ) from exc


@dataclass
class Grid:
    """One grid's run while it trains: its combinations, their folder numbers, the results found
    so far and what is left to train."""

    config: dict[str, Any]
    run: RunFolder
    combos: list[dict[str, Any]]
    keys: list[str]
    numbers: dict[str, int]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    todo: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def files(self, key: str) -> TrialFiles:
        number = self.numbers[key]
        return TrialFiles(number, self.run.combo_dir(number), self.run.checkpoint_path(number))

    def announce(self, combo: Mapping[str, Any], key: str) -> None:
        position = f"{self.keys.index(key) + 1}/{len(self.combos)}"
        log.info(f"=== combo-{self.numbers[key]:03d} ({position}): {label(combo['params'])}")

    def current(
        self, key: str, builder: ExperimentBuilder, combo: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The recorded result of ``key`` if it stands for today's data and code."""
        row = self.run.results().get(key)
        return row if row is not None and stale_reason(row, builder.build(combo)) is None else None

    def finish(self, key: str, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Record a trained combination: its results line first (a failed plot never loses a
        finished combination), then the index, then its optional artefacts."""
        self.run.record(row)
        self.results[key] = row
        note_progress(self.config, self.run, list(self.results.values()), len(self.combos))
        combo = self.combos[self.keys.index(key)]
        finish_trial(self.files(key), combo, row, history)


@contextlib.contextmanager
def log_into(run: RunFolder) -> Iterator[None]:
    """Also log into ``run``'s train.log for the block (a study works on several runs)."""
    run.path.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(run.path / "train.log", encoding="utf-8")
    _recent_logs.append(run.path / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def open_grid(
    config: Mapping[str, Any],
    builder: ExperimentBuilder,
    argv: Sequence[str] | None = None,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> Grid:
    """Check a grid and open its run folder: every input is validated (and the data loaded)
    before anything is written; finished combinations whose data and code are today's are
    taken as they are, the others listed to train."""
    combos = configuration.grid(config)
    for combo in combos:
        check_combination(combo)
    check_tensorboard(config)
    experiment = builder.build(combos[0])
    run = RunFolder(config)
    run.path.mkdir(parents=True, exist_ok=True)
    keys = [configuration.identity(c) for c in combos]
    grid = Grid(dict(config), run, combos, keys, run.number_for(keys))
    with log_into(run):
        for stale in [
            *atomic.remove_stale_temps(run.path, recursive=True),
            *atomic.remove_stale_temps(run.checkpoints),
        ]:
            log.info(f"removed {stale}, left by a writer that was killed")
        saved = {**config, "run_info": run_info(list(argv) if argv is not None else None)}
        atomic.write_text(run.path / "config.yaml", configuration.to_yaml(saved))
        log.info(experiment.data.summary())
        for note in experiment.data.notes + experiment.notes:
            log.info(f"note: {note}")
        if config["dataset"] == EMBEDDED_NAME:
            log.info(f"note: {report.SYNTHETIC_NOTE}")
        log.info(f"device: {experiment.device}; results: {run.path}")
        recorded = run.results()
        for combo, key in zip(combos, keys, strict=True):
            row = recorded.get(key)
            reason = None if row is None else stale_reason(row, builder.build(combo))
            if row is not None and reason is None:
                grid.results[key] = row
                log.info(f"=== combo-{grid.numbers[key]:03d}: already finished, skipped")
                if on_trial:
                    on_trial(row)
            else:
                grid.todo.append((combo, key))
                if reason:
                    log.info(f"combo-{grid.numbers[key]:03d}: retraining: {reason}")
    return grid


def run_local(
    grids: Sequence[Grid],
    builder: ExperimentBuilder,
    quiet: bool = False,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> None:
    """Train what the grids have left, one combination after another in this process. A
    combination another process holds is left to it and its result read once it is released
    (trained here only if that process ended without finishing it)."""
    total = sum(len(g.combos) for g in grids)
    done = sum(len(g.results) for g in grids)
    bar = tqdm(
        total=total, initial=done, desc="grid", unit="combo", dynamic_ncols=True,
        disable=True if quiet or total < 2 else None, position=0,
    )  # fmt: skip
    started, trained = time.perf_counter(), 0

    def train(grid: Grid, combo: dict[str, Any], key: str) -> None:
        nonlocal trained
        with log_into(grid.run):
            grid.announce(combo, key)
            row, history = run_trial(builder.build(combo), grid.files(key), quiet, position=1)
            grid.finish(key, row, history)
        trained += 1
        bar.set_postfix_str(f"{(time.perf_counter() - started) / trained:.1f}s/combo")

    def settle(grid: Grid, combo: dict[str, Any], key: str, blocking: bool) -> bool:
        claim = grid.run.claim(grid.numbers[key], blocking=blocking)
        if claim is None:
            return False
        try:
            row = grid.current(key, builder, combo)  # it may have finished meanwhile
            if row is not None:
                grid.results[key] = row
            else:
                train(grid, combo, key)
        finally:
            claim.release()
        bar.update(1)
        if on_trial:
            on_trial(grid.results[key])
        return True

    waiting = []
    try:
        for grid in grids:
            for combo, key in grid.todo:
                if not settle(grid, combo, key, blocking=False):
                    with log_into(grid.run):
                        log.info(
                            f"combo-{grid.numbers[key]:03d}: another process is training it; "
                            "its result will be read when it finishes"
                        )
                    waiting.append((grid, combo, key))
        for grid, combo, key in waiting:
            settle(grid, combo, key, blocking=True)
    finally:
        bar.close()


def close_grid(grid: Grid, output: Path | None = None) -> dict[str, Any]:
    """Summarise a trained grid (table, winners, plot, index) and write ``output``."""
    with log_into(grid.run):
        finished = [grid.results[k] for k in grid.keys if k in grid.results]
        outcome = summarise(grid.config, finished, grid.run)
        if output is not None:
            finish_output(output, outcome["by_valid"], grid.config)
    return outcome


def train_grids(
    configs: Sequence[Mapping[str, Any]],
    quiet: bool = False,
    argv: Sequence[str] | None = None,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train several grids together (a study's seeds and arms) with the configured executor
    (``executor: local`` or ``ray``); returns each grid's outcome (see ``train_grid``)."""
    setup_logging(None, quiet=quiet)
    builder = ExperimentBuilder()
    grids = [open_grid(config, builder, argv, on_trial) for config in configs]
    executor = str(configs[0].get("executor") or "local")
    failures: list[str] = []
    if executor == "ray":
        from mgrec import executors

        failures = executors.run_on_ray(grids, builder, configs[0], quiet=quiet, on_trial=on_trial)
    else:
        run_local(grids, builder, quiet, on_trial)
    outcomes = [close_grid(grid) for grid in grids]
    if failures:
        shown = "; ".join(failures[:3]) + (
            f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
        )
        raise UserError(
            f"{len(failures)} combination(s) failed (the others are recorded; a re-run retries "
            f"the failed ones): {shown}"
        )
    return outcomes


def train_grid(
    config: Mapping[str, Any],
    output: Path | None = None,
    quiet: bool = False,
    argv: Sequence[str] | None = None,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train every grid combination (skipping finished ones) and report both winners.

    ``quiet`` keeps the console to warnings (the log file still gets everything) and hides the
    progress bars; ``on_trial`` is called with each combination's row as it becomes available
    (trained or found finished). Returns ``{"results": [...], "by_valid": ..., "by_test": ...,
    "run_dir": ...}``.
    """
    if output is not None:
        check_output(output)
    (outcome,) = train_grids([config], quiet=quiet, argv=argv, on_trial=on_trial)
    if output is not None:
        finish_output(output, outcome["by_valid"], config)
    return outcome


def finish_trial(
    files: TrialFiles,
    combo: Mapping[str, Any],
    row: Mapping[str, Any],
    history: list[dict[str, Any]],
) -> None:
    """After a combination's results line is recorded: drop its training state (unless
    ``keep_training_state``) and draw its curve; a failure here is a warning."""
    if not combo.get("keep_training_state"):
        (files.folder / STATE_FILE).unlink(missing_ok=True)
    title = f"{combo['model']} on {combo['dataset']}, combo-{files.number:03d}: {label(combo['params'])}"
    try:
        report.plot_curve(
            history, str(combo["valid_metric"]).lower(), files.folder / "curve.png", title,
            best_epoch=row.get("best_epoch"),
        )  # fmt: skip
    except OSError as exc:
        log.warning(f"warning: could not draw {files.folder / 'curve.png'} ({exc.strerror or exc})")


def finish_output(path: Path, winner: Mapping[str, Any] | None, config: Mapping[str, Any]) -> None:
    """Write ``--output``, or, when no combination has a validation result, remove a stale file
    of that name and stop with an error (never leave an older file looking current)."""
    if winner is None:
        removed = path.is_file()
        path.unlink(missing_ok=True)
        raise UserError(
            f"--output {path}: no combination has a validation result (every one ended before its "
            "first evaluation, e.g. with a NaN loss), so nothing was written"
            + ("; the older file of that name was removed" if removed else "")
        )
    rule = "train+valid" if config.get("test_mask_valid") else "train"
    write_output(path, metrics_payload(winner["valid"], winner["test"], rule))


def note_progress(
    config: Mapping[str, Any], run: RunFolder, results: list[dict[str, Any]], total: int
) -> None:
    """Update the run's ``run.json`` and the results index (``results/index.csv``)."""
    winner = report.pick_winner(results, "valid", str(config["valid_metric"]).lower())
    record = tables.run_record(config, results, winner, total, run.path)
    tables.record_run(record, project_path(config["results_dir"]))


def summarise(
    config: Mapping[str, Any], results: list[dict[str, Any]], run: RunFolder
) -> dict[str, Any]:
    """Print and save the grid table, the two winners and the grid plot; update the index."""
    defaults = configuration.load_config(config["model"], config["dataset"], mg=config["mg"])
    text, by_valid, by_test = report.summary_markdown(
        config,
        results,
        report.changed_settings(config, defaults),
        config["dataset"] == EMBEDDED_NAME,
    )
    atomic.write_text(run.path / "summary.md", text)
    note_progress(config, run, results, len(results))
    log.info("\n" + text)
    metric = str(config["valid_metric"]).lower()
    try:
        title = f"{config['model']} on {config['dataset']}, {'MG' if config['mg'] else 'no MG'}"
        report.plot_grid(results, metric, run.path / "grid.png", title, by_valid)
    except OSError as exc:
        log.warning(f"warning: could not draw {run.path / 'grid.png'} ({exc.strerror or exc})")
    log.info(f"results, logs and curves: {run.path}")
    return {"results": results, "by_valid": by_valid, "by_test": by_test, "run_dir": str(run.path)}


def evaluate_checkpoint(
    path: Path, combo: Mapping[str, Any], output: Path | None = None
) -> dict[str, dict[str, float]]:
    """``--resume``: evaluate a checkpoint on valid and test, recomputing every representation.

    ``combo`` is the combination to build the model with (``config.checkpoint_config`` for an
    mgrec checkpoint, the YAML's first grid values for a bare reference state_dict).
    """
    setup_logging(None)
    check_combination(combo)
    if output is not None:
        check_output(output)
    stored = checkpoint.read(path)
    experiment = build(combo)
    model = experiment.build_model(stored["state_dict"], str(path))
    model.prepare_scoring()  # scores always from the parameters, never a training cache
    results = {split: experiment.evaluate(model, split) for split in ("valid", "test")}
    print("\t".join(QUICK_EVAL_METRICS))
    print("\t".join(f"{results['test'][m]:.4f}" for m in QUICK_EVAL_METRICS))
    print()
    if combo["dataset"] == EMBEDDED_NAME:
        print(f"Note: {report.SYNTHETIC_NOTE}.")
    rule = experiment.evaluators["test"].mask_rule
    print(f"{combo['model']} checkpoint {path} on {combo['dataset']} ({report.MASK_RULES[rule]}):")
    print(report.metric_table(results, combo["topk"], combo["metrics"]))
    if output is not None:
        write_output(output, metrics_payload(results["valid"], results["test"], rule))
    return results


def build_user_graph_file(config: Mapping[str, Any], force: bool = False) -> Path:
    """``--build_user_graph``: write the dataset's user graph, in the reference's format, into its
    folder (the one time mgrec writes there: the user asked; an existing file only with
    ``force``). Returns the file's path."""
    setup_logging(None)
    if config["dataset"] == EMBEDDED_NAME:
        ensure_embedded(project_path(config["data_path"]))
    data = load_dataset(config, modalities="none")
    path = data.path / str(config["user_graph_dict_file"])
    if path.exists() and not force:
        raise UserError(f"{path} exists; add --force to replace it")
    start = time.perf_counter()
    graph = user_graph.build(data.train.users, data.train.items, data.n_users)
    existed = path.is_file()
    user_graph.save_reference(path, graph)
    log.info(
        f"user graph of {data.n_users} users (top {user_graph.TOP_NEIGHBOURS} co-interaction "
        f"neighbours each) built in {time.perf_counter() - start:.1f}s; "
        f"{'replaced' if existed else 'wrote'}:"
    )
    return path


def dry_run(config: Mapping[str, Any]) -> dict[str, Any]:
    """``--dry_run``: the resolved grid (each combination's varying keys and whether it is
    finished), how many trials would run at once, and an estimate of the time left from the
    finished ones' mean. Reads the data to compare fingerprints when it exists; writes nothing."""
    combos = configuration.grid(config)
    for combo in combos:
        check_combination(combo)
    run = RunFolder(config)
    recorded = run.results()
    keys = [configuration.identity(c) for c in combos]
    numbers = run.numbers()
    varying = [
        k for k in config["hyper_parameters"] if len(configuration.grid_values(config, k)) > 1
    ]
    inputs = _current_inputs(config)
    status = {}
    for key in keys:
        row = recorded.get(key)
        if row is None:
            status[key] = "to train"
        elif row.get("code") != code_fingerprint():
            status[key] = "to retrain (other code)"
        elif inputs is not None and (row.get("inputs") or {}) != inputs:
            status[key] = "to retrain (data changed)"
        else:
            status[key] = "finished"
    mode = "with" if config["mg"] else "without"
    print(
        f"{config['model']} on {config['dataset']}, {mode} Mirror Gradient: {len(combos)} "
        f"combination(s); varying: {', '.join(varying) or 'nothing'}"
    )
    print(f"run folder: {run.path}{'' if run.path.is_dir() else ' (not created yet)'}")
    for combo, key in zip(combos, keys, strict=True):
        number = f"combo-{numbers[key]:03d}" if key in numbers else "(new)    "
        shown = ", ".join(f"{k}={combo['params'][k]}" for k in varying) or label(combo["params"])
        print(f"  {number}  {status[key]:26} {shown}")
    finished = [recorded[k] for k in keys if status[k] == "finished"]
    left = len(combos) - len(finished)
    at_once = _concurrency_line(config, left)
    estimate = None
    line = f"{len(finished)} finished, {left} to train"
    if finished and left:
        estimate = sum(r["seconds"] for r in finished) / len(finished) * left / max(at_once[0], 1)
        line += f": about {_duration(estimate)} at the finished ones' mean"
    elif left:
        line += "; no estimate yet (nothing finished)"
    print(line)
    print(at_once[1])
    return {
        "combinations": len(combos),
        "finished": len(finished),
        "estimate_s": estimate,
        "concurrent": at_once[0],
    }


def _current_inputs(config: Mapping[str, Any]) -> dict[str, str] | None:
    """The fingerprints a combination would record today, or None when the data is not there
    yet (the embedded dataset before first use): read-only."""
    from mgrec.data.dataset import dataset_dir, file_digest

    folder = dataset_dir(config)
    if not folder.is_dir():
        return None
    data = load_dataset(config, model_class(str(config["model"])).modalities)
    inputs = dict(data.sources)
    graph_file = folder / str(config["user_graph_dict_file"])
    if model_class(str(config["model"])).needs_user_graph and graph_file.is_file():
        inputs["user_graph"] = file_digest(graph_file)
    return inputs


def _concurrency_line(config: Mapping[str, Any], left: int) -> tuple[int, str]:
    """(trials at once, a line saying so) for the configured executor."""
    if str(config.get("executor") or "local") != "ray":
        return 1, "executor local: one combination at a time"
    from mgrec import executors

    if config.get("ray_address"):
        cpus, gpus = executors.resources(config, cluster_gpus=1.0)
        return 1, (
            f"executor ray at {config['ray_address']}: each trial asks for {cpus:g} CPU(s) and "
            f"{gpus:g} GPU(s); how many run at once depends on the cluster"
        )
    import os

    import torch

    machine_cpus = os.cpu_count() or 1
    machine_gpus = torch.cuda.device_count() if config.get("use_gpu") else 0
    cpus, gpus = executors.resources(config, machine_gpus)
    fit = executors.concurrency(cpus, gpus, machine_cpus, machine_gpus)
    at_once = max(min(fit, left), 0)
    return max(at_once, 1), (
        f"executor ray (a local instance: {machine_cpus} CPUs, {machine_gpus} GPUs): {cpus:g} CPU(s) "
        f"and {gpus:g} GPU(s) per trial, so {fit} trial(s) at once"
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h {minutes:02d}m"
        if hours
        else f"{minutes}m {secs:02d}s"
        if minutes
        else f"{secs}s"
    )
