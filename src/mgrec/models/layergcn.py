"""LayerGCN (Zhou et al., 2022), as in MMRec. Uses no item features.

    X_0 = [E_user ; E_item]
    X_l = c_l * (A X_{l-1}),  c_l = rowwise_cos(A X_{l-1}, X_0)      l = 1..L
    out = sum_{l=1..L} X_l                                           (layer 0 excluded)
    L = sum_batch -logsigmoid(<u,p> - <u,n>) + reg_weight * 0.5 * (|e_u|^2 + |e_p|^2 + |e_n|^2)

Training uses a degree-sensitively pruned graph, redrawn every epoch; with dropout > 0 the
reference alternates degree-sensitive (even epochs) and uniform (odd epochs) pruning [R].
The BPR term is a sum over the batch, not a mean [R]. Prediction uses the full graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgrec import graphs
from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import half_squared_l2, rowwise_dot


class LayerGCN(Recommender):
    """Layer-refined graph convolution over the user-item graph."""

    modalities = "none"
    config_schema = {
        "embedding_size": "int+",
        "n_layers": "int+",
        "reg_weight": "number+",
        "dropout": "fraction",
    }

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = float(config["reg_weight"])
        self.dropout = float(config["dropout"])
        self.user_embeddings = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embeddings = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.norm_adj = data.norm_adj()
        self.edge_users, self.edge_items = data.train_users, data.train_items
        self.edge_weights = graphs.edge_norm_values(
            self.edge_users, self.edge_items, self.n_users, self.n_items
        )
        self.masked_adj = self.norm_adj
        self.prune_uniformly = False  # toggles every epoch: degree-sensitive first

    def pre_epoch_processing(self) -> None:
        if self.dropout <= 0.0:
            self.masked_adj = self.norm_adj
            return
        n_edges = len(self.edge_weights)
        n_keep = int(n_edges * (1.0 - self.dropout))
        if self.prune_uniformly:
            keep = graphs.uniform_keep(n_edges, n_keep, self.device)
        else:
            keep = graphs.degree_sensitive_keep(self.edge_weights, n_keep)
        self.prune_uniformly = not self.prune_uniformly
        self.masked_adj = graphs.pruned_adj(
            self.edge_users, self.edge_items, keep, self.n_users, self.n_items
        )

    def forward(self, adj: graphs.SparseOp) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, d] and item [I, d] representations propagated over ``adj``."""
        ego = torch.cat([self.user_embeddings, self.item_embeddings], dim=0)
        # rowwise_cos(x, ego) = <x, ego / |ego|> / |x| (eps 1e-8, as F.cosine_similarity),
        # with ego's unit rows computed once for all layers.
        ego_unit = ego / ego.norm(dim=1, keepdim=True).clamp_min(1e-8)
        x, out = ego, 0
        for _ in range(self.n_layers):
            x = adj @ x
            cosine = (x * ego_unit).sum(dim=1) / x.norm(dim=1).clamp_min(1e-8)
            x = cosine.unsqueeze(1) * x
            out = out + x
        return out[: self.n_users], out[self.n_users :]

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        user_all, item_all = self.forward(self.masked_adj)
        e_u = user_all[users]
        mf = -F.logsigmoid(rowwise_dot(e_u, item_all[pos]) - rowwise_dot(e_u, item_all[neg])).sum()
        reg = half_squared_l2(
            self.user_embeddings[users], self.item_embeddings[pos], self.item_embeddings[neg]
        )
        return mf + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(self.norm_adj)
