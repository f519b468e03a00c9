"""The models: one module per model, each reading like its equations, found through one registry
(``registry``: built-in models, plugins in the entry-point group ``mgrec.models``, and
``module:Class`` import paths).

``Recommender`` and ``ModelData`` are imported on first use, so that reading the registry (the
command line's model names) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mgrec.models import registry
from mgrec.models.registry import load as get
from mgrec.models.registry import names

if TYPE_CHECKING:
    from mgrec.models.base import ModelData, Recommender

_LAZY = {"Recommender": "mgrec.models.base", "ModelData": "mgrec.models.base"}


def __getattr__(attribute: str) -> Any:
    if attribute in _LAZY:
        return getattr(importlib.import_module(_LAZY[attribute]), attribute)
    raise AttributeError(f"module 'mgrec.models' has no attribute '{attribute}'")


__all__ = ["ModelData", "Recommender", "get", "names", "registry"]
