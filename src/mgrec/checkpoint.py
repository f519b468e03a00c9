"""Checkpoints: written atomically, loaded safely and strictly.

Our checkpoints are a dict ``{"state_dict", "config", "metrics", "model", "dataset",
"version"}`` (plain data, loadable with ``weights_only=True``). A bare ``state_dict`` as the
reference's users have them is accepted too: its ``v_preference``/``t_preference`` aliases are
dropped as the reference's resume path does, ``result_embed`` is ignored, and every other key
must match the model exactly (the reference ignored mismatches silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgrec import __version__, atomic
from mgrec.errors import UserError

DROPPED_ALIASES = ("v_preference", "t_preference")
IGNORED_KEYS = ("result_embed",)


def save(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (with the project version) to ``path`` atomically."""
    atomic.save_torch({**payload, "version": __version__}, Path(path))


def read(path: Path) -> dict[str, Any]:
    """Load a checkpoint file safely (tensors and plain data only).

    Returns ``{"state_dict": ..., "config": dict | None, ...}``; a bare state_dict comes back
    with ``config`` None.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise UserError(
            f"{path}: cannot be loaded as a checkpoint with weights_only=True ({exc.__class__.__name__}); "
            "it must be a state_dict or an mgrec checkpoint"
        ) from exc
    if not isinstance(payload, dict):
        raise UserError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    if "state_dict" in payload and isinstance(payload["state_dict"], dict):
        return {"config": None, **payload}
    if not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserError(f"{path}: not a state_dict: some values are not tensors")
    return {"state_dict": payload, "config": None}


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load ``state_dict`` into ``model``; any missing, unexpected or mis-shaped key is an error.

    Returns notes on what was dropped or ignored (for the log).
    """
    state = dict(state_dict)
    notes = []
    own = model.state_dict()
    for alias, canonical in getattr(model, "state_aliases", {}).items():
        if canonical in state:  # the alias is the same tensor: the canonical key decides
            state[alias] = state[canonical]
    for key, warning in getattr(model, "optional_state", {}).items():
        if key not in state and key in own:
            state[key] = own[key]
            notes.append(f"warning: {key} is missing: {warning}")
    if "v_preference" in state and "v_preference" not in own:
        for key in DROPPED_ALIASES:
            state.pop(key, None)
        notes.append("dropped the v_preference/t_preference aliases (as the reference does)")
    for key in IGNORED_KEYS:
        if key in state and key not in own:
            state.pop(key)
            notes.append(f"ignored '{key}' (a cache, recomputed from the parameters)")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {', '.join(misshaped)}")
    if problems:
        raise UserError(
            f"{source}: does not fit {type(model).__name__} with this config ({'; '.join(problems)}); "
            "check --model and the size settings (e.g. --embedding_size=...)"
        )
    model.load_state_dict(state, strict=True)
    return notes
