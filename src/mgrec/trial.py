"""One trial: one grid combination trained, evaluated and saved, resumable from its last epoch.

A trial starts from an ``Experiment`` (the composition root's product for one combination) and
its folder ``combo-NNN/``, and ends with a results row (returned; the caller records it) and the
best-validation checkpoint. On the way it writes ``config.yaml``, one ``metrics.jsonl`` line per
epoch, and, every ``save_every`` epochs, ``training_state.pth``: the model, the optimizer and
scheduler, every random generator, the early-stopping counters and the best state so far. A trial
started where such a state exists (for the same combination, data and code, and intact: its
checksum is verified, see ``checkpoint``) continues from it and ends with exactly the metrics an
uninterrupted run would have.

The checkpoint holds, besides the best epoch's parameters, what its scores depended on
(``scoring``: ``Recommender.scoring_state``), so ``--resume`` reproduces its stored metrics.

A write that fails (a full disk) ends the trial with one line (``WriteFault``) saying what is
saved and what re-running the command will do (``SavedState.rerun``); a training state that
cannot be saved is a warning saying the same, and training goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mgrec import atomic, checkpoint, rng
from mgrec import config as configuration
from mgrec.checkpoint import UnreadableFile
from mgrec.experiment import Experiment
from mgrec.models import Recommender
from mgrec.provenance import code_fingerprint
from mgrec.trainer import EpochRecord, FitProgress, Trainer
from mgrec.version import __version__

log = logging.getLogger("mgrec")
STATE_FILE = "training_state.pth"


@dataclass
class TrialFiles:
    """Where one trial's files go."""

    number: int  # the combination's folder number (combo-NNN)
    folder: Path
    checkpoint: Path

    @property
    def state(self) -> Path:
        return self.folder / STATE_FILE

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"


