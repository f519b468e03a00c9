"""What the three raw readers share: opening a file (gzip or plain), progress bars, the report of
lines that cannot be parsed, a file's fingerprint, and telling a swapped input file early.

The three inputs of one 2014 Amazon category (McAuley et al.), each in its published format:

* ``ratings_<Category>.csv``: no header, one ``user,item,rating,timestamp`` line per rating
  (read by :mod:`mgrec.prepare.ratings`);
* ``meta_<Category>.json.gz``: one Python-literal dict per line, gzip or plain
  (:mod:`mgrec.prepare.metadata`);
* ``image_features_<Category>.b``: records of a 10-byte asin + 4096 float32
  (:mod:`mgrec.prepare.images`).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from tqdm import tqdm  # type: ignore[import-untyped]

from mgrec.errors import UserError

GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
"""What reading a damaged or cut-short gzip stream raises."""

SNIFF_BYTES = 1 << 16  # how much of a file's (decompressed) start tells its kind


@dataclass
class LineReport:
    """Lines (or records) of one input file that could not be parsed: a count and the first few.

    Attributes:
        file: the input file, as shown to the user.
        unit: what is counted, ``"line"`` or ``"record"``.
        count: how many could not be parsed.
        examples: ``"line 7: <problem>: '<text>'"`` for the first ``limit`` of them.
    """

    file: str
    unit: str = "line"
    count: int = 0
    examples: list[str] = field(default_factory=list)
    limit: int = 3

    def add(self, where: int, problem: str, text: bytes | str = b"") -> None:
        """Count one unparsable line (``where``: its 1-based number, or a record's byte offset)."""
        self.count += 1
        if len(self.examples) < self.limit:
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            shown = f": {text[:60]!r}{'...' if len(text) > 60 else ''}" if text else ""
            place = f"line {where}" if self.unit == "line" else f"record at byte {where}"
            self.examples.append(f"{place}: {problem}{shown}")

    def describe(self) -> list[str]:
        """Lines for the console: nothing when all parsed, else the count and the examples."""
        if not self.count:
            return []
        plural = "s" if self.count > 1 else ""
        head = (
            f"{self.file}: {self.count:,} {self.unit}{plural} could not be parsed and were skipped"
        )
        more = ["  (first ones shown)"] if self.count > len(self.examples) else []
        return [head + ":", *(f"  {e}" for e in self.examples), *more]

    def check_strict(self, strict: bool) -> None:
        """Under ``--strict``, any unparsable line is an error (one line naming the first)."""
        if strict and self.count:
            plural = "s" if self.count > 1 else ""
            raise UserError(
                f"{self.file}: {self.count:,} {self.unit}{plural} could not be parsed (first: "
                f"{self.examples[0]}); fix the file, or run without --strict to skip them"
            )

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able dict (kept in a step's marker)."""
        return {
            "file": self.file,
            "unit": self.unit,
            "count": self.count,
            "examples": self.examples,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LineReport:
        """The report :meth:`to_json` gave."""
        return cls(data["file"], data["unit"], int(data["count"]), list(data["examples"]))


@contextmanager
def open_input(path: Path) -> Iterator[tuple[BinaryIO, Callable[[], int]]]:
    """Open a raw file for reading as bytes, gunzipping it when it starts with gzip's magic.

    Yields ``(stream, position)``: ``position()`` is the byte offset reached in the file on disk
    (compressed bytes for a gzip file), for progress bars.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield cast(BinaryIO, stream), raw.tell  # (a GzipFile reads as one)
        else:
            yield raw, raw.tell


def byte_bar(path: Path, desc: str, progress: bool) -> tqdm:
    """A progress bar over the bytes of ``path`` on disk (hidden unless ``progress``)."""
    return tqdm(
        total=path.stat().st_size, desc=desc, unit="B", unit_scale=True, disable=not progress
    )


def damaged(path: Path, exc: BaseException) -> UserError:
    """The error for a gzip stream that cannot be read to its end."""
    return UserError(
        f"{path}: the gzip stream is damaged or cut short ({exc}); download the file again"
    )


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies an input file's version for re-use: path, size and modification time."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


# ---------------------------------------------------------------------------------- file kinds

# flag -> (the kind it takes, what it takes, what a file of that kind looks like)
EXPECTED = {
    "--ratings": ("ratings",
                  "the ratings CSV (ratings_<Category>.csv: user,item,rating,timestamp lines)",
                  "a ratings CSV"),
    "--meta": ("metadata", "meta_<Category>.json.gz (one {'asin': ...} dict per line)",
               "a metadata file"),
    "--images": ("images",
                 "image_features_<Category>.b (records of a 10-byte asin + 4096 float32)",
                 "a binary file, such as the image features"),
}  # fmt: skip


def sniff(path: Path) -> str | None:
    """Which of the three inputs a file looks like, from its first 64 KiB (decompressed).

    Returns ``"images"`` for a binary file (NUL bytes: text never holds them, the float32 of the
    image records nearly always do), ``"metadata"`` when the first non-blank line starts with
    ``{``, ``"ratings"`` when it is UTF-8 with exactly four comma-separated fields, and ``None``
    when it is none of these clearly (empty, damaged, something else): the readers then judge.
    """
    try:
        with open_input(path) as (stream, _):
            head = stream.read(SNIFF_BYTES)
    except (*GZIP_ERRORS, OSError):
        return None
    if b"\0" in head:
        return "images"
    first = next((line.strip() for line in head.split(b"\n") if line.strip()), b"")
    if first.startswith(b"{"):
        return "metadata"
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "ratings" if text.count(",") == 3 else None


def check_kind(path: Path, flag: str) -> None:
    """Raise a one-line UserError when the file given for ``flag`` is clearly another input
    (two files swapped), before any step reads it; a file of unclear kind passes."""
    wanted, takes, _ = EXPECTED[flag]
    found = sniff(path)
    if found is None or found == wanted:
        return
    other_flag, (_, _, looks) = next((f, v) for f, v in EXPECTED.items() if v[0] == found)
    raise UserError(
        f"{path}: {flag} takes {takes}, but this file looks like {looks} (for {other_flag}); "
        "were two of the files swapped?"
    )
