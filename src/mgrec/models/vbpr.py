"""VBPR (He & McAuley, AAAI 2016), as in MMRec.

item_e = [ E_item || X W^T + b ]      X = [t_feat || v_feat]  (text first, [R])
user_e = E_user                       (2d wide)
L = BPR_gamma(<u,p>, <u,n>) + reg_weight * (|e_u|_F + |e_p|_F + |e_n|_F) / B
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import bpr_log_gamma, emb_norm_loss, rowwise_dot
from mgrec.models.ops import distinct_rows, linear, rows_linear

# Projecting only the batch's items needs their [n, Dt + Dv] feature rows gathered first, which
# costs about what projecting a quarter more rows does: past this share of the items, every
# item is projected instead (measured at 4,480-d features, d = 64).
FULL_PROJECTION = 0.75


class VBPR(Recommender):
    """Matrix factorisation whose item side also embeds the raw multimodal features."""

    name = "VBPR"
    paper_order = 1
    modalities = "any"
    config_schema = {"embedding_size": "int+", "reg_weight": "number+"}
    item_raw_features: torch.Tensor  # a buffer

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.reg_weight = float(config["reg_weight"])
        # Raw parameters (not Embeddings), xavier-uniform; then the Linear's default init is
        # replaced by xavier-normal weights and a zero bias: the reference's RNG order.
        self.u_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, 2 * d)))
        self.i_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        raw = [f for f in (data.t_feat, data.v_feat) if f is not None]  # text first [R]
        self.register_buffer("item_raw_features", torch.cat(raw, dim=-1), persistent=False)
        self.item_linear = nn.Linear(self.item_raw_features.shape[1], d)
        nn.init.xavier_normal_(self.item_linear.weight)
        nn.init.zeros_(self.item_linear.bias)

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item representations [n, 2d] of the distinct ``items`` (all items when None)."""
        if items is None:
            projected = linear(self.item_linear, self.item_raw_features)
            return torch.cat([self.i_embedding, projected], dim=-1)
        projected = rows_linear(self.item_linear, self.item_raw_features, items)
        return torch.cat([self.i_embedding.index_select(0, items), projected], dim=-1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, 2d] and item [I, 2d] representations."""
        return self.u_embedding, self.item_embeddings()

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        # On a CPU only the batch's distinct items are projected (the step's largest product;
        # rows and gradients as the full projection's, see ``rows_linear``), unless they are
        # most items; elsewhere every item, as the reference, with no host sync.
        ids = torch.cat([pos, neg])
        items: torch.Tensor | None
        items, at = distinct_rows(ids, self.n_items)
        if len(items) > FULL_PROJECTION * self.n_items:
            items, at = None, ids
        item_rows = self.item_embeddings(items)
        e_u = self.u_embedding.index_select(0, users)
        e_p = item_rows.index_select(0, at[: len(pos)])
        e_n = item_rows.index_select(0, at[len(pos) :])
        mf = bpr_log_gamma(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n))
        return mf + self.reg_weight * emb_norm_loss(e_u, e_p, e_n)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()
