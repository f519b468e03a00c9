"""A cache for derived data (kNN item graphs and the like), never inside the user's data folder.

An entry is keyed by a name, every parameter it depends on and a fingerprint of its input files,
so a changed feature file or parameter can never serve a stale entry. Entries are ``.npz`` files
(plain arrays, no pickle), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class Cache:
    """A folder of ``.npz`` entries keyed by (name, parameters, input fingerprint)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str, params: Mapping[str, Any]) -> Path:
        key = hashlib.sha1(json.dumps(dict(params), sort_keys=True, default=str).encode())
        return self.root / f"{name}-{key.hexdigest()[:16]}.npz"

    def get_or_build(
        self,
        name: str,
        params: Mapping[str, Any],
        build: Callable[[], dict[str, np.ndarray]],
    ) -> dict[str, np.ndarray]:
        """Return the cached arrays for (name, params), building and storing them if absent."""
        path = self.path(name, params)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    return {k: stored[k] for k in stored.files}
            except (OSError, ValueError):
                pass  # a damaged entry is rebuilt below
        arrays = build()
        self.root.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp.npz")
        os.close(handle)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return arrays
