"""``--output FILE.json``: checked before any training, written atomically at the end."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mgrec import atomic
from mgrec.errors import UserError


def check_output(path: Path) -> None:
    """Refuse an ``--output`` file that cannot be written, before any training."""
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"--output {path}: the folder {folder} does not exist")
    try:
        probe = atomic.temp_path(path)
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--output {path}: cannot write there ({exc.strerror or exc})") from exc
    if path.exists() and (path.is_dir() or not path.is_file()):
        raise UserError(f"--output {path}: exists and is not a file")


def write_output(path: Path, payload: Mapping[str, Any]) -> None:
    """Write a JSON output file atomically."""
    atomic.write_text(Path(path), json.dumps(payload, indent=2, allow_nan=False) + "\n")


def metrics_payload(
    valid: Mapping[str, float], test: Mapping[str, float], rule: str
) -> dict[str, Any]:
    """The output of one evaluated model: metric keys in lower case, and the test masking rule."""
    return {
        "valid": {k.lower(): v for k, v in valid.items()},
        "test": {k.lower(): v for k, v in test.items()},
        "test_mask": rule,
    }


def finish_output(path: Path, winner: Mapping[str, Any] | None, config: Mapping[str, Any]) -> None:
    """Write ``--output`` for a grid's validation winner, or, when no combination has a
    validation result, remove a stale file of that name and stop with an error (never leave an
    older file looking current)."""
    if winner is None:
        removed = path.is_file()
        path.unlink(missing_ok=True)
        raise UserError(
            f"--output {path}: no combination has a validation result (every one ended before its "
            "first evaluation, e.g. with a NaN loss), so nothing was written"
            + ("; the older file of that name was removed" if removed else "")
        )
    rule = "train+valid" if config.get("test_mask_valid") else "train"
    write_output(path, metrics_payload(winner["valid"], winner["test"], rule))
