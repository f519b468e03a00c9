"""What one preparation reads, writes and how: the command's arguments, checked and resolved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mgrec.config import check_dataset_name
from mgrec.errors import UserError
from mgrec.paths import PROJECT_ROOT, USER_DATASET_CONFIG_DIR, user_path

DEFAULT_SEED = 2024
DEFAULT_OUT = PROJECT_ROOT / "data"


@dataclass
class Options:
    """The arguments of a preparation, resolved (paths absolute, name checked)."""

    ratings: Path
    meta: Path
    images: Path
    name: str
    out: Path = DEFAULT_OUT
    seed: int = DEFAULT_SEED
    strict: bool = False
    force: bool = False
    text_model: Path | None = None  # resolved model folder; None with an injected encoder
    configs_dir: Path = USER_DATASET_CONFIG_DIR
    progress: bool = True


def input_file(flag: str, value: str | os.PathLike[str]) -> Path:
    """The raw file given for ``flag``, resolved; a UserError if it is missing or unreadable."""
    path = user_path(value)
    if not path.is_file():
        raise UserError(f"{path}: file not found ({flag}); see docs/prepare.md for the downloads")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: no permission to read this file ({flag})")
    return path


def check_seed(seed: int) -> int:
    """The split seed must be >= 0 (numpy's generators take no negative seed)."""
    if seed < 0:
        raise UserError(f"--seed {seed}: the seed must be a whole number >= 0")
    return seed


def out_folder(out: str | os.PathLike[str] | None) -> Path:
    """Where the dataset folder goes (default: the project's ``data/``); not an existing file."""
    folder = user_path(out) if out is not None else DEFAULT_OUT
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: --out must be a folder, but this is a file")
    return folder


def check_name(name: str) -> str:
    """A dataset name must be a plain folder name (it names the folder, the .inter and the YAML)."""
    return check_dataset_name(name, flag="--name")
