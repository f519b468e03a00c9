"""The one exception type for mistakes a user can fix.

The CLI prints a ``UserError`` as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input (data, config, arguments) with a message saying what to do."""


def closest(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint, or '' when nothing is close (case is ignored)."""
    options = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.5)
    return f" (did you mean '{options[match[0]]}'?)" if match else ""


class WriteFault(OSError):
    """A file that could not be written (a full disk, a read-only folder), with what that means
    for the run: what was saved, what was not, and what re-running the command will do."""

    def __init__(self, path: object, cause: OSError, consequence: str) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.consequence = consequence

    def __str__(self) -> str:
        return f"cannot write {self.filename} ({self.strerror}): {self.consequence}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: finished work is kept and the process ends cleanly."""


def error_line(error: BaseException) -> tuple[str, int] | None:
    """The one line (and exit code) the command line ends with for a user mistake, a fault of
    the environment (a full disk, a read-only folder) or an interruption; None for anything
    else (a bug: it keeps its traceback)."""
    if isinstance(error, UserError):
        return f"mgrec: error: {error}", 2
    if isinstance(error, WriteFault):
        return f"mgrec: error: {error}", 1
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"mgrec: error: {error.strerror or error}{where}", 1
    if isinstance(error, KeyboardInterrupt):
        what = "terminated" if isinstance(error, Terminated) else "interrupted"
        return (
            f"mgrec: {what}; finished combinations are kept, and a re-run continues the "
            "unfinished one from its last saved epoch",
            143 if isinstance(error, Terminated) else 130,
        )
    return None
