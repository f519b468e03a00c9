"""Where the project's files live.

Defaults in the YAML files (``data_path``, ``checkpoint_dir``, ...) are relative to the project
root, so ``python src/main.py`` and ``cd src && python main.py`` behave the same. Paths typed on
the command line are taken relative to the working directory first, as any CLI tool does.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("MGREC_HOME", Path(__file__).resolve().parents[2]))
CONFIG_DIR = PROJECT_ROOT / "configs"


def project_path(value: str | os.PathLike[str]) -> Path:
    """Resolve a path from a config file: absolute as is, else relative to the project root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def user_path(value: str | os.PathLike[str]) -> Path:
    """Resolve a path typed by the user: the working directory first, then the project root."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    in_project = PROJECT_ROOT / path
    return in_project if in_project.exists() else path.resolve()
