"""Training batches: shapes, negatives outside each user's history, seeding, shuffling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrec.data.dataset import Split
from mgrec.data.sampler import TrainBatches
from mgrec.errors import UserError


def make_split(seed=0, n_users=40, n_items=30, per_user=8):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate(
        [rng.choice(n_items - 2, per_user, replace=False) for _ in range(n_users)]
    )
    return Split(users, items)  # items 28 and 29 never occur in training


def test_shapes_and_coverage():
    split = make_split()
    batches = list(TrainBatches(split, 30, batch_size=64))
    assert [b.shape for b in batches] == [(3, 64)] * 5  # 320 rows
    assert all(b.dtype == torch.long for b in batches)
    epoch = torch.cat(batches, dim=1)
    rows = sorted(zip(epoch[0].tolist(), epoch[1].tolist(), strict=True))
    assert rows == sorted(zip(split.users.tolist(), split.items.tolist(), strict=True))
    assert [b.shape[0] for b in TrainBatches(split, 30, 100, negatives=False)] == [2, 2, 2, 2]


def test_negatives_never_in_history_and_only_training_items():
    split = make_split()
    history = set(zip(split.users.tolist(), split.items.tolist(), strict=True))
    sampler = TrainBatches(split, 30, batch_size=1000)
    seen = set()
    for _ in range(20):
        (batch,) = list(sampler)
        pairs = set(zip(batch[0].tolist(), batch[2].tolist(), strict=True))
        assert not pairs & history
        seen |= set(batch[2].tolist())
    assert seen <= set(split.items.tolist())  # 28 and 29 are never drawn
    assert len(seen) == 28


def test_negatives_are_uniform():
    users = np.zeros(1, dtype=np.int64)
    split = Split(np.r_[users, [1, 1, 1, 1]], np.array([0, 1, 2, 3, 4]))
    sampler = TrainBatches(split, 5, batch_size=10)
    draws = sampler.sample_negatives(torch.zeros(40000, dtype=torch.long))
    counts = np.bincount(draws.numpy(), minlength=5)
    assert counts[0] == 0  # user 0's own item
    assert np.allclose(counts[1:] / 40000, 0.25, atol=0.01)


def test_seeded_and_reshuffled_each_epoch():
    split = make_split()
    a, b = TrainBatches(split, 30, 64), TrainBatches(split, 30, 64)
    a.seed(5), b.seed(5)
    first_a, first_b = torch.cat(list(a), 1), torch.cat(list(b), 1)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, torch.cat(list(a), 1))


def test_user_with_every_item_is_an_error():
    split = Split(np.array([0, 0, 1]), np.array([0, 1, 0]))
    with pytest.raises(UserError, match="user 0 has interacted with every training item"):
        TrainBatches(split, 2, 4)
