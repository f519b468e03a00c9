"""mgrec: Mirror Gradient and multimodal recommenders, faithful to the reference, and fast.

The public API (imported on first use, so ``import mgrec`` stays light)::

    from mgrec import MirrorGradient, PlainStep   # optimizer wrappers for any PyTorch loop
    from mgrec import SAM                         # sharpness-aware minimisation (pytorch-optimizer)
    from mgrec import train                       # a model's grid on a dataset, as the CLI runs it
    from mgrec import Recommender, ModelData      # the base of every model (see models.registry)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mgrec.version import __version__

if TYPE_CHECKING:
    from mgrec.api import train
    from mgrec.models.base import ModelData, Recommender
    from mgrec.optim.mirror import MirrorGradient, PlainStep
    from mgrec.optim.sam import SAM

_PUBLIC = {
    "MirrorGradient": "mgrec.optim.mirror",
    "PlainStep": "mgrec.optim.mirror",
    "SAM": "mgrec.optim.sam",
    "train": "mgrec.api",
    "Recommender": "mgrec.models.base",
    "ModelData": "mgrec.models.base",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mgrec' has no attribute '{name}'")


__all__ = [
    "SAM", "MirrorGradient", "ModelData", "PlainStep", "Recommender", "__version__", "train",
]  # fmt: skip
