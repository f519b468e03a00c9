"""Reading ``image_features_<Category>.b``: back-to-back records of a 10-byte ASCII asin followed
by 4096 little-endian float32 (a CNN feature of the product image).

The file is streamed in chunks of records straight into the array it is handed (a memory map on
disk for Elec's size), so only the dataset's items are ever kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mgrec.prepare.inputs import GZIP_ERRORS, LineReport, byte_bar, damaged, open_input

ASIN_BYTES = 10
IMAGE_DIM = 4096
IMAGE_RECORD = np.dtype([("asin", f"S{ASIN_BYTES}"), ("feature", "<f4", (IMAGE_DIM,))])


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
    """Stream the image-feature binary into ``out`` float32 [n_items, 4096] (e.g. a memory map).

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
    record = IMAGE_RECORD.itemsize
    bar = byte_bar(path, "image features", progress)
    try:
        with open_input(path) as (stream, position):
            while True:
                chunk = _read_full(stream, record * chunk_records)
                whole = len(chunk) // record
                records = np.frombuffer(chunk, dtype=IMAGE_RECORD, count=whole)
                for index, asin in enumerate(records["asin"].tolist()):
                    item = item_of.get(asin)
                    if item is None:
                        continue
                    feature = records["feature"][index]
                    if not np.isfinite(feature).all():
                        report.add(
                            offset + index * record, "non-finite values in the features", asin
                        )
                        continue
                    out[item] = feature
                    found[item] = True
                    total += feature
                    matched += 1
                offset += whole * record
                bar.update(position() - bar.n)
                if len(chunk) > whole * record:
                    report.add(
                        offset,
                        f"cut short ({len(chunk) - whole * record:,} bytes; a record is "
                        f"{ASIN_BYTES} bytes of asin + {IMAGE_DIM} float32)",
                        chunk[whole * record :][:ASIN_BYTES],
                    )
                if len(chunk) < record * chunk_records:
                    break
    except GZIP_ERRORS as exc:
        raise damaged(path, exc) from exc
    finally:
        bar.close()
    return found, total, matched
