"""ItemKNNCBF (content-based item kNN), as in MMRec. Trains nothing: it is built from the data.

    X          = [V || T]                                  raw features, image first (one alone
                                                           if only one exists)
    sim_ij     = <x_i, x_j> / (|x_i| |x_j| + shrink)       shrunk cosine of the raw rows [R]
    S          = top-knn_k of each row of sim, values kept [I, I], not symmetrised [R]
    score(u,j) = sum over u's training rows (u, i) of S[i, j]      = (R S)[u, j]; duplicate
                                                                     training rows count twice [R]

The reference builds sim as a dense I x I matrix and keeps the dense U x I product R S [M];
here sim is computed in row blocks whose top-k are kept as [I, k] tables (I * k entries), and
the scores of an evaluation block are summed from the users' training rows: the same values
(each score is the same sum of kept similarities), in O(I * k) memory beside the block itself.
Items outside every top-k of a user's items score exactly 0 [R: ties ranked by item id here].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from mgrec.errors import UserError
from mgrec.models.base import ModelData, Recommender
from mgrec.models.ops import ReusableBuffer, buffer_of


def shrunk_topk(
    features: torch.Tensor, k: int, shrink: float, block_bytes: int = 1 << 28
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` of every row of the shrunk similarity, computed in row blocks.

    sim_ij = <x_i, x_j> / (|x_i| |x_j| + shrink); a zero row scores 0 (with shrink > 0).
    Only one block of rows of sim (about ``block_bytes``, and its denominators as much) exists
    at a time, never sim itself.

    Args:
        features: [I, D] raw item features.
        k: entries kept per row (<= I).
        shrink: the shrinkage term.

    Returns:
        ``(columns [I, k], values [I, k])``, each row's kept columns and their similarities in
        ``torch.topk``'s order.
    """
    n_items = features.shape[0]
    norms = features.norm(dim=1)
    rows_per_block = max(1, block_bytes // (4 * max(n_items, 1)))
    columns, values = [], []
    starts = range(0, n_items, rows_per_block)
    for start in tqdm(
        starts, desc="item similarity", unit="block", leave=False, disable=len(starts) < 8
    ):
        stop = min(start + rows_per_block, n_items)
        sim = features[start:stop] @ features.T  # [rows, I] numerators
        sim.div_(torch.outer(norms[start:stop], norms).add_(shrink))
        top = torch.topk(sim, k, dim=1)
        columns.append(top.indices)
        values.append(top.values)
        del sim, top
    return torch.cat(columns), torch.cat(values)


class KNNScorer:
    """Scores R[users] S, summed from the users' training rows (see the module docstring).

    Callable (users [b] -> [b, I]) and an item-block scorer (``block``) for the evaluator.

    Args:
        history_start: [U + 1] where each user's training items start in ``history``.
        history: [E] training items grouped by user (file order within a user).
        columns, values: [I, k] S as each row's kept columns and similarities.
        buffer: memory for the score blocks of ``block``, reused once the evaluator has
            released the previous block (a block is 16 MB on a CPU: made fresh, it is faulted
            in page by page every time); None: fresh memory.
    """

    def __init__(
        self,
        history_start: torch.Tensor,
        history: torch.Tensor,
        columns: torch.Tensor,
        values: torch.Tensor,
        buffer: ReusableBuffer | None = None,
    ) -> None:
        self.history_start, self.history = history_start, history
        self.columns, self.values = columns, values
        self.n_items = columns.shape[0]
        self.buffer = buffer

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        return self.block(users, 0, self.n_items)

    def block(self, users: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Scores [b, stop - start] of items start..stop-1 for users [b] (over ``buffer``'s
        memory when it is free)."""
        first = self.history_start[users]
        counts = self.history_start[users + 1] - first
        row = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        # each entry's position inside its user's run of training items
        run_start = torch.cumsum(counts, 0) - counts
        offset = torch.arange(len(row), device=users.device) - run_start[row]
        items = self.history[first[row] + offset]  # [n] the users' training items
        columns, values = self.columns[items], self.values[items]  # [n, k] their rows of S
        rows = row.unsqueeze(1).expand_as(columns)
        if start > 0 or stop < self.n_items:
            inside = (columns >= start) & (columns < stop)
            columns, values, rows = columns[inside], values[inside], rows[inside]
        width = stop - start
        shape = (len(users), width)
        scores = (
            values.new_empty(shape) if self.buffer is None else self.buffer.empty(shape, values)
        ).zero_()
        flat = (rows * width + (columns - start)).reshape(-1)
        return scores.view(-1).index_add_(0, flat, values.reshape(-1)).view(len(users), width)


class ItemKNNCBF(Recommender):
    """Scores from the users' training items and the items' feature similarity; no training."""

    name = "ItemKNNCBF"
    trainable = False
    modalities = "any"
    config_schema = {"knn_k": "int+", "shrink": "number+"}
    neighbours: torch.Tensor  # buffers
    similarities: torch.Tensor
    history_start: torch.Tensor
    history: torch.Tensor

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        k = int(config["knn_k"])
        if k > self.n_items:
            raise UserError(f"knn_k={k} exceeds the number of items ({self.n_items})")
        present = [f for f in (data.v_feat, data.t_feat) if f is not None]
        if not present:
            raise UserError("ItemKNNCBF needs image or text features")
        features = torch.cat(present, dim=1) if len(present) > 1 else present[0]
        # Read by nothing: kept so the reference's checkpoints load strictly [D].
        self.dummy_embeddings = nn.Parameter(torch.tensor([0.5, 0.5]))
        # S as each row's kept columns and values [I, k], and R by user: each user's training
        # items (duplicates kept, file order). Not saved: rebuilt from the data, as the reference.
        neighbours, similarities = shrunk_topk(features, k, float(config["shrink"]))
        order = torch.argsort(data.train_users, stable=True)
        counts = torch.bincount(data.train_users, minlength=self.n_users)
        self.register_buffer("neighbours", neighbours, persistent=False)
        self.register_buffer("similarities", similarities, persistent=False)
        self.register_buffer(
            "history_start", torch.cat([counts.new_zeros(1), counts.cumsum(0)]), persistent=False
        )
        self.register_buffer("history", data.train_items[order], persistent=False)

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The constant 0.0 on the CPU, with no graph (the reference's); never called in
        training, since the model is not ``trainable``."""
        return torch.tensor(0.0)

    # Not a dot-product scorer: the evaluator takes any callable with a ``block`` method.
    def scorer(self) -> KNNScorer:
        return KNNScorer(
            self.history_start, self.history, self.neighbours, self.similarities,
            buffer_of(self, "scores"),
        )  # fmt: skip

    def full_sort_predict(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [len(users), I] (a fresh tensor: masking it changes nothing kept)."""
        knn = KNNScorer(self.history_start, self.history, self.neighbours, self.similarities)
        return knn(users)
