"""The model registry: one module per model, each reading like its equations."""

from mgrec.models.base import ModelData, Recommender
from mgrec.models.bm3 import BM3
from mgrec.models.freedom import FREEDOM
from mgrec.models.layergcn import LayerGCN
from mgrec.models.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {
    "VBPR": VBPR,
    "LayerGCN": LayerGCN,
    "BM3": BM3,
    "FREEDOM": FREEDOM,
}

__all__ = ["MODELS", "ModelData", "Recommender"]
