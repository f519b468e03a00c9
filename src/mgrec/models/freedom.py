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
import torch.nn.functional as F
from torch import nn

from mgrec import graphs
from mgrec.errors import UserError
from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import rowwise_dot
from mgrec.models.ops import linear


def _bpr(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(rowwise_dot(users, pos) - rowwise_dot(users, neg)).mean()


class FREEDOM(Recommender):
    """Frozen item-item graph plus a denoised (pruned) user-item graph."""

    modalities = "any"
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
        self.dropout = float(config["dropout"])
        self.norm_adj = data.norm_adj()
        self.edge_users, self.edge_items = data.train_users, data.train_items
        self.edge_weights = graphs.edge_norm_values(
            self.edge_users, self.edge_items, self.n_users, self.n_items
        )
        self.masked_adj = self.norm_adj
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.has_v, self.has_t = data.v_feat is not None, data.t_feat is not None
        if self.has_v:
            self.image_embedding = nn.Embedding.from_pretrained(data.v_feat.clone(), freeze=False)
            self.image_trs = nn.Linear(data.v_feat.shape[1], d)
        if self.has_t:
            self.text_embedding = nn.Embedding.from_pretrained(data.t_feat.clone(), freeze=False)
            self.text_trs = nn.Linear(data.t_feat.shape[1], d)
        self.mm_adj = data.frozen_item_graph(config["knn_k"], config["mm_image_weight"])

    def pre_epoch_processing(self) -> None:
        if self.dropout <= 0.0:
            self.masked_adj = self.norm_adj
            return
        n_keep = int(len(self.edge_weights) * (1.0 - self.dropout))
        keep = graphs.degree_sensitive_keep(self.edge_weights, n_keep)
        self.masked_adj = graphs.pruned_adj(
            self.edge_users, self.edge_items, keep, self.n_users, self.n_items
        )

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
        e_u = user_all[users]
        loss = _bpr(e_u, item_all[pos], item_all[neg])
        if self.reg_weight == 0.0:
            # The feature terms are multiplied by 0: the loss value and every gradient that
            # reaches the scores are unchanged without them (the feature branch never feeds
            # the scores), and skipping them saves the largest matmul of the step.
            return loss
        # Project only the batch's items: the reference projects every item, then indexes.
        items, inverse = torch.unique(torch.cat([pos, neg]), return_inverse=True)
        p_rows, n_rows = inverse[: len(pos)], inverse[len(pos) :]
        feature_loss = torch.zeros((), device=self.device)
        if self.has_t:
            text = linear(self.text_trs, self.text_embedding(items))
            feature_loss = feature_loss + _bpr(e_u, text[p_rows], text[n_rows])
        if self.has_v:
            image = linear(self.image_trs, self.image_embedding(items))
            feature_loss = feature_loss + _bpr(e_u, image[p_rows], image[n_rows])
        return loss + self.reg_weight * feature_loss

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(self.norm_adj)
