"""The ``mgrec`` logger: console lines that do not break progress bars, and each run folder's
``train.log``. Handlers are attached per block of work (``log_into``): nothing about which
log was written last is kept between calls."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from tqdm import tqdm

from mgrec.errors import error_line

log = logging.getLogger("mgrec")
LOG_NAME = "train.log"


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


class LogFile(logging.FileHandler):
    """A run's train.log. A write that fails (a full disk) is reported in one line, once per
    file and process: never logging's traceback blocks."""

    failed_paths: ClassVar[set[str]] = set()

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if self.baseFilename not in self.failed_paths:
            self.failed_paths.add(self.baseFilename)
            error = sys.exc_info()[1]
            why = f" ({error.strerror or error})" if isinstance(error, OSError) else ""
            tqdm.write(
                f"mgrec: warning: cannot write {self.baseFilename}{why}: log lines from here on "
                "may be missing from it (the run goes on; its results go to other files)"
            )


def setup_logging(quiet: bool = False) -> None:
    """Log INFO to the console (through tqdm; warnings only when ``quiet``), replacing the
    handlers an earlier call attached."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = _TqdmHandler()
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)


@contextlib.contextmanager
def log_into(folder: Path) -> Iterator[None]:
    """Also log into ``folder/train.log`` for the block."""
    handler = LogFile(folder / LOG_NAME)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def append_lines(folder: Path, lines: Sequence[str]) -> None:
    """Add lines (a worker's log, a final error) to ``folder/train.log``, time-stamped; a log
    that cannot be written is left alone."""
    if not lines:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError), open(folder / LOG_NAME, "a", encoding="utf-8") as handle:
        handle.write("".join(f"{stamp} {line}\n" for line in lines))


@contextlib.contextmanager
def errors_logged(folders: Sequence[Path]) -> Iterator[None]:
    """Write the line the command line ends with (a user error, a fault of the environment, an
    interruption) into each folder's train.log too, then let it propagate."""
    try:
        yield
    except BaseException as error:
        line = error_line(error)
        if line is not None:
            for folder in folders:
                append_lines(folder, [line[0]])
        raise
