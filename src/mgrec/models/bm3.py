"""BM3 (Zhou et al., WWW 2023), as in MMRec. Trains without negative items.

    (U_o, I_o') = mean_{l=0..L} A^l [E_user ; E_item],   I_o = I_o' + E_item
    t_on = text_trs(T),  v_on = image_trs(V)           (T, V: trainable copies of the features)
    targets: dropout_p of U_o, I_o, t_on, v_on (always on, no gradient) [R]
    L = (1 - cos(P U_o[u], I_t[i])) + (1 - cos(P I_o[i], U_t[u]))
        + reg_weight * (|U_o|_F + |I_o|_F) / I                       [R: full tables, unsquared]
        + cl_weight * (4 feature-alignment terms)

``feat_embed_dim`` is read from ``embedding_size``, as in the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgrec import graphs
from mgrec.models.base import ModelData, Recommender, add_feature_tables
from mgrec.models.losses import cosine_to_target, emb_norm_loss
from mgrec.models.ops import distinct_rows, dropout, project_rows


def _alignment(
    online: torch.Tensor, target: torch.Tensor, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - mean cos(online, target)`` over rows (target detached); with ``counts``, row r
    stands for ``counts[r]`` identical rows (a weighted mean)."""
    cosine = cosine_to_target(online, target)
    if counts is None:
        return 1 - cosine.mean()
    return 1 - (cosine * counts).sum() / counts.sum()


class BM3(Recommender):
    """Bootstrapped multimodal latent embeddings with a shared predictor."""

    name = "BM3"
    paper_order = 6
    modalities = "any"
    # created by add_feature_tables when the modality is present
    image_embedding: nn.Embedding
    image_trs: nn.Linear
    text_embedding: nn.Embedding
    text_trs: nn.Linear
    training_randomness = "target dropout, drawn at every training step"
    config_schema = {
        "embedding_size": "int+", "n_layers": "int0", "reg_weight": "number+",
        "cl_weight": "number+", "dropout": "fraction",
    }  # fmt: skip

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = float(config["reg_weight"])
        self.cl_weight = float(config["cl_weight"])
        self.dropout = float(config["dropout"])
        self.norm_adj = data.norm_adj()
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.has_v, self.has_t = add_feature_tables(self, data, d, init=nn.init.xavier_normal_)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN layer mean: user [U, d] and item [I, d] (item id embedding added again)."""
        x = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight], dim=0)
        out = graphs.layer_mean(self.norm_adj, x, self.n_layers)
        return out[: self.n_users], out[self.n_users :] + self.item_id_embedding.weight

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, items = batch[0], batch[1]
        user_online, item_online = self.forward()
        # Per-row work is done on the rows the batch reads (``distinct_rows``: on a CPU its
        # distinct ids): the reference projects, drops out and predicts whole tables and then
        # indexes, which gives each row the same value and mask distribution. A loss term that
        # pairs an item's row with the same item's row is a mean over the batch's entries of a
        # per-item value: a mean over the item rows weighted by their counts in the batch.
        user_rows, user_at = distinct_rows(users, self.n_users)
        item_rows, item_at = distinct_rows(items, self.n_items)
        counts = torch.zeros(len(item_rows), device=items.device).index_add_(
            0, item_at, torch.ones(len(items), device=items.device)
        )
        user_online_rows = user_online.index_select(0, user_rows)
        item_online_rows = item_online.index_select(0, item_rows)
        t_online = v_online = None
        if self.has_t:
            t_online = project_rows(self.text_embedding, self.text_trs, item_rows)
        if self.has_v:
            v_online = project_rows(self.image_embedding, self.image_trs, item_rows)
        # Targets: dropout always in training mode [R] (off inside ``deterministic()``).
        p = 0.0 if self.is_deterministic else self.dropout
        with torch.no_grad(), self.call_randomness():
            user_target = dropout(user_online_rows, p).index_select(0, user_at)
            item_target = dropout(item_online_rows, p)  # item rows
            t_target = None if t_online is None else dropout(t_online, p)
            v_target = None if v_online is None else dropout(v_online, p)
        user_pred = self.predictor(user_online_rows).index_select(0, user_at)
        item_pred = self.predictor(item_online_rows).index_select(0, item_at)
        # Summed in the reference's order: text-id, image-id, text-text, image-image.
        to_id, to_self = [], []
        for online, target in ((t_online, t_target), (v_online, v_target)):
            if online is not None:
                pred = self.predictor(online)  # item rows
                to_id.append(_alignment(pred, item_target, counts))
                assert target is not None  # (computed with its online rows)
                to_self.append(_alignment(pred, target, counts))
        feature_loss = sum(to_id + to_self, torch.zeros((), device=self.device))
        loss = _alignment(user_pred, item_target.index_select(0, item_at)) + _alignment(
            item_pred, user_target
        )
        reg = emb_norm_loss(user_online, item_online)
        return loss + self.reg_weight * reg + self.cl_weight * feature_loss

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_e, item_e = self.forward()
        return self.predictor(user_e), self.predictor(item_e)
