"""A run's folder on disk: its combinations' numbers, claims, and the results file.

A run lives in ``<results_dir>/<dataset>/<Model>-<strategy>-<dataset>-<hash>/`` (the hash covers
the run's settings apart from the values of its grid keys, so a grid that grows keeps its
folder) with its checkpoints in ``<checkpoint_dir>/<dataset>/<same name>/``::

    config.yaml          the fully resolved config of the latest command (grid lists included)
    combos.tsv           combination key -> folder number, in the order they were first seen
    results.jsonl        one line per finished combination (appended; a retrained one replaces
                         its old line)
    train.log            the log shown on the console
    summary.md           the grid table and both winners
    combo-NNN/           config.yaml, metrics.jsonl, training_state.pth while unfinished,
                         curve.png, events (TensorBoard)

Several processes (two identical commands, or Ray workers' driver) may use one folder: the folder
lock (``.lock``) serialises numbering and results lines, and a combination is trained only by the
process holding its claim (``combo-NNN/.claim``). Both are ``flock`` locks: the kernel releases
them when their process dies, so a killed run never leaves a stale claim behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mgrec import atomic
from mgrec import config as configuration
from mgrec.models import registry
from mgrec.paths import project_path

RESULTS = "results.jsonl"
REGISTRY = "combos.tsv"
TRAINING_STATE = "training_state.pth"


def run_name(config: Mapping[str, Any]) -> str:
    """``<Model>-<strategy>-<dataset>-<hash>`` (strategy: mg, plain, sam, asam): readable, and
    unique per run's settings (a model given as ``module:Class`` shows its class name; the hash
    tells such models apart)."""
    tag = configuration.strategy_name(config)
    model = registry.find(str(config["model"])).display_name
    return f"{model}-{tag}-{config['dataset']}-{configuration.run_identity(config)}"


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[IO[str] | None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); None if ``blocking`` is
    False and another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (kept open: it holds the lock)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield handle
    finally:
        handle.close()  # releases the lock


@dataclass
class Claim:
    """A held claim on one combination (released by ``release`` or when the process dies)."""

    number: int
    handle: IO[str]

    def release(self) -> None:
        self.handle.close()


class RunFolder:
    """The folders of one run (results and checkpoints) and the operations that touch them."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        name = run_name(config)
        dataset = str(config["dataset"])
        self.path = project_path(config["results_dir"]) / dataset / name
        self.checkpoints = project_path(config["checkpoint_dir"]) / dataset / name

    # --- numbering and claims --------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The folder lock: numbering and results lines change only while it is held."""
        with _flock(self.path / ".lock"):
            yield

    def numbers(self) -> dict[str, int]:
        """Combination key -> folder number, as recorded so far."""
        path = self.path / REGISTRY
        if not path.is_file():
            return {}
        numbers = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, number = line.partition("\t")
            if number.isdigit():
                numbers[key] = int(number)
        return numbers

    def number_for(self, keys: list[str]) -> dict[str, int]:
        """Folder numbers of ``keys``, new keys numbered after the ones already recorded."""
        with self.locked():
            numbers = self.numbers()
            new = [k for k in dict.fromkeys(keys) if k not in numbers]
            if new:
                start = max(numbers.values(), default=-1) + 1
                lines = "".join(f"{k}\t{start + i}\n" for i, k in enumerate(new))
                with open(self.path / REGISTRY, "a", encoding="utf-8") as handle:
                    handle.write(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
                numbers.update({k: start + i for i, k in enumerate(new)})
        return {k: numbers[k] for k in keys}

    def combo_dir(self, number: int) -> Path:
        return self.path / f"combo-{number:03d}"

    def checkpoint_path(self, number: int) -> Path:
        return self.checkpoints / f"combo-{number:03d}.pth"

    def claim(self, number: int, blocking: bool = False) -> Claim | None:
        """Claim combination ``number`` for this process; None when another process holds it
        (``blocking`` waits for it instead)."""
        path = self.combo_dir(number) / ".claim"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (kept open: it holds the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        # Who holds it, for a person looking (the lock is the claim: a full disk that stops
        # this note from being written changes nothing).
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            handle.flush()
        return Claim(number, handle)

    # --- results ---------------------------------------------------------------------------

    def results(self) -> dict[str, dict[str, Any]]:
        """Finished combinations by key (the last line of a key wins; a torn line is ignored)."""
        path = self.path / RESULTS
        if not path.is_file():
            return {}
        rows: dict[str, dict[str, Any]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "key" in row:
                rows[row["key"]] = row
        return rows

    def record(self, row: Mapping[str, Any]) -> None:
        """Append a finished combination's line (under the folder lock, synced to disk). An
        older line of the same key (a combination retrained after its data changed) is
        removed first, by rewriting the file atomically."""
        path = self.path / RESULTS
        line = json.dumps(dict(row), allow_nan=True) + "\n"
        with self.locked():
            if path.is_file():
                lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                kept = [old for old in lines if _key_of(old) != row["key"]]
                torn = bool(lines) and not lines[-1].endswith("\n")
                if len(kept) != len(lines) or torn:
                    if kept and not kept[-1].endswith("\n"):
                        kept = kept[:-1]  # a torn last line (a killed writer) is dropped
                    atomic.write_text(path, "".join(kept))
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


def _key_of(line: str) -> str | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row.get("key") if isinstance(row, dict) else None
