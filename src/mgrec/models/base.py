"""What every model is given, and the small interface the trainer and evaluator rely on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mgrec import graphs
from mgrec.data.cache import Cache
from mgrec.data.dataset import RecData, content_hash
from mgrec.data.user_graph import UserGraph
from mgrec.errors import UserError

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""A model's scoring function: users [b] (int64) -> scores [b, n_items] for every item."""


@dataclass
class ModelData:
    """Everything a model may know about the data at construction.

    Attributes:
        n_users, n_items: id ranges (max id + 1 over all splits).
        train_users, train_items: int64 [E] training rows in file order (duplicates kept).
        v_feat, t_feat: float32 [I, Dv] / [I, Dt] image / text features, or None.
        device: where the model lives.
        cache: where derived data (kNN graphs, ...) is stored.
        user_graph: the user-user graph, for the models that need one (DualGNN, DRAGON).
    """

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    v_feat: torch.Tensor | None
    t_feat: torch.Tensor | None
    device: torch.device
    cache: Cache
    user_graph: UserGraph | None = None

    @classmethod
    def from_dataset(
        cls, data: RecData, device: torch.device, cache: Cache, user_graph: UserGraph | None = None
    ) -> ModelData:
        def feature(m: str) -> torch.Tensor | None:
            array = data.feature(m)
            return None if array is None else torch.as_tensor(array, device=device)

        return cls(
            n_users=data.n_users,
            n_items=data.n_items,
            train_users=torch.as_tensor(data.train.users, device=device),
            train_items=torch.as_tensor(data.train.items, device=device),
            v_feat=feature("v"),
            t_feat=feature("t"),
            device=device,
            cache=cache,
            user_graph=user_graph,
        )

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user -> item edge list S [2, E] and the bidirectional S2 [2, 2E] (items offset by U)."""
        return graphs.user_item_edges(self.train_users, self.train_items, self.n_users)

    def norm_adj(self) -> graphs.SparseOp:
        """The symmetric-normalised bipartite adjacency over distinct training pairs, [N, N]."""
        adj = graphs.bipartite_norm_adj(
            self.train_users.cpu().numpy(),
            self.train_items.cpu().numpy(),
            self.n_users,
            self.n_items,
            self.device,
        )
        return graphs.SparseOp(adj, symmetric=True)

    def frozen_item_graph(self, k: int, image_weight: float) -> graphs.SparseOp:
        """FREEDOM/DRAGON's kNN item graph from the raw features, [I, I], cached on disk.

        Keyed by k, the image weight, which modalities exist and a hash of their contents.
        """
        if k > self.n_items:
            raise UserError(f"knn_k={k} exceeds the number of items ({self.n_items})")
        present = {m: f for m, f in (("v", self.v_feat), ("t", self.t_feat)) if f is not None}
        params = {
            "k": int(k),
            "image_weight": float(image_weight),
            "features": {m: content_hash(f.cpu().numpy()) for m, f in present.items()},
        }

        def build() -> dict[str, np.ndarray]:
            graph = graphs.mixed_modality_graph(
                self.v_feat, self.t_feat, int(k), float(image_weight)
            )
            return {
                "indices": graph.indices().cpu().numpy(),
                "values": graph.values().cpu().numpy(),
            }

        stored = self.cache.get_or_build("item-knn", params, build)
        indices = torch.as_tensor(stored["indices"], device=self.device)
        values = torch.as_tensor(stored["values"], device=self.device)
        return graphs.SparseOp(graphs.sparse(indices, values, self.n_items))


class Recommender(nn.Module):
    """Base of all models. The trainer uses ``pre_epoch_processing`` and ``calculate_loss``;
    the evaluator uses ``scorer``. Subclasses set the class attributes below.

    Attributes:
        modalities: features the model needs: "any" (image and/or text), "both" or "none".
        uses_negatives: whether batches carry a sampled negative row.
        needs_user_graph: whether the model reads the user-user graph.
        config_schema: the model's config keys and their kinds (see ``check_keys``).
        state_aliases: extra state_dict names that hold the same tensor as another key
            (alias -> canonical), as the reference's DualGNN/DRAGON register.
        optional_state: keys that may be absent from a reference checkpoint, with the warning
            to log when they are (MMGCN's frozen random tensors).

    Models whose reference scores validation and test from the representation cached by the
    last training forward (MMGCN, GRCN, DualGNN, SLMRec) store it with ``remember`` and set
    ``stale_scores``; ``fresh_eval`` (config key, default False) recomputes instead.
    """

    modalities: ClassVar[str] = "any"
    uses_negatives: ClassVar[bool] = True
    needs_user_graph: ClassVar[bool] = False
    config_schema: ClassVar[dict[str, str]] = {}
    state_aliases: ClassVar[dict[str, str]] = {}
    optional_state: ClassVar[dict[str, str]] = {}
    stale_scores: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Validate the model's keys (see ``check_keys``) before anything is trained."""
        check_keys(config, **cls.config_schema)

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__()
        self.n_users = data.n_users
        self.n_items = data.n_items
        self.device = data.device
        self.fresh_eval = bool(config.get("fresh_eval", False))
        self.training_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def pre_epoch_processing(self) -> None:
        """Per-epoch work before training (edge pruning, neighbour sampling). Default: none."""

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The loss of one batch [3, B] (users, positives, negatives) or [2, B]; 0-d or [1].

        Must not modify ``batch``: the MG trainer evaluates the same batch twice.
        """
        raise NotImplementedError

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations [U, D], [I, D] whose dot products are the scores,
        recomputed from the current parameters."""
        raise NotImplementedError

    def remember(self, user_e: torch.Tensor, item_e: torch.Tensor) -> None:
        """Keep the representation of this training forward (detached) for stale scoring."""
        self.training_cache = (user_e.detach(), item_e.detach())

    def full_sort_predict(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [len(users), I] of every item for the given users, recomputed from the
        parameters (train items not masked)."""
        user_e, item_e = self.inference_embeddings()
        return user_e[users] @ item_e.T

    def scorer(self) -> Scorer:
        """A function users -> scores, with representations computed once for all batches.

        Reproduces the reference's stale scoring (the last training forward's representation)
        for the models that have it, unless ``fresh_eval`` is set.
        """
        if self.stale_scores and not self.fresh_eval and self.training_cache is not None:
            user_e, item_e = self.training_cache
        else:
            user_e, item_e = self.inference_embeddings()
        return lambda users: user_e[users] @ item_e.T


def check_keys(config: Mapping[str, Any], **wanted: str) -> None:
    """Validate model keys. ``wanted`` maps a key to 'int+', 'number', 'number+' or 'fraction'."""
    checks = {
        "int+": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "an integer >= 1",
        ),
        "int0": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "an integer >= 0",
        ),
        "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
        "number+": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
            "a number >= 0",
        ),
        "fraction": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
            "a number in [0, 1)",
        ),
    }
    for key, kind in wanted.items():
        test, description = checks[kind]
        if key not in config or not test(config[key]):
            raise UserError(
                f"config key '{key}' must be {description} for {config.get('model')}, "
                f"got {config.get(key)!r}"
            )
