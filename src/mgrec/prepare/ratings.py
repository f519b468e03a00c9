"""Reading ``ratings_<Category>.csv``: no header, one ``user,item,rating,timestamp`` line per
rating (ids are strings, the item id is the 10-character asin, the timestamp Unix seconds).

The file is streamed in blocks of lines (16 MB by default); ids are kept as integer codes into
sorted tables of byte strings, never one Python object per line, so memory stays bounded at
Elec's size. Blocks of clean lines go to pandas' C reader; a block with any other line is read
line by line by the reference's rules.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from mgrec.prepare.inputs import GZIP_ERRORS, LineReport, byte_bar, damaged, open_input

RATING_FIELDS = ("user", "item", "rating", "timestamp")


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


def _split_fields(line: bytes) -> list[bytes]:
    """The comma-separated fields of a line; quoted fields are read by the csv module.

    Raises:
        csv.Error: the quoting cannot be read (e.g. a carriage return inside a field).
    """
    if b'"' not in line:
        return line.split(b",")
    text = line.decode("utf-8", errors="surrogateescape")
    row = next(csv.reader([text]), [])
    return [f.encode("utf-8", errors="surrogateescape") for f in row]


def _parse_block_slow(block: bytes, first_line: int, report: LineReport) -> _Block:
    """Parse a block line by line: the reference rules for every case (see :func:`read_ratings`)."""
    users: list[bytes] = []
    items: list[bytes] = []
    rates: list[float] = []
    times: list[int] = []
    missing = 0
    for number, line in enumerate(block.split(b"\n"), first_line):
        line = line.rstrip(b"\r")
        try:
            fields = _split_fields(line)
        except csv.Error as exc:  # a stray quote or carriage return: this line only
            report.add(number, f"not a CSV line ({exc})", line)
            continue
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
        users.append(user)
        items.append(item)
        rates.append(value)
        times.append(when)
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
    bar = byte_bar(path, "ratings", progress)
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
    except GZIP_ERRORS as exc:
        raise damaged(path, exc) from exc
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
