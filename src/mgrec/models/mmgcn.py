"""MMGCN (Wei et al., ACM MM 2019), as in MMRec.

Per modality m (image: MLP to a latent width of 256; text: its raw width Dt [R]):
    X_0 = norm([P_m ; F_m'])                  F_v' = MLP(F_v), F_t' = F_t
    H   = lrelu(MeanAgg(X_{l-1} W_l))         mean over incoming edges of S2 (both directions)
    X^  = lrelu(Lin_l(X_{l-1})) + E_id
    X_l = lrelu(G_l([H || X^]))               l = 1, 2, 3: always three layers [R]
rep = mean over modalities of X_3;  s(u, i) = <rep_u, rep_{U+i}>
L = -mean(log sigmoid(s_p - s_n)) + reg_weight * (mean(E_id[u]^2 + E_id[i]^2) + mean(P_v^2))

P_m and E_id are frozen random tensors [R]: persistent buffers here (the reference keeps them
out of its state_dict), never trained, so the regulariser only shifts the loss value [L].
The reference's ``concate='False'`` is a truthy string, so the concatenation path G_l([H || X^])
is the one that runs [R]. Validation/test score from the last training forward [R].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgrec import graphs
from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import interleaved_square_mean, node_bpr_log
from mgrec.models.ops import gemm_rows, linear, rand_xavier_normal

N_LAYERS = 3  # the config's n_layers is read by the reference but never used [R]
IMAGE_LATENT = 256  # hard-coded latent width of the image branch

_FROZEN_WARNING = (
    "a reference MMGCN checkpoint does not store its frozen random tensors (id embeddings and "
    "user preferences), so its scores cannot be reproduced exactly: they are redrawn here, and "
    "match the reference's only for the same seed and data"
)


class MeanConv(nn.Module):
    """``x -> MeanAgg(x W)`` with W [in, out], used as ``x @ W`` (PyG-style weight layout)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        # PyG's uniform(size, w) init, then overwritten by xavier-normal: the reference's RNG order
        bound = 1.0 / math.sqrt(dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: torch.Tensor, mean_agg: graphs.SparseOp) -> torch.Tensor:
        """x [N, dim] -> [N, dim]."""
        return mean_agg @ (x @ self.weight)


class GatedModalityGCN(nn.Module):
    """One modality's three-layer gated graph network (the reference's ``GCN``).

    Args:
        features: [I, Dm] item features of this modality.
        n_users: U.
        d: output width (embedding_size).
        latent: width of the MLP projection, or None to work on the raw features (text) [R].
    """

    preference: torch.Tensor  # buffers
    features: torch.Tensor

    def __init__(self, features: torch.Tensor, n_users: int, d: int, latent: int | None) -> None:
        super().__init__()
        width = latent or features.shape[1]
        self.register_buffer("preference", rand_xavier_normal(n_users, width))
        self.register_buffer("features", gemm_rows(features), persistent=False)
        if latent is not None:
            self.MLP = nn.Linear(features.shape[1], latent)
        self.layers: list[tuple[MeanConv, nn.Linear, nn.Linear]] = []
        for layer in range(1, N_LAYERS + 1):
            in_dim = width if layer == 1 else d
            conv = MeanConv(in_dim)
            lin = nn.Linear(in_dim, d)
            nn.init.xavier_normal_(lin.weight)
            gate = nn.Linear(in_dim + d, d)
            if layer == 1:  # g_layer2 and g_layer3 keep torch's default init [R]
                nn.init.xavier_normal_(gate.weight)
            # registered in the reference's order: the state_dict keys follow it
            setattr(self, f"conv_embed_{layer}", conv)
            setattr(self, f"linear_layer{layer}", lin)
            setattr(self, f"g_layer{layer}", gate)
            self.layers.append((conv, lin, gate))

    def forward(self, id_embedding: torch.Tensor, mean_agg: graphs.SparseOp) -> torch.Tensor:
        """The branch output X_3 [N, d] from E_id [N, d] and the mean-aggregation operator."""
        items = linear(self.MLP, self.features) if hasattr(self, "MLP") else self.features
        # X_0 = norm([P ; F']) row by row: the user rows (the frozen preference) never need a
        # gradient, so layer 1 keeps them apart from the item rows.
        users, items = F.normalize(self.preference), F.normalize(items)
        (conv, lin, gate), *rest = self.layers
        if items.requires_grad:  # image: only the item rows lead back to parameters (the MLP)
            h = mean_agg @ torch.cat([users @ conv.weight, items @ conv.weight])
            lin_x = torch.cat([lin(users), lin(items)])
        else:  # text: X_0 is frozen, so MeanAgg(X_0 W) is computed as MeanAgg(X_0) W
            x = torch.cat([users, items])
            h = (mean_agg @ x) @ conv.weight
            lin_x = lin(x)
        x = self._gate(gate, F.leaky_relu(h), F.leaky_relu(lin_x) + id_embedding)
        for conv, lin, gate in rest:
            h = F.leaky_relu(conv(x, mean_agg))
            x = self._gate(gate, h, F.leaky_relu(lin(x)) + id_embedding)
        return x

    @staticmethod
    def _gate(gate: nn.Linear, h: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """X_l = lrelu(G_l([H || X^]))."""
        return F.leaky_relu(gate(torch.cat([h, x_hat], dim=1)))


class MMGCN(Recommender):
    """One graph network per modality over the user-item graph, averaged."""

    name = "MMGCN"
    paper_order = 2
    modalities = "any"
    config_schema = {"embedding_size": "int+", "reg_weight": "number+"}
    id_embedding: torch.Tensor  # a buffer (frozen) [R]
    optional_state = {
        "id_embedding": _FROZEN_WARNING,
        "v_gcn.preference": _FROZEN_WARNING,
        "t_gcn.preference": _FROZEN_WARNING,
    }
    stale_scores = True

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.reg_weight = float(config["reg_weight"])
        _, both_ways = data.edges()
        self.mean_agg = graphs.mean_aggregation(both_ways, self.n_users + self.n_items)
        self.branches: list[GatedModalityGCN] = []
        if data.has_image:
            image = data.image_features("MMGCN")
            self.v_gcn = GatedModalityGCN(image, self.n_users, d, latent=IMAGE_LATENT)
            self.branches.append(self.v_gcn)
        if data.has_text:
            self.t_gcn = GatedModalityGCN(data.text_features("MMGCN"), self.n_users, d, latent=None)
            self.branches.append(self.t_gcn)
        self.register_buffer("id_embedding", rand_xavier_normal(self.n_users + self.n_items, d))
        # The reference's initial cache: drawn only to keep torch's RNG in step with it.
        rand_xavier_normal(self.n_users + self.n_items, d)

    def forward(self) -> torch.Tensor:
        """rep [N, d]: the mean of the modality branches' outputs."""
        rep = sum(branch(self.id_embedding, self.mean_agg) for branch in self.branches)
        return rep / len(self.branches)

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1] + self.n_users, batch[2] + self.n_users
        rep = self.forward()
        self.remember(rep[: self.n_users], rep[self.n_users :])
        bpr = node_bpr_log(rep, users, pos, neg)
        reg = interleaved_square_mean(self.id_embedding, users, pos, neg)
        if hasattr(self, "v_gcn"):  # the text preference is not regularised [R]
            reg = reg + (self.v_gcn.preference**2).mean()
        return bpr + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.forward()
        return rep[: self.n_users], rep[self.n_users :]
