"""The evaluator at its edges: a top-k as wide as the item table (every item ranked), and one
wider (refused).

Written against mutants of ``mgrec/evaluator.py`` that survived the suite (see
benchmarks/MUTATION.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgrec.data.dataset import Split
from mgrec.errors import UserError
from mgrec.evaluator import Evaluator, top_items


@pytest.mark.parametrize("ranking", ["chunked", "direct"])
@pytest.mark.parametrize("k", [3, 4])
def test_a_top_k_as_wide_as_the_row_is_every_item(ranking, k):
    scores = torch.tensor([[0.3, 0.1, 0.2], [math.nan, 1.0, 1.0], [-1.0, -2.0, 5.0]])
    values, items = top_items(scores, k, ranking)
    assert items.tolist() == [[0, 1, 2]] * 3  # all of them, in increasing id
    torch.testing.assert_close(values, scores, rtol=0, atol=0, equal_nan=True)  # NaN is NaN


@pytest.mark.parametrize("ranking", ["chunked", "direct"])
def test_a_top_k_of_every_item_finds_every_unmasked_relevant_item(ranking):
    rng = np.random.default_rng(0)
    n_users, n_items = 12, 8
    train = Split(rng.integers(0, n_users, 30), rng.integers(0, n_items, 30))
    split = Split(np.arange(n_users), rng.integers(0, n_items, n_users))  # one item each
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)).astype(np.float32))
    evaluator = Evaluator(split, train, n_items, [n_items], ["recall"], 5, ranking=ranking)
    masked = {(u, i) for u, i in zip(train.users.tolist(), train.items.tolist(), strict=True)}
    found = [(u, i) not in masked for u, i in zip(split.users, split.items, strict=True)]
    recall = evaluator.evaluate(lambda users: scores[users].clone())[f"recall@{n_items}"]
    assert recall == pytest.approx(np.mean(found))
    with pytest.raises(UserError, match="topk asks for 9 items but there are only 8"):
        Evaluator(split, train, n_items, [5, 9], ["recall"], 5)
