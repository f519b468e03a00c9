"""What DualGNN and DRAGON share: the modality GCN branches and the sampled user-user graph.

Per modality m (image v, text t), a branch with its own user preference table P_m [U, 64]:

    X_m = norm([P_m ; MLP_1(lrelu(MLP(F_m)))])          [N, 64], rows L2-normalised
    h   = P X_m,   R_m = h + X_m + P h                  (P: propagation over S2, below)
    P(X)_i = sum_{(j -> i) in S2} X_j / sqrt(deg(j) deg(i)),  deg = edges a node is the source of

User-user graph, redrawn every epoch: each user's top-40 neighbours with softmax weights A [U, 40]
(users with fewer are padded by random repeats; users with none get a zero term):

    agg(x)_u = x_u + sum_k A[u, k] x_{nbr[u, k]}

Loss helpers: both models use a base-2 log BPR [R] and mean-square regularisers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mgrec import graphs
from mgrec.data.user_graph import sample_neighbours
from mgrec.errors import UserError
from mgrec.models.base import ModelData, Recommender
from mgrec.models.ops import gemm_rows, linear

LATENT = 64  # the branches' width, hard-coded in the reference (independent of embedding_size)
NEIGHBOURS = 40  # user-graph neighbours per user, hard-coded in the reference


class ModalityProjection(nn.Module):
    """One modality's input to the graph: user preferences stacked on projected item features
    (the reference's ``v_gcn`` / ``t_gcn``; the propagation itself is shared, see ``propagate``).

    Parameters: ``preference`` [U, 64] (xavier-normal), ``MLP`` [feat_dim -> 256] and
    ``MLP_1`` [256 -> 64] (PyTorch's default init).
    """

    def __init__(self, n_users: int, feat_dim: int) -> None:
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, LATENT)))
        self.MLP = nn.Linear(feat_dim, 4 * LATENT)
        self.MLP_1 = nn.Linear(4 * LATENT, LATENT)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """X = norm([preference ; MLP_1(lrelu(MLP(features)))]): features [I, D] -> [N, 64]."""
        items = self.MLP_1(F.leaky_relu(linear(self.MLP, features)))
        return F.normalize(torch.cat([self.preference, items], dim=0))


def propagate(op: graphs.SparseOp, x: torch.Tensor) -> torch.Tensor:
    """R = h + X + P h with h = P X, column-wise: x [N, d] -> [N, d].

    Columns are independent, so several branches propagate together in one product.
    """
    h = op @ x
    return h + x + op @ h


def softmaxed_weights(rows: int) -> nn.Parameter:
    """``weight_u`` / ``weight_i`` [rows, 2, 1]: xavier-normal, then a softmax over the two
    modality slots (the reference's init; the softmax is not part of the forward)."""
    raw = nn.init.xavier_normal_(torch.empty(rows, 2, 1))
    return nn.Parameter(raw.softmax(dim=1))


class UserGraphRecommender(Recommender):
    """Base of DualGNN and DRAGON: features, the propagation operator P, the modality branches,
    the per-epoch user-graph table and the shared loss terms.

    Subclasses create their parameters in the reference's order and call ``add_branches`` where
    the reference builds ``v_gcn`` / ``t_gcn``. Parameters are drawn on the CPU (the same
    initial values on any device for a seed) and moved with the model; graphs, features and
    neighbour tables live on ``data.device``.
    """

    modalities = "both"
    needs_user_graph = True
    training_randomness = "random padding of neighbour lists shorter than 40, redrawn every epoch"
    # The reference registers the branch preferences a second time under these names.
    state_aliases: ClassVar[dict[str, str]] = {
        "v_preference": "v_gcn.preference",
        "t_preference": "t_gcn.preference",
    }
    v_feat: torch.Tensor  # buffers
    t_feat: torch.Tensor

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        super().check_config(config)
        if config.get("aggr_mode") != "add":
            raise UserError(
                f"config key 'aggr_mode' must be 'add' for {config.get('model')}, got "
                f"{config.get('aggr_mode')!r} (the reference's grid only uses 'add'; other PyG "
                "aggregations drop the symmetric normalisation and are not supported)"
            )

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        name = type(self).__name__
        self.reg_weight = float(config["reg_weight"])
        self.register_buffer("v_feat", gemm_rows(data.image_features(name)), persistent=False)
        self.register_buffer("t_feat", gemm_rows(data.text_features(name)), persistent=False)
        _, both_ways = data.edges()
        self.propagation = graphs.symmetric_aggregation(both_ways, self.n_users + self.n_items)
        self.user_graph = data.neighbour_graph(name)
        # One epoch's neighbour table: ids / weights [U, 40] and the operator A [U, U] built
        # from them (duplicated padded entries are separate terms, as in the reference's
        # weighted sum).
        self.neighbour_ids: torch.Tensor | None = None
        self.neighbour_weights: torch.Tensor | None = None
        self.neighbours: graphs.SparseOp | None = None

    def add_branches(self) -> None:
        """Create ``v_gcn``/``t_gcn`` and register their preferences as ``v_preference`` /
        ``t_preference`` (the same Parameters, so strict loading of trained checkpoints works)."""
        self.v_gcn = ModalityProjection(self.n_users, self.v_feat.shape[1])
        self.t_gcn = ModalityProjection(self.n_users, self.t_feat.shape[1])
        self.v_preference = self.v_gcn.preference
        self.t_preference = self.t_gcn.preference

    def pre_epoch_processing(self) -> None:
        """Draw this epoch's neighbour table (random padding via NumPy's global RNG; padding by
        repetition, without drawing, inside ``deterministic()``)."""
        ids, weights = sample_neighbours(
            self.user_graph, NEIGHBOURS, draw=not self.is_deterministic
        )
        self.neighbour_ids = torch.as_tensor(ids, device=self.device)
        self.neighbour_weights = torch.as_tensor(weights, device=self.device)
        self.neighbours = graphs.neighbour_sum(
            self.neighbour_ids, self.neighbour_weights, self.n_users
        )

    def _epoch_state(self) -> dict[str, Any]:
        return {
            "neighbour_ids": self.neighbour_ids,
            "neighbour_weights": self.neighbour_weights,
            "neighbours": self.neighbours,
        }

    def _fix_epoch(self) -> None:
        self.pre_epoch_processing()  # is_deterministic is set: padding without drawing

    def scoring_state(self) -> dict[str, torch.Tensor]:
        """Also the epoch's neighbour table (``neighbour_ids`` / ``neighbour_weights`` [U, 40]):
        scoring aggregates users over it, and its padding is a random draw."""
        state = super().scoring_state()
        if self.neighbour_ids is not None and self.neighbour_weights is not None:
            state["neighbour_ids"] = self.neighbour_ids.to("cpu", copy=True)
            state["neighbour_weights"] = self.neighbour_weights.to("cpu", copy=True)
        return state

    def load_scoring_state(self, state: Mapping[str, torch.Tensor]) -> None:
        super().load_scoring_state(state)
        if "neighbour_ids" in state and "neighbour_weights" in state:
            self.neighbour_ids = state["neighbour_ids"].to(self.device)
            self.neighbour_weights = state["neighbour_weights"].to(self.device)
            self.neighbours = graphs.neighbour_sum(
                self.neighbour_ids, self.neighbour_weights, self.n_users
            )

    def modality_representations(self) -> torch.Tensor:
        """[R_v ‖ R_t] [N, 128]: both branches propagated over P (in one sparse product)."""
        x = torch.cat([self.v_gcn(self.v_feat), self.t_gcn(self.t_feat)], dim=1)
        return propagate(self.propagation, x)

    def aggregate_users(self, x: torch.Tensor) -> torch.Tensor:
        """x_u + sum_k A[u, k] x_{nbr[u, k]}: x [U, d] -> [U, d]."""
        if self.neighbours is None:  # scored before any epoch: draw a table as an epoch would
            self.pre_epoch_processing()
        assert self.neighbours is not None
        return x + self.neighbours @ x

    def preference_reg(self, users: torch.Tensor) -> torch.Tensor:
        """mean(P_v[u]^2) + mean(P_t[u]^2) over the batch's user rows [B]; shape []."""
        v_rows = self.v_gcn.preference.index_select(0, users)
        t_rows = self.t_gcn.preference.index_select(0, users)
        return (v_rows**2).mean() + (t_rows**2).mean()
