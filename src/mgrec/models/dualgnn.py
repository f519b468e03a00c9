"""DualGNN (Wang et al., IEEE TMM 2021), as in MMRec.

    R_v, R_t = modality GCN branches over the user-item graph        (see modality_gcn.py)
    S = R_v + R_t      the reference sums in place, so its "R_v" becomes S [R]
    user_base_u = w_u0 S_u + w_u1 R_t,u      (not w_u0 R_v,u + w_u1 R_t,u)  [R]
    user = agg(user_base)   (sampled top-40 user graph),   item = S[U:]
    L = -mean(log2 sigmoid(<u,p> - <u,n>))                                  [R: base 2]
        + reg_weight * (mean(P_v[u]^2) + mean(P_t[u]^2) + mean(weight_u^2) + mean(weight_i^2))

Validation and test are scored from the representation of the last training forward [R]
(``fresh_eval`` recomputes). ``MLP_v``, ``MLP_t``, ``MLP_user`` are unused, kept for the
state_dict [D]; ``weight_i`` only appears in the regulariser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgrec.models.base import ModelData
from mgrec.models.losses import bpr_log2, gather_rows, rowwise_dot
from mgrec.models.modality_gcn import LATENT, UserGraphRecommender, softmaxed_weights


class DualGNN(UserGraphRecommender):
    """Modality GCNs fused by learned per-user weights, smoothed over a user-user graph."""

    name = "DualGNN"
    paper_order = 4
    stale_scores = True
    config_schema = {"reg_weight": "number+"}

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        # Parameters in the reference's order (state_dict keys and torch RNG draws).
        self.MLP_v = nn.Linear(LATENT, LATENT, bias=False)  # [D]
        self.MLP_t = nn.Linear(LATENT, LATENT, bias=False)  # [D]
        self.weight_u = softmaxed_weights(self.n_users)
        self.weight_i = softmaxed_weights(self.n_items)  # regulariser only [D]
        self.MLP_user = nn.Linear(3 * LATENT, LATENT)  # [D]
        self.add_branches()

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, 64] and item [I, 64] representations."""
        r_v, r_t = self.modality_representations().split(LATENT, dim=1)
        summed = r_v + r_t  # the reference's in-place `R_v += R_t` [R]
        u = self.n_users
        w = self.weight_u  # [U, 2, 1]: w[:, 0] weighs the summed slot, w[:, 1] the text slot
        user_base = w[:, 0] * summed[:u] + w[:, 1] * r_t[:u]
        return self.aggregate_users(user_base), summed[u:]

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        user_all, item_all = self.forward()
        self.remember(user_all, item_all)  # what the reference scores validation/test with
        # Item ids index the item table: the reference's `p += U` into [user ; item], but
        # without editing the batch (the MG trainer reuses it).
        e_u = user_all.index_select(0, users)
        e_p, e_n = gather_rows(item_all, pos, neg)
        loss = bpr_log2(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n))
        reg = self.preference_reg(users) + (self.weight_u**2).mean() + (self.weight_i**2).mean()
        return loss + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()
