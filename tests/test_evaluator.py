"""The vectorised evaluator against a plain per-user implementation of the same protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrec.data.dataset import Split
from mgrec.evaluator import Evaluator, first_appearance_order
from mgrec.metrics import METRIC_FUNCTIONS


def naive(scores: np.ndarray, split: Split, train: Split, depth: int) -> dict[str, np.ndarray]:
    users = first_appearance_order(split.users)
    hits, pos_len = [], []
    for user in users:
        row = scores[user].copy()
        row[train.items[train.users == user]] = -1e10
        top = np.argsort(-row, kind="stable")[:depth]
        relevant = split.items[split.users == user]
        hits.append([item in relevant for item in top])
        pos_len.append(len(relevant))
    hits, pos_len = np.array(hits), np.array(pos_len)
    return {name: f(hits, pos_len) for name, f in METRIC_FUNCTIONS.items()}


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_matches_naive_protocol(batch_size):
    rng = np.random.default_rng(3)
    n_users, n_items = 50, 80
    train = Split(rng.integers(0, n_users, 600), rng.integers(0, n_items, 600))
    split = Split(rng.integers(0, n_users, 120), rng.integers(0, n_items, 120))
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    evaluator = Evaluator(
        split, train, n_items, [5, 10, 20, 50], ["Recall", "NDCG", "Precision", "MAP"], batch_size
    )
    ours = evaluator.evaluate(lambda users: torch.from_numpy(scores)[users].clone())
    expected = naive(scores, split, train, 50)
    for name, per_rank in expected.items():
        for k in (5, 10, 20, 50):
            assert ours[f"{name}@{k}"] == per_rank[k - 1]


def test_users_in_first_appearance_order():
    assert first_appearance_order(np.array([5, 2, 5, 9, 2, 1])).tolist() == [5, 2, 9, 1]


def test_training_items_never_recommended():
    train = Split(np.array([0, 0, 1]), np.array([0, 1, 2]))
    split = Split(np.array([0, 1]), np.array([2, 0]))
    evaluator = Evaluator(split, train, 3, [1], ["recall"])
    scores = torch.tensor([[9.0, 8.0, 1.0], [0.0, 1.0, 9.0]])
    hits = evaluator.hits(lambda users: scores[users].clone())
    assert hits.tolist() == [[True], [False]]  # user 0: item 2 ranks first once 0, 1 are masked
