"""Reading and validating a dataset in MMRec's layout.

``<data_path>/<dataset>/`` holds ``<dataset>.inter`` (tab-separated, columns ``userID``,
``itemID``, ``x_label`` with 0/1/2 = train/valid/test), ``image_feat.npy`` [n_items, Dv] and
``text_feat.npy`` [n_items, Dt]. Everything is checked before training: a problem stops the run
with one line saying which file, what is wrong and what to do; oddities that do not stop it
(duplicated rows, an id space much larger than the ids present, dropped cold-start rows, a file
that is a link to another folder) are counted in ``RecData.notes``. Each file read is
fingerprinted (a hash of its bytes), so a result can say which data it came from. Nothing here
writes to the folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgrec.data.files import MODALITIES, MODALITY_NAMES, check_files
from mgrec.errors import UserError

# An id space this many times larger than the ids in use (and by more than SPARSE_IDS_MIN ids)
# is reported: every unused id still costs an embedding row and a column of every ranking.
SPARSE_IDS_FACTOR = 10
SPARSE_IDS_MIN = 1000
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """A hash of a file's bytes (blake2b, 16 bytes, hex), remembered per (path, size, mtime,
    inode) for this process, so a grid hashes each input once."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        hasher = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                hasher.update(chunk)
        digest = _DIGESTS[key] = hasher.hexdigest()
    return digest


def link_note(file: Path, folder: Path) -> str | None:
    """A note when ``file`` is a link leading outside ``folder`` (allowed, but named in the log)."""
    if not file.is_symlink():
        return None
    target = file.resolve()
    if folder.resolve() in target.parents:
        return None
    return f"{file.name} is a link to {target}, outside the dataset folder"


@dataclass(frozen=True)
class Split:
    """One split's interactions, one row per line of the ``.inter`` file (duplicates kept).

    Attributes:
        users: int64 [rows] user ids.
        items: int64 [rows] item ids.
    """

    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class RecData:
    """A loaded dataset: sizes, the three splits and the item features.

    ``n_users``/``n_items`` are max id + 1 over all three splits (as the reference). Valid and
    test rows of users absent from training are dropped when ``filter_out_cod_start_users``.
    """

    name: str
    path: Path
    n_users: int
    n_items: int
    train: Split
    valid: Split
    test: Split
    features: dict[str, np.ndarray]  # "v" (image) and/or "t" (text), float32 [n_items, D]
    # Fingerprints of the files read: "inter", "v", "t" -> file_digest.
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def feature(self, modality: str) -> np.ndarray | None:
        return self.features.get(modality)

    def summary(self) -> str:
        widths = ", ".join(f"{MODALITY_NAMES[m]} {a.shape[1]}-d" for m, a in self.features.items())
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"{len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test rows"
            + (f"; features: {widths}" if widths else "")
        )


def _check_ids(column: pd.Series, name: str, file: Path) -> np.ndarray:
    """Return the column as int64, or raise for a missing, non-integer or negative id."""
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | (values < 0) | (values != np.floor(values))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        shown = column.iloc[row]
        shown = "an empty field" if pd.isna(shown) or shown == "" else f"'{shown}'"
        raise UserError(
            f"{file}: {name} must be a non-negative integer, but line {row + 2} has {shown}; "
            "fix or remove that line"
        )
    return values.to_numpy().astype(np.int64)


