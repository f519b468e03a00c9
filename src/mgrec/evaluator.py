"""Full-ranking evaluation: every item scored for every evaluated user, training items masked.

Users are evaluated in the order they first appear in the split (as the reference), in batches,
on the scores' device, with no per-user Python: the training items are masked with one
``index_put_``, the top max(topk) taken with ``torch.topk``, hits found by binary search over
sorted (row, item) keys. The small hit matrix then goes to the host, where the metrics are
averaged in float64 exactly as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from mgrec.data.dataset import Split
from mgrec.errors import UserError
from mgrec.metrics import METRIC_FUNCTIONS

# The reference writes this score at training positives before ranking.
MASK_SCORE = -1e10

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]
"""What is evaluated: users [b] (int64) -> scores [b, n_items] for every item (a model's
``scorer()``, or any function, e.g. a popularity baseline)."""


def first_appearance_order(users: np.ndarray) -> np.ndarray:
    """Distinct users in the order they first appear (pandas ``unique`` order)."""
    distinct, first = np.unique(users, return_index=True)
    return distinct[np.argsort(first, kind="stable")]


def _grouped_keys(users: np.ndarray, items: np.ndarray, row_of_user: np.ndarray, n_items: int):
    """Sorted keys row * n_items + item of the (user, item) rows whose user is evaluated."""
    rows = row_of_user[users]
    keep = rows >= 0
    return np.sort(rows[keep].astype(np.int64) * n_items + items[keep])


class Evaluator:
    """Evaluate a scorer on one split (valid or test).

    Args:
        split: the rows to evaluate (relevant items per user; duplicates count in pos_len).
        train: the training rows, masked out of every ranking.
        n_items: number of item ids.
        topk: the cut-offs (ranking depth is max(topk)).
        metrics: metric names (recall, ndcg, precision, map; any case).
        batch_size: users scored at once.
        device: where ranking happens (normally the model's device).
    """

    def __init__(
        self,
        split: Split,
        train: Split,
        n_items: int,
        topk: Sequence[int],
        metrics: Sequence[str],
        batch_size: int = 4096,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.n_items = int(n_items)
        self.topk = list(topk)
        self.metrics = [m.lower() for m in metrics]
        self.batch_size = int(batch_size)
        if max(self.topk) > self.n_items:
            raise UserError(
                f"topk asks for {max(self.topk)} items but there are only {self.n_items}"
            )
        users = first_appearance_order(split.users)
        self.n_users = len(users)
        n_all = int(max(split.users.max(initial=0), train.users.max(initial=0))) + 1
        row_of_user = np.full(n_all, -1, dtype=np.int64)
        row_of_user[users] = np.arange(self.n_users)
        self.users = torch.as_tensor(users, device=self.device)
        self.pos_len = torch.as_tensor(
            np.bincount(row_of_user[split.users], minlength=self.n_users), device=self.device
        )
        self.relevant_keys = torch.as_tensor(
            _grouped_keys(split.users, split.items, row_of_user, self.n_items), device=self.device
        )
        train_keys = _grouped_keys(train.users, train.items, row_of_user, self.n_items)
        self.train_keys = torch.as_tensor(train_keys, device=self.device)
        # Where each row's training keys start in the sorted key array, for batch slicing.
        self.train_offsets = np.searchsorted(train_keys, np.arange(self.n_users + 1) * self.n_items)

    def _hits(self, first_row: int, top_items: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(first_row, first_row + len(top_items), device=self.device)
        keys = rows.unsqueeze(1) * self.n_items + top_items
        if len(self.relevant_keys) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self.relevant_keys, keys).clamp_(max=len(self.relevant_keys) - 1)
        return self.relevant_keys[pos] == keys

    @torch.no_grad()
    def hits(self, scorer: ScoreFunction) -> np.ndarray:
        """Bool [n_users, max(topk)]: is the item ranked r-th relevant? Computed on the device."""
        depth = max(self.topk)
        batches = []
        for start in range(0, self.n_users, self.batch_size):
            stop = min(start + self.batch_size, self.n_users)
            scores = scorer(self.users[start:stop]).to(self.device)
            keys = self.train_keys[self.train_offsets[start] : self.train_offsets[stop]]
            scores[keys // self.n_items - start, keys % self.n_items] = MASK_SCORE
            top_items = torch.topk(scores, depth, dim=1).indices
            batches.append(self._hits(start, top_items))
        return torch.cat(batches).cpu().numpy()

    def evaluate(self, scorer: ScoreFunction) -> dict[str, float]:
        """Rank all items for every user; return ``{"recall@5": ..., ...}`` (unrounded)."""
        hits = self.hits(scorer)
        pos_len = self.pos_len.cpu().numpy()
        result = {}
        for name in self.metrics:
            per_rank = METRIC_FUNCTIONS[name](hits, pos_len)
            for k in self.topk:
                result[f"{name}@{k}"] = float(per_rank[k - 1])
        return result
