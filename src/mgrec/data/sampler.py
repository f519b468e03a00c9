"""Training batches with vectorised negative sampling, on the training device.

The reference draws each negative with Python's ``random`` in a per-row loop and slices a pandas
frame per batch. Here an epoch is one permutation plus one vectorised rejection-sampling pass:
negatives are uniform over the items seen in training and never in the user's training history.
All randomness comes from one seeded ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mgrec.data.dataset import Split
from mgrec.errors import UserError


class TrainBatches:
    """Iterate one epoch of training batches: a fresh shuffle and fresh negatives every epoch.

    Each batch is an int64 tensor [3, B] (users, positive items, negative items), or [2, B]
    without negative sampling (BM3). Item ids are raw item indices (not offset by n_users).

    Args:
        train: the training split (rows in file order).
        n_items: number of item ids.
        batch_size: rows per batch (the last batch may be shorter).
        negatives: draw a negative item per row.
        device: where batches live.
    """

    def __init__(
        self,
        train: Split,
        n_items: int,
        batch_size: int,
        negatives: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.negatives = negatives
        self.n_items = int(n_items)
        self.users = torch.as_tensor(train.users, dtype=torch.long, device=self.device)
        self.items = torch.as_tensor(train.items, dtype=torch.long, device=self.device)
        # Sorted (user, item) keys of the training history: membership by binary search.
        keys = np.unique(train.users.astype(np.int64) * self.n_items + train.items)
        self.history_keys = torch.as_tensor(keys, device=self.device)
        self.candidate_items = torch.as_tensor(np.unique(train.items), device=self.device)
        if negatives:
            history_size = np.bincount(keys // self.n_items)
            full = np.flatnonzero(history_size >= len(self.candidate_items))
            if len(full):
                raise UserError(
                    f"user {int(full[0])} has interacted with every training item, so no "
                    "negative item can be sampled; remove that user or disable use_neg_sampling"
                )
        self.generator = torch.Generator(device=self.device)
        self.seed(0)

    def seed(self, seed: int) -> None:
        """Reset the sampler's random state (called once per grid combination)."""
        self.generator.manual_seed(int(seed))

    def __len__(self) -> int:
        return (len(self.users) + self.batch_size - 1) // self.batch_size

    def in_history(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool mask: is (user, item) a training interaction? Shapes [n] -> [n]."""
        keys = users * self.n_items + items
        pos = torch.searchsorted(self.history_keys, keys).clamp_(max=len(self.history_keys) - 1)
        return self.history_keys[pos] == keys

    def sample_negatives(self, users: torch.Tensor) -> torch.Tensor:
        """One negative item per user row, uniform over training items outside the user's history."""
        n_candidates = len(self.candidate_items)
        draw = torch.randint(
            n_candidates, users.shape, generator=self.generator, device=self.device
        )
        negatives = self.candidate_items[draw]
        redraw = self.in_history(users, negatives).nonzero().squeeze(1)
        while len(redraw):
            draw = torch.randint(
                n_candidates, redraw.shape, generator=self.generator, device=self.device
            )
            negatives[redraw] = self.candidate_items[draw]
            redraw = redraw[self.in_history(users[redraw], negatives[redraw])]
        return negatives

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.users), generator=self.generator, device=self.device)
        rows = [self.users[order], self.items[order]]
        if self.negatives:
            rows.append(self.sample_negatives(rows[0]))
        epoch = torch.stack(rows)
        for batch in epoch.split(self.batch_size, dim=1):
            yield batch.contiguous()