def label(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _identity(experiment: Experiment) -> dict[str, Any]:
    """What a saved training state must match to be continued."""
    return {
        "key": configuration.identity(experiment.config),
        "inputs": experiment.inputs,
        "code": code_fingerprint(str(experiment.config["model"])),
    }


@dataclass
class SavedState:
    """What of a combination's training is saved on disk (its last training state), so that a
    fault message says truly what re-running the command will do.

    ``epoch`` is the next epoch to run from the training state last saved or loaded (None: no
    usable state), ``finished`` whether that state holds the finished training.
    """

    number: int
    epoch: int | None = None
    finished: bool = False
    failures: int = 0  # training states that could not be saved

    @property
    def name(self) -> str:
        return f"combo-{self.number:03d}"

    def saved(self, progress: FitProgress) -> None:
        self.epoch, self.finished = progress.epoch, progress.finished

    def rerun(self) -> str:
        """What re-running the command does for this combination, given what is saved."""
        if self.epoch is None:
            return (
                f"{self.name} has no training state saved, so re-running the command trains "
                "it from the start"
            )
        if self.finished:
            return (
                f"{self.name}'s training state holds its finished training, so re-running the "
                "command writes its checkpoint and records it without training again"
            )
        return (
            f"{self.name}'s training state is saved up to epoch {self.epoch}, so re-running the "
            f"command continues it from epoch {self.epoch}"
        )


def load_state(experiment: Experiment, files: TrialFiles) -> dict[str, Any] | None:
    """The saved training state of this trial, if there is one for the same combination, data
    and code, it loads and its checksum matches; otherwise None (with a note saying why it is
    not used: a damaged state is a warning)."""
    if not files.state.is_file():
        return None
    try:
        state, verified = checkpoint.load_file(files.state, what="training state")
    except UnreadableFile as exc:
        log.warning(f"warning: {exc}; combo-{files.number:03d} is trained again from the start")
        return None
    if not verified:
        log.info(f"{files.state}: carries no checksum (an older mgrec's); starting over")
        return None
    wanted = _identity(experiment)
    if not isinstance(state, dict) or any(state.get(k) != v for k, v in wanted.items()):
        log.info(f"{files.state}: saved for other settings, data or code; starting over")
        return None
    lines = files.metrics.read_text(encoding="utf-8") if files.metrics.is_file() else ""
    if lines.count("\n") < state["progress"]["epoch"]:
        log.info(f"{files.metrics}: shorter than its training state; starting over")
        return None
    return state


def rerun_note(files: TrialFiles) -> str:
    """What re-running the command does for this combination, judged from the training state on
    disk (read only when a later write point fails, to say so truly)."""
    saved = SavedState(files.number)
    try:
        state, verified = checkpoint.load_file(files.state, what="training state")
        if verified and isinstance(state, dict):
            saved.epoch = int(state["progress"]["epoch"])
            saved.finished = bool(state["progress"]["finished"])
    except (UnreadableFile, KeyError, TypeError, ValueError):
        pass
    return saved.rerun()


def save_state(
    files: TrialFiles,
    experiment: Experiment,
    model: Recommender,
    trainer: Trainer,
    progress: FitProgress,
    seconds: float,
    saved: SavedState | None = None,
) -> bool:
    """Write the training state atomically, with its checksum; whether it was written. A
    failure (a full disk) is a warning saying what a re-run would continue from (the state
    saved before, kept intact): the trial goes on."""
    state = {
        **_identity(experiment),
        "version": __version__,
        "model": model.state_dict(),
        "model_training_state": model.training_state(),
        "seconds": seconds,
        "trainer": trainer.state_dict(),
        "progress": progress.to_state(),
        "rng": rng.capture(),
        "sampler": experiment.batches.generator.get_state(),
    }
    saved = saved or SavedState(files.number)
    try:
        atomic.save_torch(checkpoint.seal(state), files.state)
    except OSError as exc:
        saved.failures += 1
        message = (
            f"could not save the training state {files.state} after epoch {progress.epoch - 1} "
            f"({exc.strerror or exc}); training goes on (if it is interrupted, {saved.rerun()})"
        )
        # The first failure is a warning; later ones (a disk that stays full) go to the log.
        (log.warning if saved.failures == 1 else log.info)(f"warning: {message}")
        return False
    saved.saved(progress)
    return True


class _Board:
    """TensorBoard events of one combination (``tensorboard: true``): per epoch the loss, the
    train/eval seconds and every validation metric; at the end its hyper-parameters with its best
    metrics, for TensorBoard's HParams view. Epochs re-run after a resume replace their events."""

    def __init__(self, folder: Path, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(str(folder), purge_step=first_epoch or None)

    def epoch(self, record: EpochRecord) -> None:
        add = self.writer.add_scalar
        add("train/loss", record.loss, record.epoch)
        add("time/train_seconds", record.train_seconds, record.epoch)
        if record.valid is not None:
            add("time/eval_seconds", record.eval_seconds, record.epoch)
            for name, value in record.valid.items():
                add(f"valid/{name}", value, record.epoch)
        self.writer.flush()

    def hparams(
        self, params: Mapping[str, Any], valid: Mapping[str, float], test: Mapping[str, float]
    ) -> None:
        plain = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()
        }
        metrics = {f"best/valid_{k}": v for k, v in valid.items()}
        metrics.update({f"best/test_{k}": v for k, v in test.items()})
        if metrics:
            self.writer.add_hparams(plain, metrics, run_name="hparams")

    def close(self) -> None:
        self.writer.close()


def _tensorboard(files: TrialFiles, combo: Mapping[str, Any], first_epoch: int) -> _Board | None:
    return _Board(files.folder / "tensorboard", first_epoch) if combo.get("tensorboard") else None


def _append(path: Path, record: EpochRecord) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(record)) + "\n")
        handle.flush()


