"""Degree-sensitive edge pruning of the user-item graph, redrawn every epoch (FREEDOM, LayerGCN).

Each epoch keeps ``int(E * (1 - dropout))`` of the E training rows, drawn without replacement
with probability ~ ``(deg_u + 1e-7)^-1/2 (deg_i + 1e-7)^-1/2`` (edges between high-degree nodes
are the likeliest to go), and re-normalises the kept graph on its own degrees. Training
propagates over the pruned graph ``masked_adj``; prediction over the full graph ``norm_adj``.
With ``alternate`` (LayerGCN), epochs alternate degree-sensitive and uniform pruning, starting
with degree-sensitive [R].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mgrec import graphs
from mgrec.models.base import ModelData, Recommender


class EdgePruning(Recommender):
    """A model trained on a pruned copy of the user-item graph (see the module docstring).

    Subclasses call ``init_pruning`` in their constructor and propagate over ``masked_adj``
    when training and over ``norm_adj`` when scoring.
    """

    def init_pruning(self, data: ModelData, dropout: float, alternate: bool = False) -> None:
        self.dropout = float(dropout)
        self.alternate = alternate
        self.norm_adj = data.norm_adj()
        self.edge_users, self.edge_items = data.train_users, data.train_items
        self.edge_weights = graphs.edge_norm_values(
            self.edge_users, self.edge_items, self.n_users, self.n_items
        )
        self.masked_adj = self.norm_adj
        self.prune_uniformly = False  # LayerGCN: toggles every epoch, degree-sensitive first

    @property
    def randomness(self) -> str:
        if self.dropout <= 0.0:
            return ""
        kind = "alternating degree-sensitive/uniform" if self.alternate else "degree-sensitive"
        return f"{kind} edge pruning (dropout {self.dropout}) redrawn every epoch"

    def pre_epoch_processing(self) -> None:
        if self.dropout <= 0.0 or self.is_deterministic:
            self.masked_adj = self.norm_adj
            return
        n_edges = len(self.edge_weights)
        n_keep = int(n_edges * (1.0 - self.dropout))
        if self.alternate and self.prune_uniformly:
            keep = graphs.uniform_keep(n_edges, n_keep, self.device)
        else:
            keep = graphs.degree_sensitive_keep(self.edge_weights, n_keep)
        if self.alternate:
            self.prune_uniformly = not self.prune_uniformly
        self.masked_adj = graphs.pruned_adj(
            self.edge_users, self.edge_items, keep, self.n_users, self.n_items
        )

    def training_state(self) -> dict[str, Any]:
        return {"prune_uniformly": self.prune_uniformly}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.prune_uniformly = bool(state.get("prune_uniformly", False))

    def _epoch_state(self) -> dict[str, Any]:
        return {"masked_adj": self.masked_adj, "prune_uniformly": self.prune_uniformly}

    def _fix_epoch(self) -> None:
        self.masked_adj = self.norm_adj

    def _draw_epoch(self, draw: int) -> None:
        # Alternating schemes: even draws degree-sensitive, odd draws uniform (as epochs do).
        self.prune_uniformly = self.alternate and draw % 2 == 1
        self.pre_epoch_processing()
