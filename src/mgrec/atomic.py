"""Writing files so that a reader never sees half of one: a temp file beside the target, then a
rename (atomic on POSIX file systems).

Every file and folder mgrec writes goes through here (checkpoints, training states, cache
entries, the user graph, prepared datasets, the embedded dataset, results). Temp names carry the
writer's process id, ``.<name>.<pid>.<random>.tmp``, so that temp files left by a killed writer
can be told from those of a live one and removed at start-up (``remove_stale_temps``).

Each place a run writes is a ``write_point``: a failure there ends the command with one line
naming the file and saying what is saved, what is not, and what re-running the command does.

Files get the permissions a plain ``open(path, "w")`` would give (0666 minus the umask), not the
0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_mode(path: Path, directory: bool = False) -> None:
    """Give ``path`` the permissions a plain create would: 0666 (0777 for a folder) & ~umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def temp_path(target: Path, directory: bool = False) -> Path:
    """A fresh, empty temp file (or folder) beside ``target``, named for this process."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{os.getpid()}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=target.parent))
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(handle)
    return Path(name)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; it replaces ``target`` only if the block succeeds.

    The block writes the temp path by any means (``np.save``, ``torch.save``, ``to_csv``); on an
    exception (a full disk, Ctrl-C) the temp file is removed and ``target`` is untouched.
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        yield tmp
        usual_mode(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(target: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open`` a temp file beside ``target`` (``mode`` "w" or "wb"); renamed into place,
    after an ``fsync``, when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(target: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_open(target, "w") as handle:
        handle.write(text)


def write_bytes(target: Path, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_open(target, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``target``, renamed to ``target`` when the block succeeds.

    If ``target`` appeared meanwhile (another process won the race) the temp folder is dropped
    and ``FileExistsError`` raised, unless ``replace``, which swaps the old folder out first.
    """
    target = Path(target)
    tmp = temp_path(target, directory=True)
    try:
        yield tmp
        usual_mode(tmp, directory=True)
        if replace and target.exists():
            old = temp_path(target, directory=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if target.exists():
                    raise FileExistsError(f"{target} was created by another process") from exc
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _WriteRecorder(io.RawIOBase):
    """A binary file wrapper that remembers the ``OSError`` of a failed write (torch.save turns
    it into an opaque RuntimeError)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.raw.flush()


def save_torch(obj: Any, target: Path) -> None:
    """``torch.save(obj)`` to ``target`` atomically; a failed write (a full disk) raises its
    ``OSError``, not torch's RuntimeError. (No fsync: the rename is atomic against a killed
    process, which is the fault this guards; durability across a power cut is the file
    system's.)"""
    import torch

    with atomic_path(Path(target)) as tmp, open(tmp, "wb", buffering=1 << 20) as raw:
        recorder = _WriteRecorder(raw)
        try:
            torch.save(obj, recorder)  # type: ignore[arg-type]
        except RuntimeError as exc:
            if recorder.error is not None:
                raise recorder.error from exc
            raise


@contextlib.contextmanager
def write_point(path: Path, consequence: str | Callable[[], str]) -> Iterator[None]:
    """A place where a run writes ``path``: a failed write (``OSError``) inside the block
    becomes a ``WriteFault`` whose one line names ``path`` and says ``consequence`` (what was
    saved, what was not, what re-running the command does; a callable is asked only then).
    Faults from an inner write point pass through unchanged."""
    from mgrec.errors import WriteFault

    try:
        yield
    except WriteFault:
        raise
    except OSError as exc:
        text = consequence() if callable(consequence) else consequence
        raise WriteFault(path, exc, text) from exc


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: Path, recursive: bool = False) -> list[Path]:
    """Remove temp files and folders under ``folder`` whose writer (by the pid in the name) is no
    longer running on this machine; returns what was removed. Missing folders are fine."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    candidates = folder.rglob(f".*{TEMP_SUFFIX}") if recursive else folder.glob(f".*{TEMP_SUFFIX}")
    for path in list(candidates):
        match = _TEMP_NAME.match(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
