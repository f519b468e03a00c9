"""FREEDOM (Zhou & Shen, ACM MM 2023), as in MMRec.

    h   = M^{n_mm_layers} E_item        M: frozen kNN item graph from the raw features [R]
    (U_o, I_o') = mean_{l=0..n_ui_layers} A^l [E_user ; E_item],  I_o = I_o' + h
    L = bpr(U_o[u], I_o[p], I_o[n]) + reg_weight * (bpr(U_o[u], T[p], T[n]) + bpr(U_o[u], V[p], V[n]))
    bpr(x, y, z) = -mean(logsigmoid(<x,y> - <x,z>));  T = text_trs(text), V = image_trs(image)

Training propagates over a degree-sensitively pruned graph redrawn every epoch; prediction over
the full graph. M is built once at construction and cached outside the data folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgrec import graphs
from mgrec.errors import UserError
from mgrec.models.base import ModelData, add_feature_tables
from mgrec.models.losses import bpr_logsigmoid, gather_rows, rowwise_dot
from mgrec.models.ops import distinct_rows, project_rows
from mgrec.models.pruning import EdgePruning


def _bpr(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return bpr_logsigmoid(rowwise_dot(users, pos), rowwise_dot(users, neg))


class FREEDOM(EdgePruning):
    """Frozen item-item graph plus a denoised (pruned) user-item graph."""

    name = "FREEDOM"
    paper_order = 7
    modalities = "any"
    # created by add_feature_tables when the modality is present
    image_embedding: nn.Embedding
    image_trs: nn.Linear
    text_embedding: nn.Embedding
    text_trs: nn.Linear
    needs_item_graph = True
    config_schema = {
        "embedding_size": "int+", "feat_embed_dim": "int+", "knn_k": "int+", "n_mm_layers": "int0",
        "n_ui_layers": "int0", "mm_image_weight": "number", "reg_weight": "number+", "dropout": "fraction",
    }  # fmt: skip

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        super().check_config(config)
        if config["feat_embed_dim"] != config["embedding_size"]:
            raise UserError(
                f"FREEDOM needs feat_embed_dim == embedding_size (got {config['feat_embed_dim']} "
                f"and {config['embedding_size']}): feature projections meet the id embeddings"
            )

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.n_mm_layers = config["n_mm_layers"]
        self.n_ui_layers = config["n_ui_layers"]
        self.reg_weight = float(config["reg_weight"])
        self.init_pruning(data, config["dropout"])
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.has_v, self.has_t = add_feature_tables(self, data, d)
        self.mm_adj = data.knn_graph("FREEDOM")

    def forward(self, adj: graphs.SparseOp) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, d] and item [I, d] representations propagated over ``adj`` and M."""
        h = self.item_id_embedding.weight
        for _ in range(self.n_mm_layers):
            h = self.mm_adj @ h
        x = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight], dim=0)
        out = graphs.layer_mean(adj, x, self.n_ui_layers)
        return out[: self.n_users], out[self.n_users :] + h

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        user_all, item_all = self.forward(self.masked_adj)
        e_u = user_all.index_select(0, users)
        loss = _bpr(e_u, *gather_rows(item_all, pos, neg))
        if self.reg_weight == 0.0:
            # The feature terms are multiplied by 0: the loss value and every gradient that
            # reaches the scores are unchanged without them (the feature branch never feeds
            # the scores), and skipping them saves the largest matmul of the step.
            return loss
        # Project only the batch's items (on a CPU; every item elsewhere, with no host sync):
        # the reference projects every item, then indexes.
        items, inverse = distinct_rows(torch.cat([pos, neg]), self.n_items)
        p_rows, n_rows = inverse[: len(pos)], inverse[len(pos) :]
        feature_loss = torch.zeros((), device=self.device)
        if self.has_t:
            text = project_rows(self.text_embedding, self.text_trs, items)
            feature_loss = feature_loss + _bpr(e_u, text[p_rows], text[n_rows])
        if self.has_v:
            image = project_rows(self.image_embedding, self.image_trs, items)
            feature_loss = feature_loss + _bpr(e_u, image[p_rows], image[n_rows])
        return loss + self.reg_weight * feature_loss

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(self.norm_adj)
