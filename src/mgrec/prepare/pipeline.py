"""The work folder of a preparation: step keys, markers, reuse of finished steps, publishing.

``<out>/.prepare-<name>-work/`` holds ``steps/<step>.json`` (the key and summary of each
finished step), ``steps/*.npz|json`` (intermediate results) and ``dataset/`` (the files of the
final folder). A step whose marker holds the key of its current inputs, and whose outputs are
all there, is reused instead of run; at the end the files of ``dataset/`` are moved into a temp
folder beside ``<out>/<name>`` that is renamed into place (:func:`mgrec.atomic.atomic_dir`), so
``<out>/<name>`` is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgrec.atomic import atomic_dir, remove_stale_temps, write_text
from mgrec.errors import UserError

STEPS = ("ratings", "split", "metadata", "images", "user graph", "text")
STEP_FORMAT = 1  # bump when a step's outputs change, so old work folders are not re-used

Echo = Callable[[str], None]
"""Where the step summaries go (``print`` on the command line)."""


@dataclass(frozen=True)
class Work:
    """The folders of one preparation of ``<out>/<name>``."""

    out: Path
    name: str

    @property
    def root(self) -> Path:
        """``<out>/.prepare-<name>-work``: kept between runs until the dataset is published."""
        return self.out / f".prepare-{self.name}-work"

    @property
    def steps(self) -> Path:
        """The steps' markers and intermediate results."""
        return self.root / "steps"

    @property
    def build(self) -> Path:
        """The files of the dataset being built."""
        return self.root / "dataset"

    @property
    def target(self) -> Path:
        """The finished dataset folder, ``<out>/<name>``."""
        return self.out / self.name

    def marker(self, step: str) -> Path:
        """``steps/<step>.json``: the key and summary of a finished step."""
        return self.steps / f"{step.replace(' ', '_')}.json"

    def open(self) -> None:
        """Create the folders, dropping temp files left by a killed run (never published)."""
        self.build.mkdir(parents=True, exist_ok=True)
        self.steps.mkdir(parents=True, exist_ok=True)
        for folder in (self.out, self.build, self.steps):
            remove_stale_temps(folder)

    def discard_unless_useful(self) -> None:
        """After a failure: remove the work folder if no step finished (nothing to reuse)."""
        if not any(self.steps.glob("*.json")):
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Done:
    """A finished step.

    Attributes:
        key: what its result depends on (hashed); the keys of later steps include it.
        info: its JSON summary (counts, the report of unparsable lines), kept in its marker.
        reused: taken from the work folder rather than run.
    """

    key: str
    info: dict[str, Any]
    reused: bool = False


def step_key(**parts: Any) -> str:
    """A short hash of everything a step's result depends on."""
    text = json.dumps({"format": STEP_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _stored_info(marker: Path, key: str) -> dict[str, Any] | None:
    """The summary kept in ``marker`` if it was written under ``key``, else None."""
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
        return stored["info"] if stored.get("key") == key else None
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return None


def run_step(
    work: Work,
    step: str,
    key: str,
    build: Callable[[], dict[str, Any]],
    describe: Callable[[dict[str, Any]], list[str]],
    outputs: Sequence[Path],
    echo: Echo,
) -> Done:
    """Reuse the step's result if its marker holds ``key`` and its ``outputs`` all exist, else
    run ``build`` (which writes the outputs and returns a JSON-able summary) and write the
    marker; print ``[n/6] step: <summary>`` either way."""
    info = None
    if work.marker(step).is_file() and all(path.is_file() for path in outputs):
        info = _stored_info(work.marker(step), key)
    reused = info is not None
    if info is None:
        info = build()
        write_text(work.marker(step), json.dumps({"key": key, "info": info}))
    lines = describe(info)
    number = f"[{STEPS.index(step) + 1}/{len(STEPS)}]"
    echo(f"{number} {step}{' (reused)' if reused else ''}: {lines[0]}")
    for line in lines[1:]:
        echo(f"      {line}")
    return Done(key, info, reused)


def check_target(work: Work, force: bool) -> None:
    """Refuse to replace an existing dataset without --force (checked before any work)."""
    if (work.target.exists() or work.target.is_symlink()) and not force:
        raise UserError(
            f"{work.target}: a dataset of that name exists; pass --force to replace it, "
            "or choose another --name"
        )


def publish(work: Work, files: Sequence[str], force: bool) -> None:
    """Move the built ``files`` into ``<out>/<name>`` in one rename (replacing an old folder
    under --force, only once the new one is complete) and remove the work folder."""
    check_target(work, force)
    target = work.target
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()  # (--force) atomic_dir swaps out only a real folder
    try:
        with atomic_dir(target, replace=force) as folder:
            for name in files:
                os.replace(work.build / name, folder / name)
    except FileExistsError as exc:  # another process published the same name meanwhile
        raise UserError(
            f"{target}: a dataset of that name appeared while this one was built; pass --force "
            "to replace it"
        ) from exc
    shutil.rmtree(work.root, ignore_errors=True)


def shown(path: Path) -> str:
    """A path for the console: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
