"""Reading ``meta_<Category>.json.gz`` and building each item's sentence.

Despite the name, the published file holds one *Python literal* dict per line (single quotes),
gzip or plain, with keys such as ``asin``, ``title``, ``brand``, ``categories`` (a list of
category paths, each a list of strings) and ``description``. Lines are parsed with
:func:`ast.literal_eval`, never ``eval``; a strict-JSON line is accepted too. The sentence is the
one the reference's encoder notebook (``3feat-encoder``) builds.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mgrec.prepare.inputs import GZIP_ERRORS, LineReport, byte_bar, damaged, open_input

MISSING_TEXT = " "  # what the reference's encoder notebook puts for a missing field

# The published metadata lines start with the asin: ``{'asin': '0000031852', ...``. Reading it
# with a regular expression lets lines of items outside the dataset be skipped unparsed.
_ASIN_AT_START = re.compile(rb"""^\s*\{\s*(['"])asin\1\s*:\s*(['"])([^'"\\]*)\2""")


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
    bar = byte_bar(path, "metadata", progress)
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
    except GZIP_ERRORS as exc:
        raise damaged(path, exc) from exc
    finally:
        bar.close()
    return sentences, found, duplicates
