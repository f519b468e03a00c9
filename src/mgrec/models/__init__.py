"""The model registry: one module per model, each reading like its equations."""

from __future__ import annotations

import importlib

from mgrec.models.base import ModelData, Recommender

# name -> module; a model's module is imported when the model is first asked for.
MODULES = {
    "VBPR": "vbpr",
    "MMGCN": "mmgcn",
    "GRCN": "grcn",
    "DualGNN": "dualgnn",
    "SLMRec": "slmrec",
    "BM3": "bm3",
    "FREEDOM": "freedom",
    "DRAGON": "dragon",
    "LayerGCN": "layergcn",
}


def get(name: str) -> type[Recommender]:
    """The model class called ``name`` (a key of ``MODULES``)."""
    return getattr(importlib.import_module(f"mgrec.models.{MODULES[name]}"), name)


__all__ = ["MODULES", "ModelData", "Recommender", "get"]
