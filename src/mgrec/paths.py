"""Where the project's files live.

The shipped YAML files are package data (``mgrec/configs/``; in a source checkout the top-level
``configs/`` is a link to them). Everything mgrec *writes or reads as data* (``data/``,
``results/``, ``checkpoints/``, ``cache/``, and the dataset YAML files ``mgrec prepare`` writes
under ``configs/dataset/``) lives under the **home** folder:

- in a source checkout (``pyproject.toml`` beside ``src/mgrec``): the checkout, so
  ``python src/main.py`` and ``cd src && python main.py`` behave the same;
- for an installed wheel: the working directory, as most command-line tools do;
- either way, ``MGREC_HOME=/some/folder`` chooses it explicitly.

Defaults in the YAML files (``data_path: data/``, ...) are relative to the home folder. Paths
typed on the command line are resolved from the working directory, as any CLI tool does.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
_CHECKOUT = PACKAGE_DIR.parents[1]
IN_SOURCE_TREE = (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "src" / "mgrec").is_dir()


def _home() -> Path:
    chosen = os.environ.get("MGREC_HOME")
    if chosen:
        return Path(chosen).expanduser().resolve()
    return _CHECKOUT if IN_SOURCE_TREE else Path.cwd().resolve()


PROJECT_ROOT = _home()
# Dataset YAML files written by `mgrec prepare` (in a checkout: the shipped folder itself).
USER_DATASET_CONFIG_DIR = PROJECT_ROOT / "configs" / "dataset"


def project_path(value: str | os.PathLike[str]) -> Path:
    """Resolve a path from a config file: absolute as is, else relative to the home folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def user_path(value: str | os.PathLike[str]) -> Path:
    """Resolve a path typed by the user: from the working directory, as any CLI tool does."""
    return Path(value).expanduser().resolve()


def dataset_config_file(dataset: str) -> Path | None:
    """The YAML file of a dataset: the user's (written by ``mgrec prepare``) before the shipped
    one; None when there is neither (MMRec's default field and file names apply)."""
    for folder in (USER_DATASET_CONFIG_DIR, CONFIG_DIR / "dataset"):
        path = folder / f"{dataset}.yaml"
        if path.is_file():
            return path
    return None