def read_inter(file: Path, config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and check the interaction file; return (users, items, labels) as int64 arrays."""
    user_col, item_col = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    label_col = config["inter_splitting_label"]
    try:
        df = pd.read_csv(file, sep=config["field_separator"], dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{file}: the file is empty; it needs a header line and rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot be parsed as a tab-separated table ({exc})") from exc
    missing = [c for c in (user_col, item_col, label_col) if c not in df.columns]
    if missing:
        raise UserError(
            f"{file}: missing column(s) {', '.join(missing)}; the header must name "
            f"{user_col}, {item_col} and {label_col} (tab-separated), found: {', '.join(df.columns)}"
        )
    users = _check_ids(df[user_col], user_col, file)
    items = _check_ids(df[item_col], item_col, file)
    labels = pd.to_numeric(df[label_col], errors="coerce")
    bad = ~labels.isin([0, 1, 2])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{file}: {label_col} must be 0 (train), 1 (valid) or 2 (test), but line {row + 2} "
            f"has '{df[label_col].iloc[row]}'; fix the split labels"
        )
    if len(df) == 0:
        raise UserError(f"{file}: the file has a header but no rows")
    return users, items, labels.to_numpy().astype(np.int64)


def _npy_dtype(file: Path) -> np.dtype | None:
    """The dtype in a .npy file's header, or None when the header cannot be read."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        with open(file, "rb") as handle:
            reader = readers.get(np.lib.format.read_magic(handle))
            if reader is None:  # a newer header format: np.load will judge it
                return np.dtype(np.float32)
            _, _, dtype = reader(handle)
    except (OSError, ValueError, EOFError, SyntaxError):
        return None
    return np.dtype(dtype)


def read_features(file: Path, n_items: int) -> np.ndarray:
    """Load one feature matrix and check its shape and values."""
    if file.is_symlink() and not file.exists():
        raise UserError(f"{file}: a link to {file.readlink()}, which does not exist")
    if not file.is_file():
        raise UserError(f"{file}: exists but is not a file; a feature file must be a .npy array")
    dtype = _npy_dtype(file)
    if dtype is None:
        raise UserError(
            f"{file}: not a readable .npy file (truncated or corrupt: the header is damaged); "
            "write it again with np.save(path, array.astype('float32'))"
        )
    if dtype.hasobject:
        raise UserError(
            f"{file}: holds Python objects, not numbers (object arrays are refused: loading them "
            "could run code); save it with np.save(path, array.astype('float32'))"
        )
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise UserError(
            f"{file}: truncated or corrupt .npy file (its data is shorter than its header says); "
            "write it again with np.save(path, array.astype('float32'))"
        ) from exc
    except OSError as exc:
        raise UserError(f"{file}: cannot be read as a .npy array ({exc})") from exc
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise UserError(
            f"{file}: expected a 2-D numeric array [n_items, dim], got shape {array.shape} "
            f"of {array.dtype}"
        )
    if array.shape[0] != n_items:
        raise UserError(
            f"{file}: has {array.shape[0]} rows but the dataset has {n_items} items "
            "(max itemID + 1 over the .inter file); features must have one row per item id"
        )
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise UserError(
            f"{file}: contains NaN or infinite values (first in row {row}, item {row}); "
            "replace them (e.g. with the mean feature) before training"
        )
    return array


def load_dataset(config: Mapping[str, Any], modalities: str = "any") -> RecData:
    """Load and validate ``<data_path>/<dataset>`` for a model.

    Args:
        config: the resolved config (data path, field and file names).
        modalities: what the model needs: ``"any"`` (image and/or text), ``"both"``, or ``"none"``.
    """
    folder = check_files(config, modalities)
    name = str(config["dataset"])
    inter_file = folder / str(config["inter_file_name"])
    users, items, labels = read_inter(inter_file, config)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    is_train = labels == 0
    if not is_train.any():
        raise UserError(
            f"{inter_file}: the train split is empty (no row has {config['inter_splitting_label']} 0)"
        )
    notes = describe_rows(users, items, labels, n_users, n_items, inter_file.name)
    train = Split(users[is_train], items[is_train])
    splits = []
    for label, split_name in ((1, "valid"), (2, "test")):
        keep = labels == label
        if config.get("filter_out_cod_start_users", True):
            known = np.isin(users, train.users)
            dropped = int((keep & ~known).sum())
            if dropped:
                notes.append(
                    f"{dropped} {split_name} rows of {len(np.unique(users[keep & ~known]))} "
                    "users without training rows dropped (filter_out_cod_start_users)"
                )
            keep &= known
        if not keep.any():
            raise UserError(
                f"{inter_file}: the {split_name} split is empty (no row of a user with training "
                f"rows has {config['inter_splitting_label']} {label}); every evaluated user needs "
                "training rows and at least one valid and one test row in total"
            )
        splits.append(Split(users[keep], items[keep]))

    sources = {"inter": file_digest(inter_file)}
    features = {}
    for file in (inter_file, *(folder / str(config[key]) for key in MODALITIES.values())):
        note = link_note(file, folder) if file.exists() or file.is_symlink() else None
        if note:
            notes.append(note)
    if modalities != "none":
        for modality, key in MODALITIES.items():
            file = folder / str(config[key])
            if file.exists() or file.is_symlink():
                features[modality] = read_features(file, n_items)
                sources[modality] = file_digest(file)
    valid, test = splits
    return RecData(name, folder, n_users, n_items, train, valid, test, features, sources, notes)


def describe_rows(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, n_users: int, n_items: int, file: str
) -> list[str]:
    """Notes on rows that load but deserve a look: repeated (user, item) pairs within a split,
    and an id space much larger than the ids in use."""
    notes = []
    keys = (labels.astype(np.int64) * n_users + users) * n_items + items
    repeated = len(keys) - len(np.unique(keys))
    if repeated:
        notes.append(
            f"{file}: {repeated} rows repeat a (user, item) pair of their split; kept, as the "
            "reference does (a repeated training pair is sampled more often)"
        )
    for what, ids, size in (("user", users, n_users), ("item", items, n_items)):
        used = len(np.unique(ids))
        if size > SPARSE_IDS_FACTOR * used and size - used > SPARSE_IDS_MIN:
            notes.append(
                f"{file}: {what} ids run to {size - 1} but only {used} distinct ids occur; every "
                f"unused id still gets an embedding row (re-index the ids to save memory and time)"
            )
    return notes


def content_hash(*arrays: np.ndarray) -> str:
    """A hash of array contents (shape, dtype and bytes), to key cached data derived from them."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
