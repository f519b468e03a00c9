"""TinyMF: matrix factorisation with BPR, written outside mgrec against its public interface.

score(u, i) = <e_u, e_i>;   L = -mean(log sigmoid(s_up - s_un)) + reg_weight * |batch rows|^2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mgrec.models import ModelData, Recommender


class TinyMF(Recommender):
    """Ids only; its defaults ship beside it (tinymf.yaml), with a key of its own."""

    modalities = "none"
    config_file = "tinymf.yaml"
    config_schema = {"embedding_size": "int+", "reg_weight": "number+", "tiny_init_std": "number+"}

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d, std = int(config["embedding_size"]), float(config["tiny_init_std"])
        self.reg_weight = float(config["reg_weight"])
        self.user = nn.Parameter(torch.randn(self.n_users, d) * std)
        self.item = nn.Parameter(torch.randn(self.n_items, d) * std)

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        u, p, n = self.user[users], self.item[pos], self.item[neg]
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        return bpr + self.reg_weight * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(
            users
        )

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user, self.item


class NotAModel:
    """For the test of a class that is not a Recommender."""
