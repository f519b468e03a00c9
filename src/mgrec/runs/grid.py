"""A grid's run: open it (validate, number, find what is finished), record each trained
combination, close it (table, winners, plot, index).

A finished combination is skipped only when its recorded inputs (fingerprints of the data files)
and code match today's (``status``, the one place that decides); otherwise it is retrained,
saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgrec import atomic, index, report
from mgrec import config as configuration
from mgrec.data.synthetic import EMBEDDED_NAME
from mgrec.errors import UserError
from mgrec.experiment import ExperimentBuilder, check_combination
from mgrec.paths import project_path
from mgrec.provenance import code_fingerprint, run_info
from mgrec.runs.folder import REGISTRY, RESULTS, RunFolder
from mgrec.runs.logs import log_into
from mgrec.trial import STATE_FILE, TrialFiles, label, rerun_note

log = logging.getLogger("mgrec")
INPUT_FILES = {
    "inter": "inter_file_name",
    "v": "vision_feature_file",
    "t": "text_feature_file",
    "user_graph": "user_graph_dict_file",
}
FINISHED = "finished"
# What re-running the command does once every combination it trained is recorded.
RERUN_WRITES = "re-running the command writes it (finished combinations are not trained again)"


def status(
    row: Mapping[str, Any] | None, config: Mapping[str, Any], inputs: Mapping[str, str] | None
) -> tuple[str, str | None]:
    """Whether a recorded result stands for this combination today: ``(state, why)`` with state
    "finished", "to train" (nothing recorded), "to retrain (other code)" or "to retrain (data
    changed)", and ``why`` a sentence for the log (None when finished or new). ``inputs`` are
    today's data fingerprints (None: not known yet, e.g. before the embedded data exists)."""
    if row is None:
        return "to train", None
    code = code_fingerprint(str(config["model"]))
    if row.get("code") != code:
        return "to retrain (other code)", (
            f"it was trained by other code ({row.get('code') or 'an older mgrec'}, now {code})"
        )
    recorded = row.get("inputs") or {}
    if inputs is not None:
        changed = [
            k for k in sorted(set(recorded) | set(inputs)) if recorded.get(k) != inputs.get(k)
        ]
        if changed:
            names = [str(config.get(INPUT_FILES.get(k, ""), k)) for k in changed]
            return "to retrain (data changed)", (
                f"its data changed since it was trained ({', '.join(names)})"
            )
    return FINISHED, None


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
        if row is None:
            return None
        state, _ = status(row, combo, builder.build(combo).inputs)
        return row if state == FINISHED else None

    def finish(self, key: str, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Record a trained combination: its results line first (a failed plot never loses a
        finished combination), then its optional artefacts, then the index. A write that fails
        says what is recorded and what re-running does."""
        files = self.files(key)
        name = f"combo-{files.number:03d}"
        trained = f"{name} is trained" + (
            " and its checkpoint written" if row.get("checkpoint") else ""
        )
        with atomic.write_point(
            self.run.path / RESULTS,
            lambda: f"{trained}, but it is not recorded; {rerun_note(files)}",
        ):
            self.run.record(row)
        self.results[key] = row
        combo = self.combos[self.keys.index(key)]
        finish_trial(files, combo, row, history)
        with atomic.write_point(
            self.run.path / "run.json",
            f"{name} is recorded in {RESULTS}, but the run's run.json and the results index "
            "(index.csv) are not updated; re-running the command updates them (finished "
            "combinations are not trained again)",
        ):
            note_progress(self.config, self.run, list(self.results.values()), len(self.combos))


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
    nothing = (
        "nothing was trained by this command (results recorded earlier are kept), so "
        "re-running the command starts it again"
    )
    with atomic.write_point(run.path, nothing):
        run.path.mkdir(parents=True, exist_ok=True)
    keys = [configuration.identity(c) for c in combos]
    with atomic.write_point(run.path / REGISTRY, nothing):
        numbers = run.number_for(keys)
    grid = Grid(dict(config), run, combos, keys, numbers)
    with log_into(run.path):
        for stale in [
            *atomic.remove_stale_temps(run.path, recursive=True),
            *atomic.remove_stale_temps(run.checkpoints),
        ]:
            log.info(f"removed {stale}, left by a writer that was killed")
        info = run_info(str(config["model"]), list(argv) if argv is not None else None)
        with atomic.write_point(run.path / "config.yaml", nothing):
            atomic.write_text(
                run.path / "config.yaml", configuration.to_yaml({**config, "run_info": info})
            )
        log.info(experiment.data.summary())
        for note in experiment.data.notes + experiment.notes:
            log.info(f"note: {note}")
        if config["dataset"] == EMBEDDED_NAME:
            log.info(f"note: {report.SYNTHETIC_NOTE}")
        log.info(f"device: {experiment.device}; results: {run.path}")
        recorded = run.results()
        for combo, key in zip(combos, keys, strict=True):
            row = recorded.get(key)
            state, why = status(row, combo, builder.build(combo).inputs)
            if state == FINISHED and row is not None:
                grid.results[key] = row
                log.info(f"=== combo-{grid.numbers[key]:03d}: already finished, skipped")
                if on_trial:
                    on_trial(row)
            else:
                grid.todo.append((combo, key))
                if why:
                    log.info(f"combo-{grid.numbers[key]:03d}: retraining: {why}")
    return grid


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
    if not history:
        return  # a model that trains nothing has no curve
    title = f"{combo['model']} on {combo['dataset']}, combo-{files.number:03d}: {label(combo['params'])}"
    try:
        report.plot_curve(
            history, str(combo["valid_metric"]).lower(), files.folder / "curve.png", title,
            best_epoch=row.get("best_epoch"),
        )  # fmt: skip
    except OSError as exc:
        log.warning(
            f"warning: could not draw {files.folder / 'curve.png'} ({exc.strerror or exc}); "
            f"combo-{files.number:03d} is recorded and its curve's numbers are in its "
            "metrics.jsonl (a re-run does not draw it again)"
        )


def note_progress(
    config: Mapping[str, Any], run: RunFolder, results: list[dict[str, Any]], total: int
) -> None:
    """Update the run's ``run.json`` and the results index (``results/index.csv``)."""
    winner = report.pick_winner(results, "valid", str(config["valid_metric"]).lower())
    record = index.run_record(config, results, winner, total, run.path)
    index.record_run(record, project_path(config["results_dir"]))


def close_grid(grid: Grid) -> dict[str, Any]:
    """Summarise a trained grid: print and save the grid table, the two winners and the grid
    plot; update the index. Returns ``{"results", "by_valid", "by_test", "run_dir"}``."""
    config, run = grid.config, grid.run
    with log_into(run.path):
        results = [grid.results[k] for k in grid.keys if k in grid.results]
        defaults = configuration.load_config(
            config["model"], config["dataset"], strategy=configuration.strategy_name(config)
        )
        text, by_valid, by_test = report.summary_markdown(
            config,
            results,
            report.changed_settings(config, defaults),
            config["dataset"] == EMBEDDED_NAME,
        )
        recorded = f"every finished combination is recorded in {RESULTS}"
        with atomic.write_point(
            run.path / "summary.md", f"{recorded}, but the summary is not written; {RERUN_WRITES}"
        ):
            atomic.write_text(run.path / "summary.md", text)
        with atomic.write_point(
            run.path / "run.json",
            f"{recorded} and summary.md is written, but the run's run.json and the results index "
            f"(index.csv) are not updated; {RERUN_WRITES.replace('writes it', 'updates them')}",
        ):
            note_progress(config, run, results, len(results))
        log.info("\n" + text)
        metric = str(config["valid_metric"]).lower()
        try:
            title = (
                f"{config['model']} on {config['dataset']}, {configuration.strategy_label(config)}"
            )
            report.plot_grid(results, metric, run.path / "grid.png", title, by_valid)
        except OSError as exc:
            log.warning(
                f"warning: could not draw {run.path / 'grid.png'} ({exc.strerror or exc}); the "
                f"results and summary.md are written; {RERUN_WRITES.replace('writes', 'draws')}"
            )
        log.info(f"results, logs and curves: {run.path}")
    return {"results": results, "by_valid": by_valid, "by_test": by_test, "run_dir": str(run.path)}


def folders(grids: Sequence[Grid]) -> list[Path]:
    """The run folders of ``grids``."""
    return [grid.run.path for grid in grids]
