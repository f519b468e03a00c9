"""Readers and transforms for the raw files of the 2014 Amazon review dataset (McAuley et al.).

The published per-category files, read here in their own formats and in bounded memory:

* ``ratings_<Category>.csv``: no header, one ``user,item,rating,timestamp`` line per rating
  (ids are strings, the item id is the 10-character asin, the timestamp is Unix seconds).
* ``meta_<Category>.json.gz``: despite the name, one *Python literal* dict per line (single
  quotes), gzip or plain, with keys such as ``asin``, ``title``, ``brand``, ``categories`` (a list
  of category paths, each a list of strings) and ``description``. Parsed with
  :func:`ast.literal_eval` (never ``eval``); a strict-JSON line is accepted too.
* ``image_features_<Category>.b``: back-to-back records of a 10-byte ASCII asin followed by
  4096 little-endian float32 (a CNN feature of the product image).

The transforms are those of the reference's preprocessing notebooks (MMRec's ``preprocessing/``):
drop rows missing a user, item or timestamp and duplicate (user, item, timestamp) rows, filter to
the 5-core, re-index ids by first appearance, build one sentence per item and fill missing image
features with the mean. Lines that cannot be parsed are skipped and counted in a
:class:`LineReport`; nothing here writes outside the arrays it is handed.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from mgrec.errors import UserError

RATING_FIELDS = ("user", "item", "rating", "timestamp")
ASIN_BYTES = 10
IMAGE_DIM = 4096
IMAGE_RECORD = np.dtype([("asin", f"S{ASIN_BYTES}"), ("feature", "<f4", (IMAGE_DIM,))])
K_CORE = 5
MISSING_TEXT = " "  # what the reference's encoder notebook puts for a missing field

# The published metadata lines start with the asin: ``{'asin': '0000031852', ...``. Reading it
# with a regular expression lets lines of items outside the dataset be skipped unparsed.
_ASIN_AT_START = re.compile(rb"""^\s*\{\s*(['"])asin\1\s*:\s*(['"])([^'"\\]*)\2""")
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


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
        return {
            "file": self.file,
            "unit": self.unit,
            "count": self.count,
            "examples": self.examples,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LineReport:
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
                yield stream, raw.tell
        else:
            yield raw, raw.tell


def _byte_bar(path: Path, desc: str, progress: bool) -> tqdm:
    return tqdm(
        total=path.stat().st_size, desc=desc, unit="B", unit_scale=True, disable=not progress
    )


def _damaged(path: Path, exc: BaseException) -> UserError:
    return UserError(
        f"{path}: the gzip stream is damaged or cut short ({exc}); download the file again"
    )


# ---------------------------------------------------------------------------------- ratings


@dataclass
class Ratings:
    """Ratings read from the CSV, rows in file order, ids as codes into sorted name tables.

    Attributes:
        users, items: int32 [rows] indices into ``user_names`` / ``item_names``.
        ratings: float64 [rows] the rating (NaN where the field was empty).
        timestamps: int64 [rows] Unix seconds.
        user_names, item_names: bytes arrays (``S``) [n] the raw ids, sorted.
        lines: lines read; missing: rows dropped for an empty user, item or timestamp.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_names: np.ndarray
    item_names: np.ndarray
    lines: int = 0
    missing: int = 0

    def take(self, keep: np.ndarray) -> Ratings:
        """The rows where ``keep`` (bool [rows]) is true, in order; name tables unchanged."""
        return Ratings(
            self.users[keep], self.items[keep], self.ratings[keep], self.timestamps[keep],
            self.user_names, self.item_names, self.lines, self.missing,
        )  # fmt: skip


class _CodeBuilder:
    """Turns a stream of ids into integer codes in bounded memory.

    Each block is factorised on its own; :meth:`finish` merges the block tables into one sorted
    table of byte strings and maps every block's codes into it. Only fixed-width byte arrays and
    int32 codes are kept between blocks, never one Python object per line.
    """

    def __init__(self) -> None:
        self.tables: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []

    def add(self, ids: Sequence[bytes] | np.ndarray) -> None:
        """One block of ids (bytes, or str that are encoded as UTF-8)."""
        codes, uniques = pd.factorize(np.asarray(ids, dtype=object))
        table = [u if isinstance(u, bytes) else u.encode("utf-8") for u in uniques.tolist()]
        self.tables.append(np.array(table, dtype=bytes))
        self.codes.append(codes.astype(np.int32))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """``(names S[n] sorted, codes int32 [rows])``."""
        if not self.tables:
            return np.array([], dtype="S1"), np.array([], dtype=np.int32)
        names = np.unique(np.concatenate(self.tables))
        codes = [np.searchsorted(names, t)[c] for t, c in zip(self.tables, self.codes, strict=True)]
        return names, np.concatenate(codes).astype(np.int32)


@dataclass
class _Block:
    """Parsed rows of one block of lines."""

    users: Sequence[bytes] | np.ndarray
    items: Sequence[bytes] | np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    missing: int = 0


def _parse_timestamp(field_: bytes) -> int:
    try:
        return int(field_)
    except ValueError:
        value = float(field_)  # '1388275200.0' is still a whole number of seconds
        if not value.is_integer():
            raise ValueError("not a whole number") from None
        return int(value)


def _parse_block_fast(block: bytes) -> _Block | None:
    """Parse a block with pandas' C reader if every line is clean (4 fields, non-empty ids, a
    numeric rating, a whole timestamp); ``None`` if any line is not, so the exact line-by-line
    reader runs instead."""
    try:
        frame = pd.read_csv(
            io.BytesIO(block), header=None, dtype={0: object, 1: object, 2: "float64", 3: "int64"},
            keep_default_na=False, na_filter=False, engine="c", skip_blank_lines=True,
        )  # fmt: skip
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if frame.shape[1] != len(RATING_FIELDS):
        return None
    users, items = frame[0].to_numpy(), frame[1].to_numpy()
    if (users == "").any() or (items == "").any():
        return None
    ratings = frame[2].to_numpy(dtype=np.float64)
    return _Block(users, items, ratings, frame[3].to_numpy(dtype=np.int64))


def _parse_block_slow(block: bytes, first_line: int, report: LineReport) -> _Block:
    """Parse a block line by line: the reference rules for every case (see :func:`read_ratings`)."""
    users: list[bytes] = []
    items: list[bytes] = []
    rates: list[float] = []
    times: list[int] = []
    missing = 0
    for number, line in enumerate(block.split(b"\n"), first_line):
        line = line.rstrip(b"\r")
        fields = line.split(b",")
        if b'"' in line:  # quoted fields: let the csv module read them
            text = line.decode("utf-8", errors="surrogateescape")
            row = next(csv.reader([text]), [])
            fields = [f.encode("utf-8", errors="surrogateescape") for f in row]
        if len(fields) != len(RATING_FIELDS):
            if line.strip():
                fields_ = f"{len(fields)} field{'s' if len(fields) != 1 else ''}"
                report.add(number, f"{fields_}, expected 4 (user,item,rating,timestamp)", line)
            continue
        user, item, rating, stamp = fields
        if not user or not item or not stamp:
            missing += 1
            continue
        try:
            value = float(rating) if rating else math.nan
        except ValueError:
            report.add(number, "the rating is not a number", line)
            continue
        try:
            when = _parse_timestamp(stamp)
        except ValueError:
            report.add(number, "the timestamp is not a whole number", line)
            continue
        users.append(user), items.append(item), rates.append(value), times.append(when)
    return _Block(users, items, np.array(rates, np.float64), np.array(times, np.int64), missing)


def _line_blocks(stream: BinaryIO, size: int) -> Iterator[bytes]:
    """Blocks of about ``size`` bytes, each ending at a line end (the last one maybe not)."""
    rest = b""
    while True:
        chunk = stream.read(size)
        if not chunk:
            if rest:
                yield rest
            return
        chunk = rest + chunk
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest = chunk
            continue
        rest = chunk[cut + 1 :]
        yield chunk[:cut]  # without the final newline: split gives no empty tail


def read_ratings(
    path: Path, report: LineReport, progress: bool = True, block_bytes: int = 1 << 24
) -> Ratings:
    """Stream the ratings CSV (no header: ``user,item,rating,timestamp``), gzip or plain.

    Blank lines are skipped silently (as pandas does); a row with an empty user, item or
    timestamp is dropped as a missing value (the reference's ``dropna`` subset; an empty rating
    is kept as NaN); a line with another number of fields, a non-numeric rating or a timestamp
    that is not a whole number is added to ``report`` and skipped. Blocks of clean lines are
    parsed by pandas' C reader; a block with any other line, line by line.
    """
    user_codes, item_codes = _CodeBuilder(), _CodeBuilder()
    ratings: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    lines = missing = 0
    bar = _byte_bar(path, "ratings", progress)
    try:
        with open_input(path) as (stream, position):
            for block in _line_blocks(stream, block_bytes):
                count = block.count(b"\n") + 1
                parsed = _parse_block_fast(block) or _parse_block_slow(block, lines + 1, report)
                lines += count
                missing += parsed.missing
                if len(parsed.ratings):
                    user_codes.add(parsed.users)
                    item_codes.add(parsed.items)
                    ratings.append(parsed.ratings)
                    stamps.append(parsed.timestamps)
                bar.update(position() - bar.n)
    except _GZIP_ERRORS as exc:
        raise _damaged(path, exc) from exc
    finally:
        bar.close()
    user_names, user_index = user_codes.finish()
    item_names, item_index = item_codes.finish()
    return Ratings(
        user_index, item_index,
        np.concatenate(ratings) if ratings else np.array([], dtype=np.float64),
        np.concatenate(stamps) if stamps else np.array([], dtype=np.int64),
        user_names, item_names, lines, missing,
    )  # fmt: skip


def first_occurrences(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """bool [rows]: true for the first row of each (user, item, timestamp) (``drop_duplicates``)."""
    order = np.lexsort((timestamps, items, users))  # stable: equal keys keep their file order
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for column in (users, items, timestamps):
        sorted_column = column[order]
        same &= sorted_column[1:] == sorted_column[:-1]
    keep = np.ones(len(users), dtype=bool)
    keep[order[1:][same]] = False
    return keep


def k_core(users: np.ndarray, items: np.ndarray, k: int = K_CORE) -> tuple[np.ndarray, int]:
    """The iterative k-core filter of the reference: repeatedly drop every row whose user or item
    has fewer than ``k`` rows (counted among the rows still kept) until none is dropped.

    Args:
        users, items: int [rows] codes (0..n-1).

    Returns:
        ``(keep, rounds)``: bool [rows] the surviving rows, and the number of dropping rounds.
    """
    users, items = np.asarray(users), np.asarray(items)
    keep = np.ones(len(users), dtype=bool)
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        dropped = keep & ((user_count[users] < k) | (item_count[items] < k))
        if not dropped.any():
            return keep, rounds
        keep &= ~dropped
        rounds += 1


def first_appearance(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-index codes 0..N-1 in order of first appearance (``pd.unique``'s order).

    Returns:
        ``(new_ids int64 [rows], originals [N])``: the new id of each row, and the original code
        of each new id.
    """
    originals, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(originals), dtype=np.int64)
    rank[order] = np.arange(len(originals))
    return rank[inverse.reshape(-1)], originals[order]


# ---------------------------------------------------------------------------------- metadata


def parse_meta_line(text: str) -> dict[str, Any]:
    """One metadata line as a dict: a Python literal (the published format) or strict JSON.

    Raises:
        ValueError: the line is neither, or is not a dict with a string ``asin``.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("not a Python-literal (or JSON) dict") from None
    if not isinstance(value, dict) or not isinstance(value.get("asin"), str):
        raise ValueError("not a dict with a string 'asin'")
    return value


def _text(value: Any) -> str:
    """A field as the reference's CSV round trip leaves it: missing, None or '' -> one space.

    (The reference also turned the strings pandas reads as NA, such as 'NA' or 'null', into a
    space; they are kept here.)
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return MISSING_TEXT
    return value if isinstance(value, str) else str(value)


def item_sentence(meta: Mapping[str, Any]) -> str:
    """The text the reference's encoder notebook builds for an item.

    ``title + ' ' + brand + ' '``, then each entry of the first category list followed by a
    space, then the description; a missing field counts as a single space, and every newline
    becomes a space. An item without metadata gives five spaces.
    """
    sentence = _text(meta.get("title")) + " " + _text(meta.get("brand")) + " "
    categories = meta.get("categories")
    if isinstance(categories, (list, tuple)) and categories:
        first = categories[0]
        if isinstance(first, (list, tuple)):
            sentence += "".join(_text(c) + " " for c in first)
    sentence += _text(meta.get("description"))
    return sentence.replace("\n", " ")


def read_sentences(
    path: Path, asins: Mapping[str, int], report: LineReport, progress: bool = True
) -> tuple[list[str], np.ndarray, int]:
    """Stream the metadata file and build the sentence of every dataset item.

    Lines whose leading asin names an item outside ``asins`` are skipped without parsing (so
    their errors go unnoticed); every other line is parsed, and added to ``report`` if it fails.
    The first line of an asin wins.

    Args:
        asins: asin -> item id (0..n_items-1).

    Returns:
        ``(sentences [n_items], found bool [n_items], duplicates)``: items without metadata get
        the sentence of an empty dict; ``duplicates`` counts repeated lines of dataset items.
    """
    n_items = len(asins)
    sentences = [item_sentence({})] * n_items
    found = np.zeros(n_items, dtype=bool)
    duplicates = 0
    bar = _byte_bar(path, "metadata", progress)
    try:
        with open_input(path) as (stream, position):
            for number, line in enumerate(stream, 1):
                if number % 4096 == 0:
                    bar.update(position() - bar.n)
                match = _ASIN_AT_START.match(line)
                if match and match.group(3).decode("utf-8", errors="replace") not in asins:
                    continue
                if not line.strip():
                    continue
                try:
                    meta = parse_meta_line(line.decode("utf-8"))
                except UnicodeDecodeError:
                    report.add(number, "not UTF-8 text", line.rstrip(b"\r\n"))
                    continue
                except ValueError as exc:
                    report.add(number, str(exc), line.rstrip(b"\r\n"))
                    continue
                item = asins.get(meta["asin"])
                if item is None:
                    continue
                if found[item]:
                    duplicates += 1
                    continue
                sentences[item], found[item] = item_sentence(meta), True
            bar.update(position() - bar.n)
    except _GZIP_ERRORS as exc:
        raise _damaged(path, exc) from exc
    finally:
        bar.close()
    return sentences, found, duplicates


# ---------------------------------------------------------------------------------- images


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at the end of the stream."""
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_image_features(
    path: Path,
    item_of: Mapping[bytes, int],
    out: np.ndarray,
    report: LineReport,
    progress: bool = True,
    chunk_records: int = 256,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream the image-feature binary into ``out`` [n_items, 4096] (e.g. a memory map).

    Only records of dataset items are kept (the rest are read and dropped chunk by chunk); a
    record with a non-finite value, or a cut-short record at the end, goes into ``report``. If an
    asin has several records the last one wins, and all of them count in the sum (as the
    reference's loop).

    Args:
        item_of: asin (10 bytes) -> item id.

    Returns:
        ``(found bool [n_items], total float64 [4096], matched)``: the items that got a record,
        the sum of the matched records and their number (for the mean).
    """
    found = np.zeros(len(out), dtype=bool)
    total = np.zeros(IMAGE_DIM, dtype=np.float64)
    matched = 0
    offset = 0
    bar = _byte_bar(path, "image features", progress)
    try:
        with open_input(path) as (stream, position):
            while True:
                chunk = _read_full(stream, IMAGE_RECORD.itemsize * chunk_records)
                whole = len(chunk) // IMAGE_RECORD.itemsize
                records = np.frombuffer(chunk, dtype=IMAGE_RECORD, count=whole)
                for index, asin in enumerate(records["asin"].tolist()):
                    item = item_of.get(asin)
                    if item is None:
                        continue
                    feature = records["feature"][index]
                    if not np.isfinite(feature).all():
                        where = offset + index * IMAGE_RECORD.itemsize
                        report.add(where, "non-finite values in the features", asin)
                        continue
                    out[item] = feature
                    found[item] = True
                    total += feature
                    matched += 1
                offset += whole * IMAGE_RECORD.itemsize
                bar.update(position() - bar.n)
                if len(chunk) > whole * IMAGE_RECORD.itemsize:
                    tail = len(chunk) - whole * IMAGE_RECORD.itemsize
                    report.add(
                        offset,
                        f"cut short ({tail:,} bytes; a record is {ASIN_BYTES} bytes of asin + "
                        f"{IMAGE_DIM} float32)",
                        chunk[whole * IMAGE_RECORD.itemsize :][:ASIN_BYTES],
                    )
                if len(chunk) < IMAGE_RECORD.itemsize * chunk_records:
                    break
    except _GZIP_ERRORS as exc:
        raise _damaged(path, exc) from exc
    finally:
        bar.close()
    return found, total, matched


def check_name(name: str) -> str:
    """A dataset name must be a plain folder name (it names the folder, the .inter and the YAML)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise UserError(
            f"--name {name!r}: a dataset name may hold only letters, digits, '_', '.' and '-', "
            "and must start with a letter or digit (e.g. --name toys)"
        )
    return name


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies an input file's version for re-use: path, size and modification time."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
