"""GRCN (Yang et al., ACM MM 2020), as in MMRec.

Per modality m (image required, text optional):
    F' = norm(lrelu(MLP_m(F_m))),  P' = norm(P_m), then re-normalised n_layers times [R]
    X_m = [P' ; F'];  a_e = <x_i, x_j>,  alpha_e = softmax of a_e over the edges into i
    C_m = X_m + sum_{e=(j->i)} alpha_e x_j                                  over S2
Edge weights: w_e = relu(max_m(alpha_{m,e} * conf[source(e)]_m))     (source-indexed [R])
    X = norm(E_id),  H1 = sum_{e=(j->i)} w_e X_j,  H2 = sum_{e=(j->i)} w_e H1_j,  id = X + H1 + H2
rep = [id || C_v || C_t];  s(u, i) = <rep_u, rep_{U+i}>
L = -mean(log sigmoid(s_p - s_n)) + reg_weight * (mean(E_id[u]^2 + E_id[i]^2) + mean(P_v^2)
    + mean(P_v[u]^2) + mean(P_t[u]^2))                            (P_v regularised twice [R])

The reference's routing loop attends over S (users -> items) and adds to each user what it
receives, which is nothing; only its re-normalisation remains [R]. ``dropout_adj`` with p=0 is
the identity. The loss has shape [1]. Validation/test score from the last training forward [R].
Sums and dot products over S2's edges are sparse products over ``graphs.EdgeList`` (per-edge
tensors in its entry order), not gathers of [2E, C] messages.
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
from mgrec.models.losses import interleaved_square_mean, node_bpr_log
from mgrec.models.ops import gemm_rows, linear, rand_xavier_normal


def attention(x: torch.Tensor, edges: graphs.EdgeList) -> torch.Tensor:
    """alpha [E]: ``<x_i, x_j>`` per edge (j -> i), softmax-normalised over the edges into i.

    The per-edge dot products are a sampled product (SDDMM) over the edge list, in its entry
    order, not a gather of [E, C] rows."""
    scores = graphs.edge_dots(edges, x, x)
    return graphs.segment_softmax(scores, edges.target, x.shape[0])


class ContentGCN(nn.Module):
    """One modality's attention graph network (the reference's ``CGCN``).

    Args:
        features: [I, Dm] item features of this modality (kept out of the state_dict).
        n_users: U.
        dim_c: latent width C.
        n_routing: routing iterations (each only re-normalises the user preferences).
    """

    features: torch.Tensor  # a buffer

    def __init__(self, features: torch.Tensor, n_users: int, dim_c: int, n_routing: int) -> None:
        super().__init__()
        self.n_routing = n_routing
        self.preference = nn.Parameter(rand_xavier_normal(n_users, dim_c))
        self.register_buffer("features", gemm_rows(features), persistent=False)
        self.MLP = nn.Linear(features.shape[1], dim_c)
        nn.init.xavier_normal_(self.MLP.weight)

    def forward(self, edges: graphs.EdgeList) -> tuple[torch.Tensor, torch.Tensor]:
        """C_m [N, C] and the attention alpha [2E] over the bidirectional edges S2 (in the edge
        list's entry order)."""
        items = F.normalize(F.leaky_relu(linear(self.MLP, self.features)))
        preference = F.normalize(self.preference)
        if self.n_routing:
            # Routing over S delivers nothing to users (S's targets are items): the reference
            # re-normalises P' + 0 n_routing times [R]. After one re-normalisation every row is
            # a unit row (or zero), which further ones keep (in value and gradient, up to
            # rounding), so one is done.
            preference = F.normalize(preference)
        x = torch.cat([preference, items], dim=0)
        alpha = attention(x, edges)
        return x + graphs.weighted_sum(edges, x, alpha), alpha


class IdGCN(nn.Module):
    """Two weighted propagation steps of the id embeddings (the reference's ``EGCN``)."""

    def __init__(self, n_nodes: int, d: int) -> None:
        super().__init__()
        self.id_embedding = nn.Parameter(rand_xavier_normal(n_nodes, d))

    def forward(self, edges: graphs.EdgeList, weights: torch.Tensor) -> torch.Tensor:
        """id rep [N, d] from S2 and its edge weights [2E] (entry order)."""
        x = F.normalize(self.id_embedding)
        h1 = graphs.weighted_sum(edges, x, weights)
        h2 = graphs.weighted_sum(edges, h1, weights)
        return x + h1 + h2


class GRCN(Recommender):
    """Id embeddings propagated over a graph refined by per-modality attention."""

    name = "GRCN"
    paper_order = 3
    modalities = "any"
    config_schema = {
        "embedding_size": "int+",
        "latent_embedding": "int+",
        "n_layers": "int0",
        "reg_weight": "number+",
    }
    stale_scores = True

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        if not data.has_image:
            # The reference's text-only path leaves its content representation None (a typo)
            # and crashes; the image branch is what its design rests on.
            raise UserError(
                "GRCN needs image features (image_feat.npy / vision_feature_file); the "
                "reference crashes on text-only data"
            )
        d, dim_c = config["embedding_size"], config["latent_embedding"]
        n_routing = config["n_layers"]
        self.reg_weight = float(config["reg_weight"])
        n_nodes = self.n_users + self.n_items
        # S2 as a sparse edge list; the forward list S only feeds the no-op routing. Sums and
        # dot products over its edges are sparse products (per-edge tensors in its entry order).
        _, both_ways = data.edges()
        self.edges = graphs.EdgeList.from_edges(both_ways, n_nodes)
        self.id_gcn = IdGCN(n_nodes, d)
        self.branches = [ContentGCN(data.image_features("GRCN"), self.n_users, dim_c, n_routing)]
        self.v_gcn = self.branches[0]
        if data.has_text:
            self.t_gcn = ContentGCN(data.text_features("GRCN"), self.n_users, dim_c, n_routing)
            self.branches.append(self.t_gcn)
        self.model_specific_conf = nn.Parameter(rand_xavier_normal(n_nodes, len(self.branches)))
        # The reference's initial cache: drawn only to keep torch's RNG in step with it.
        rand_xavier_normal(n_nodes, d)

    def forward(self) -> torch.Tensor:
        """rep [N, d + C * #modalities] = [id || C_v || C_t]."""
        contents, alphas = zip(*(branch(self.edges) for branch in self.branches), strict=True)
        attention_per_modality = torch.stack(alphas, dim=1)  # [2E, M]
        confidence = self.model_specific_conf[self.edges.source]  # by source node [R]
        weights = torch.relu((attention_per_modality * confidence).max(dim=1).values)
        return torch.cat([self.id_gcn(self.edges, weights), *contents], dim=1)

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1] + self.n_users, batch[2] + self.n_users
        rep = self.forward()
        self.remember(rep[: self.n_users], rep[self.n_users :])
        bpr = node_bpr_log(rep, users, pos, neg)
        reg_emb = interleaved_square_mean(self.id_gcn.id_embedding, users, pos, neg)
        reg_emb = reg_emb + (self.v_gcn.preference**2).mean()  # all users ...
        reg_content = torch.zeros(1, device=rep.device)  # ... the [1] shape of the loss [R]
        user_rows = users.repeat_interleave(2)
        for branch in self.branches:  # ... and batch users again [R]
            reg_content = reg_content + (branch.preference.index_select(0, user_rows) ** 2).mean()
        return bpr + self.reg_weight * (reg_emb + reg_content)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.forward()
        return rep[: self.n_users], rep[self.n_users :]
