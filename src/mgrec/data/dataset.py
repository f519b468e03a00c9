"""Reading and validating a dataset in MMRec's layout.

``<data_path>/<dataset>/`` holds ``<dataset>.inter`` (tab-separated, columns ``userID``,
``itemID``, ``x_label`` with 0/1/2 = train/valid/test), ``image_feat.npy`` [n_items, Dv] and
``text_feat.npy`` [n_items, Dt]. Everything is checked before training: a problem stops the run
with one line saying which file, what is wrong and what to do. Nothing here writes to the folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgrec.errors import UserError
from mgrec.paths import project_path

DOWNLOAD_HINT = (
    "MMRec's data README (github.com/enoche/MMRec/tree/master/data) links the Amazon downloads"
)
MODALITIES = {"v": "vision_feature_file", "t": "text_feature_file"}
MODALITY_NAMES = {"v": "image", "t": "text"}


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
    feature_files: dict[str, Path]

    def feature(self, modality: str) -> np.ndarray | None:
        return self.features.get(modality)

    def summary(self) -> str:
        widths = ", ".join(f"{MODALITY_NAMES[m]} {a.shape[1]}-d" for m, a in self.features.items())
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"{len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test rows"
            + (f"; features: {widths}" if widths else "")
        )


def dataset_dir(config: Mapping[str, Any]) -> Path:
    return project_path(config["data_path"]) / str(config["dataset"])


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


def read_features(file: Path, n_items: int) -> np.ndarray:
    """Load one feature matrix and check its shape and values."""
    try:
        array = np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise UserError(
            f"{file}: not a plain numeric .npy array (object arrays are refused for safety); "
            "save it with np.save(path, array.astype('float32'))"
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
    folder = dataset_dir(config)
    name = str(config["dataset"])
    if not folder.is_dir():
        raise UserError(
            f"{folder}: dataset folder not found; put {config['inter_file_name']}, "
            f"{config['vision_feature_file']} and {config['text_feature_file']} there "
            f"(or pass --data_path=DIR); {DOWNLOAD_HINT}"
        )
    inter_file = folder / str(config["inter_file_name"])
    if not inter_file.is_file():
        raise UserError(
            f"{inter_file}: interaction file not found; the dataset folder must hold "
            f"{config['inter_file_name']} (tab-separated userID, itemID, x_label); {DOWNLOAD_HINT}"
        )
    users, items, labels = read_inter(inter_file, config)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    is_train = labels == 0
    if not is_train.any():
        raise UserError(
            f"{inter_file}: the train split is empty (no row has {config['inter_splitting_label']} 0)"
        )
    train = Split(users[is_train], items[is_train])
    splits = []
    for label in (1, 2):
        keep = labels == label
        if config.get("filter_out_cod_start_users", True):
            keep &= np.isin(users, train.users)
        splits.append(Split(users[keep], items[keep]))

    features, files = {}, {}
    if modalities != "none":
        for modality, key in MODALITIES.items():
            file = folder / str(config[key])
            if file.is_file():
                features[modality] = read_features(file, n_items)
                files[modality] = file
    wanted = [config[MODALITIES[m]] for m in MODALITIES]
    model = config.get("model", "this model")
    if modalities == "any" and not features:
        raise UserError(
            f"{folder}: {model} needs item features, but neither {wanted[0]} nor {wanted[1]} "
            "exists there; add at least one feature file"
        )
    if modalities == "both":
        for modality, key in MODALITIES.items():
            if modality not in features:
                raise UserError(
                    f"{folder / str(config[key])}: {model} needs both image and text features; "
                    f"this {MODALITY_NAMES[modality]} feature file is missing"
                )
    return RecData(name, folder, n_users, n_items, train, *splits, features, files)


def content_hash(*arrays: np.ndarray) -> str:
    """A hash of array contents (shape, dtype and bytes), to key cached data derived from them."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
