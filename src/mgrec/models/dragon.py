"""DRAGON (Zhou et al., 2023), as in the Mirror-Gradient fork of MMRec.

    R_v, R_t  = modality GCN branches over the user-item graph       (see modality_gcn.py)
    item_base = [R_v[U:] ‖ R_t[U:]],   item = item_base + M^{n_mm_layers} item_base
    user_base = [w_u0 R_v,u ‖ w_u1 R_t,u],   user = agg(user_base)   (sampled top-40 user graph)
    L = -mean(log2 sigmoid(<u,p> - <u,n>))                                  [R: base 2]
        + reg_weight * (mean(P_v[u]^2) + mean(P_t[u]^2) + mean(weight_u^2))   (no weight_i term)

M is the frozen kNN item graph of the raw features (cached). Scores are recomputed from the
parameters (the fork's ``full_sort_predict``; upstream MMRec scores from a stale cache).
``MLP_v``, ``MLP_t``, ``MLP_user``, the feature embeddings and their ``*_trs`` layers and
``weight_i`` are unused, kept for the state_dict [D].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgrec.models.base import ModelData, add_feature_tables
from mgrec.models.losses import bpr_log2, gather_rows, rowwise_dot
from mgrec.models.modality_gcn import LATENT, UserGraphRecommender, softmaxed_weights


class DRAGON(UserGraphRecommender):
    """Dual graphs (user-user, item-item) over concatenated modality GCN representations."""

    name = "DRAGON"
    paper_order = 8
    needs_item_graph = True
    config_schema = {
        "reg_weight": "number+", "feat_embed_dim": "int+", "knn_k": "int+",
        "n_mm_layers": "int0", "mm_image_weight": "number",
    }  # fmt: skip

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        self.n_mm_layers = config["n_mm_layers"]
        f = config["feat_embed_dim"]
        # Parameters in the reference's order (state_dict keys and torch RNG draws).
        self.MLP_v = nn.Linear(LATENT, LATENT, bias=False)  # [D]
        self.MLP_t = nn.Linear(LATENT, LATENT, bias=False)  # [D]
        add_feature_tables(self, data, f, need="both")  # the tables and their *_trs: [D]
        self.mm_adj = data.knn_graph("DRAGON")
        self.weight_u = softmaxed_weights(self.n_users)
        self.weight_i = softmaxed_weights(self.n_items)  # [D]
        self.MLP_user = nn.Linear(2 * LATENT, LATENT)  # [D]
        self.add_branches()

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, 128] and item [I, 128] representations."""
        r = self.modality_representations()  # [R_v ‖ R_t] [N, 128]: the 'cat' construction
        u = self.n_users
        # [w_u0 R_v,u ‖ w_u1 R_t,u]: weight_u [U, 2, 1] scales the two 64-wide halves
        user_base = (r[:u].view(u, 2, LATENT) * self.weight_u).flatten(1)
        item_base = r[u:]
        h = item_base
        for _ in range(self.n_mm_layers):
            h = self.mm_adj @ h
        return self.aggregate_users(user_base), item_base + h

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        user_all, item_all = self.forward()
        # Item ids index the item table: the reference's `p += U` into [user ; item], but
        # without editing the batch (the MG trainer reuses it).
        e_u = user_all.index_select(0, users)
        e_p, e_n = gather_rows(item_all, pos, neg)
        loss = bpr_log2(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n))
        reg = self.preference_reg(users) + (self.weight_u**2).mean()
        return loss + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()
