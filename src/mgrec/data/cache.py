"""A cache for derived data (kNN item graphs, user graphs), never inside the user's data folder.

An entry is keyed by a name, every parameter it depends on and a fingerprint of its input files,
so a changed feature file or parameter can never serve a stale entry. Entries are ``.npz`` files
(plain arrays, no pickle), written atomically.

The cache heals itself: an entry that fails to load (truncated, bit-flipped, empty) or fails its
``check`` (wrong arrays, shapes, indices out of range) is rebuilt, with a note in the log; a
write that fails (a full disk) is a warning and the run goes on with the built arrays; temp
files left by a killed writer are removed when the cache is opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mgrec import atomic

log = logging.getLogger("mgrec")

Check = Callable[[dict[str, np.ndarray]], str | None]
"""A cache entry's check: None when the arrays are sound, else a short reason."""


class Cache:
    """A folder of ``.npz`` entries keyed by (name, parameters, input fingerprint)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for stale in atomic.remove_stale_temps(self.root):
            log.info(f"cache: removed {stale.name}, left by a writer that was killed")

    def path(self, name: str, params: Mapping[str, Any]) -> Path:
        key = hashlib.sha1(json.dumps(dict(params), sort_keys=True, default=str).encode())
        return self.root / f"{name}-{key.hexdigest()[:16]}.npz"

    def _load(self, path: Path, check: Check | None) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None (with a note) when it is missing, unreadable or unsound."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            log.info(f"cache: {path.name} cannot be read ({type(exc).__name__}); rebuilding it")
            return None
        problem = "no arrays" if not arrays else (check(arrays) if check else None)
        if problem:
            log.info(f"cache: {path.name} is damaged ({problem}); rebuilding it")
            return None
        return arrays

    def get_or_build(
        self,
        name: str,
        params: Mapping[str, Any],
        build: Callable[[], dict[str, np.ndarray]],
        check: Check | None = None,
    ) -> dict[str, np.ndarray]:
        """The cached arrays for (name, params), built and stored if absent or damaged.

        ``check`` validates loaded arrays (shapes, index ranges) before anything is built from
        them; a failed store is a warning, never the end of the run.
        """
        path = self.path(name, params)
        arrays = self._load(path, check)
        if arrays is not None:
            return arrays
        arrays = build()
        try:
            with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
        except OSError as exc:
            log.warning(
                f"warning: could not store the cache entry {path} ({exc.strerror or exc}); "
                "continuing without it (it will be built again next time)"
            )
        return arrays