def _keep_epochs(path: Path, epochs: int) -> list[EpochRecord]:
    """Keep the first ``epochs`` lines of a metrics file (a resumed trial rewrites the rest) and
    return them as records."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
    kept = [line for line in lines if line.endswith("\n")][:epochs]
    atomic.write_text(path, "".join(kept))
    return [EpochRecord(**json.loads(line)) for line in kept]


def run(
    experiment: Experiment, files: TrialFiles, quiet: bool = False, position: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train and evaluate one combination; return its results row and its epoch history.

    The row holds the combination's key, grid values, best epoch, best-validation metrics, test
    metrics at that epoch, how it stopped, its checkpoint, and the fingerprints of the data and
    code it came from.
    """
    combo = experiment.config
    params = combo["params"]
    metric = str(combo["valid_metric"]).lower()
    start = time.perf_counter()
    earlier = 0.0  # seconds spent on this combination by earlier, interrupted runs
    model = experiment.build_model()
    experiment.batches.seed(int(combo["seed"]))
    trainer = Trainer(model, combo)
    progress = None
    saved = SavedState(files.number)
    state = load_state(experiment, files)
    name = saved.name
    if state is not None:
        model.load_state_dict(state["model"])
        model.load_training_state(state["model_training_state"])
        trainer.load_state_dict(state["trainer"])
        rng.restore(state["rng"])
        experiment.batches.generator.set_state(state["sampler"])
        saved.epoch, saved.finished = state["progress"]["epoch"], state["progress"]["finished"]
        with atomic.write_point(
            files.metrics, f"{name} was not trained by this command; {saved.rerun()}"
        ):
            history = _keep_epochs(files.metrics, state["progress"]["epoch"])
        progress = FitProgress.from_state(state["progress"], history)
        earlier = float(state["seconds"])
    with atomic.write_point(
        files.folder / "config.yaml", f"{name} was not trained by this command; {saved.rerun()}"
    ):
        atomic.write_text(files.folder / "config.yaml", configuration.to_yaml(combo))
    if progress is not None:
        log.info(f"resuming combination {files.number} from epoch {progress.epoch}")
    else:
        with atomic.write_point(
            files.metrics, f"{name} was not trained by this command; {saved.rerun()}"
        ):
            atomic.write_text(files.metrics, "")
        log.info(
            f"model built in {time.perf_counter() - start:.2f}s, "
            f"{sum(p.numel() for p in model.parameters())} trainable parameters"
        )
    bar = tqdm(
        total=int(combo["epochs"]), initial=0 if progress is None else progress.epoch,
        desc=f"combo-{files.number:03d}", unit="epoch", leave=False, dynamic_ncols=True,
        disable=True if quiet else None, position=position,  # None: bars only on a terminal
    )  # fmt: skip
    save_every = int(combo.get("save_every") or 0)
    board = _tensorboard(files, combo, 0 if progress is None else progress.epoch)

    def on_epoch(record: EpochRecord) -> None:
        with atomic.write_point(
            files.metrics, f"{name} stopped in epoch {record.epoch}; {saved.rerun()}"
        ):
            _append(files.metrics, record)
        if board is not None:
            board.epoch(record)
        line = f"epoch {record.epoch}: loss {record.loss:.4f}, train {record.train_seconds:.2f}s"
        if record.valid is not None:
            line += f", eval {record.eval_seconds:.2f}s, valid {metric} {record.valid[metric]:.4f}"
            line += " (best)" if record.improved else ""
        log.info(line)
        bar.update(1)
        postfix = {"loss": f"{record.loss:.4f}"}
        if record.valid is not None:
            postfix[metric] = f"{record.valid[metric]:.4f}"
        bar.set_postfix(postfix)

    def on_epoch_end(current: FitProgress) -> None:
        if save_every > 0 and (current.finished or current.epoch % save_every == 0):
            elapsed = earlier + time.perf_counter() - start
            save_state(files, experiment, model, trainer, current, elapsed, saved)

    try:
        fit = trainer.fit(
            experiment.batches,
            validate=lambda: experiment.evaluate(model, "valid"),
            test=lambda: experiment.evaluate(model, "test"),
            on_epoch=on_epoch,
            keep_best_state=bool(combo["save_checkpoints"]),
            progress=progress,
            on_epoch_end=on_epoch_end,
        )
    except BaseException:
        if board is not None:
            board.close()
        raise
    finally:
        bar.close()
    seconds = earlier + time.perf_counter() - start
    if fit.message:
        log.warning(fit.message)
    checkpoint_path = None
    if fit.best_state is not None:
        checkpoint_path = files.checkpoint
        best = f"best epoch {fit.best_epoch}"
        with atomic.write_point(
            checkpoint_path,
            f"{name} finished training ({best}), but its checkpoint is not written and it is "
            f"not recorded; {saved.rerun()}",
        ):
            checkpoint.save(checkpoint_path, {
                "state_dict": fit.best_state, "scoring": fit.best_scoring or {}, "config": dict(combo),
                "model": combo["model"], "dataset": combo["dataset"],
                "metrics": {"valid": fit.best_valid, "test": fit.test_at_best}, "best_epoch": fit.best_epoch,
                "inputs": experiment.inputs, "code": code_fingerprint(str(combo["model"])),
            })  # fmt: skip
    best = "none" if fit.best_epoch is None else f"epoch {fit.best_epoch}"
    log.info(
        f"finished in {seconds:.1f}s ({fit.stopped}); best validation at {best}: "
        f"valid {metric} {fit.best_valid.get(metric, float('nan')):.4f}, "
        f"test {metric} {fit.test_at_best.get(metric, float('nan')):.4f}"
    )
    if board is not None:
        board.hparams(params, fit.best_valid, fit.test_at_best)
        board.close()
    row = {
        "index": files.number,
        "key": configuration.identity(combo),
        "params": params,
        "best_epoch": fit.best_epoch,
        "epochs": len(fit.history),
        "stopped": fit.stopped,
        "message": fit.message,
        "valid": fit.best_valid,
        "test": fit.test_at_best,
        "test_mask": experiment.evaluators["test"].mask_rule,
        "seconds": round(seconds, 3),
        "checkpoint": None if checkpoint_path is None else str(checkpoint_path),
        "folder": str(files.folder),
        "inputs": experiment.inputs,
        "code": code_fingerprint(str(combo["model"])),
    }
    return row, [asdict(record) for record in fit.history]
