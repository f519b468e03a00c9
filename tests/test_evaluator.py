"""The vectorised evaluator against a plain per-user implementation of the same protocol."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

import mgrec.evaluator as evaluator_module
from mgrec.data.dataset import Split
from mgrec.evaluator import (
    MASK_SCORE,
    Evaluator,
    FactorScorer,
    ItemBlockScorer,
    first_appearance_order,
    rank_order,
    top_items,
)
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


# --- streaming, ranking rule, mask rule ------------------------------------------------------


def hits_before_streaming(evaluator: Evaluator, scores: torch.Tensor) -> np.ndarray:
    """The evaluator's algorithm before streaming (train-only mask, index_put, torch.topk), kept
    to show the streamed one gives the same hits."""
    depth, n_items = max(evaluator.topk), evaluator.n_items
    keys_all, offsets = evaluator.masked_keys, evaluator.masked_offsets
    batches = []
    for start in range(0, evaluator.n_users, evaluator.batch_size):
        stop = min(start + evaluator.batch_size, evaluator.n_users)
        block = scores[evaluator.users[start:stop]].clone()
        keys = keys_all[offsets[start] : offsets[stop]]
        block[keys // n_items - start, keys % n_items] = MASK_SCORE
        batches.append(evaluator._hits(start, torch.topk(block, depth, dim=1).indices))
    return torch.cat(batches).numpy()


class Sliced:
    """An ItemBlockScorer over fixed scores that records every block's shape."""

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores, self.shapes = scores, []

    def block(self, users, item_start, item_stop):
        self.shapes.append((len(users), item_stop - item_start))
        return self.scores[users, item_start:item_stop].clone()


def canonical_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The documented rule per row: score down, NaN above every number, ties by lower id."""
    tops = []
    for row in scores:
        nan = np.isnan(row)
        key = np.where(nan, 0.0, -row.astype(np.float64))
        tops.append(np.lexsort((np.arange(len(row)), key, ~nan))[:k])
    return np.array(tops)


@pytest.fixture
def small_chunks(monkeypatch):
    """Let the chunked selection run on small rows (and in small row slices)."""
    monkeypatch.setattr(evaluator_module, "_CHUNKED_MIN_WIDTH", 0)
    monkeypatch.setattr(evaluator_module, "_MIN_GROUPS_PER_K", 2)
    monkeypatch.setattr(evaluator_module, "_CACHE_ELEMENTS", 5000)


def random_case(seed: int, n_users: int = 60, n_items: int = 700, n_train: int = 3000):
    rng = np.random.default_rng(seed)
    train = Split(rng.integers(0, n_users, n_train), rng.integers(0, n_items, n_train))
    split = Split(rng.integers(0, n_users, 200), rng.integers(0, n_items, 200))
    return rng, train, split


@pytest.mark.parametrize("ranking", ["auto", "chunked", "direct"])
@pytest.mark.parametrize(
    ("batch_size", "item_block_size"),
    [(1, None), (1, 13), (7, None), (7, 1), (7, 7), (7, 64), (1000, None), (1000, 1),
     (1000, 13), (1000, 699)],
)  # fmt: skip
def test_streamed_hits_equal_the_previous_algorithm(
    small_chunks, ranking, item_block_size, batch_size
):
    rng, train, split = random_case(5)
    scores = torch.from_numpy(rng.normal(size=(60, 700)).astype(np.float32))
    evaluator = Evaluator(
        split, train, 700, [5, 10], ["recall"], batch_size,
        item_block_size=item_block_size, ranking=ranking,
    )  # fmt: skip
    expected = hits_before_streaming(evaluator, scores)
    assert np.array_equal(evaluator.hits(lambda users: scores[users].clone()), expected)
    assert np.array_equal(evaluator.hits(Sliced(scores)), expected)


@pytest.mark.parametrize("ranking", ["chunked", "direct"])
@pytest.mark.parametrize("kind", ["few values", "many values", "nan and inf", "all equal"])
def test_top_items_follow_the_tie_rule(small_chunks, ranking, kind):
    rng = np.random.default_rng(11)
    if kind == "few values":
        scores = rng.integers(0, 3, size=(40, 900)).astype(np.float32)
    elif kind == "many values":
        scores = rng.integers(0, 400, size=(40, 900)).astype(np.float32)
    elif kind == "all equal":
        scores = np.zeros((40, 900), dtype=np.float32)
    else:
        scores = rng.normal(size=(40, 900)).astype(np.float32)
        scores[rng.random(scores.shape) < 0.02] = np.nan
        scores[rng.random(scores.shape) < 0.02] = np.inf
        scores[rng.random(scores.shape) < 0.02] = -np.inf
        scores[:3, :40] = np.nan  # rows whose whole top is NaN
    for k in (1, 5, 20):
        values, items = top_items(torch.from_numpy(scores.copy()), k, ranking, max_elements=2000)
        assert (np.diff(items.numpy(), axis=1) > 0).all()  # a set, by increasing id
        ranked = rank_order(values, items).numpy()
        assert np.array_equal(ranked, canonical_top(scores, k))


@pytest.mark.parametrize("item_block_size", [1, 7, 13, 100])
def test_ties_ranked_by_lower_item_id_whatever_the_blocks(small_chunks, item_block_size):
    rng, train, split = random_case(8)
    scores = torch.from_numpy(rng.integers(0, 4, size=(60, 700)).astype(np.float32))
    evaluator = Evaluator(split, train, 700, [5, 20], ["recall"], 16)
    blocked = Evaluator(split, train, 700, [5, 20], ["recall"], 16, item_block_size=item_block_size)
    unblocked = evaluator.hits(lambda users: scores[users].clone())
    assert np.array_equal(blocked.hits(Sliced(scores)), unblocked)
    # ... and both follow the naive per-user ranking with a stable sort (lower id first).
    expected = naive(scores.numpy(), split, train, 20)
    ours = evaluator.evaluate(lambda users: scores[users].clone())
    for name in ("recall",):
        for k in (5, 20):
            assert ours[f"{name}@{k}"] == expected[name][k - 1]


def test_blocks_follow_the_memory_budget():
    rng, train, split = random_case(2, n_users=60, n_items=1000)
    scores = torch.from_numpy(rng.normal(size=(60, 1000)).astype(np.float32))
    budget_mb = 2 * 4 * 8 * 1000 / 2**20  # room for 8 full rows of 1000 float32 scores
    evaluator = Evaluator(split, train, 1000, [5], ["recall"], 32, memory_budget_mb=budget_mb)
    asked = []
    evaluator.hits(lambda users: asked.append(len(users)) or scores[users].clone())
    assert max(asked) == 8 and sum(asked) == evaluator.n_users
    sliced = Sliced(scores)
    evaluator.hits(sliced)  # 8 rows of 1000 < 32 rows wanted: items streamed, 32 x 250
    assert {shape for shape in sliced.shapes} == {(32, 250), (evaluator.n_users - 32, 250)}
    expected = hits_before_streaming(evaluator, scores)
    assert np.array_equal(evaluator.hits(sliced), expected)


def test_one_score_block_alive_at_a_time():
    rng, train, split = random_case(4)
    scores = torch.from_numpy(rng.normal(size=(60, 700)).astype(np.float32))
    previous = []

    class Watched:
        def block(self, users, item_start, item_stop):
            assert all(ref() is None for ref in previous), "the previous block is still alive"
            out = scores[users, item_start:item_stop].clone()
            previous.append(weakref.ref(out))
            return out

    evaluator = Evaluator(split, train, 700, [5, 50], ["recall"], 8, item_block_size=13)
    assert np.array_equal(evaluator.hits(Watched()), hits_before_streaming(evaluator, scores))
    previous.clear()
    evaluator.hits(lambda users: Watched().block(users, 0, 700))


def test_factor_scorer_is_the_plain_product():
    generator = torch.Generator().manual_seed(0)
    user_factors, item_factors = torch.randn(30, 8, generator=generator), torch.randn(90, 8)
    scorer = FactorScorer(user_factors, item_factors)
    users = torch.tensor([3, 1, 29])
    assert torch.equal(scorer(users), user_factors[users] @ item_factors.T)
    assert isinstance(scorer, ItemBlockScorer)
    assert not isinstance(lambda users: users, ItemBlockScorer)
    rng, train, split = random_case(6, n_users=30, n_items=90, n_train=400)
    evaluator = Evaluator(split, train, 90, [5, 10], ["recall", "ndcg"], 7)
    plain = evaluator.evaluate(lambda users: user_factors[users] @ item_factors.T)
    assert evaluator.evaluate(scorer) == plain


def test_wrong_block_shape_is_reported():
    rng, train, split = random_case(1)
    evaluator = Evaluator(split, train, 700, [5], ["recall"], 16)
    with pytest.raises(ValueError, match="shape"):
        evaluator.hits(lambda users: torch.zeros(len(users), 699))


def test_masking_validation_items_for_the_test_split():
    # user 0: train item 0, valid item 1, test item 2; user 1: train 3, valid 2, test 1.
    train = Split(np.array([0, 1]), np.array([0, 3]))
    valid = Split(np.array([0, 1]), np.array([1, 2]))
    test = Split(np.array([0, 1]), np.array([2, 1]))
    scores = torch.tensor([[9.0, 8.0, 7.0, 1.0], [5.0, 4.0, 6.0, 9.0]])
    score = lambda users: scores[users].clone()  # noqa: E731
    reference = Evaluator(test, train, 4, [1, 2], ["recall", "precision"])
    masked = Evaluator(
        test, train, 4, [1, 2], ["recall", "precision"], also_masked={"valid": valid}
    )
    assert (reference.mask_rule, masked.mask_rule) == ("train", "train+valid")
    # Train only: user 0 ranks 1, 2 (valid item first: a miss at 1); user 1 ranks 2, 0, 1.
    assert reference.hits(score).tolist() == [[False, True], [False, False]]
    assert reference.evaluate(score) == {
        "recall@1": 0.0, "recall@2": 0.5, "precision@1": 0.0, "precision@2": 0.25,
    }  # fmt: skip
    # Train + valid: user 0 ranks 2, 3; user 1 ranks 0, 1.
    assert masked.hits(score).tolist() == [[True, False], [False, True]]
    assert masked.evaluate(score) == {
        "recall@1": 0.5, "recall@2": 1.0, "precision@1": 0.5, "precision@2": 0.5,
    }  # fmt: skip


def test_masking_nothing_extra_is_the_previous_protocol():
    rng, train, split = random_case(9, n_users=50, n_items=80, n_train=600)
    valid = Split(rng.integers(0, 50, 100), rng.integers(0, 80, 100))
    scores = torch.from_numpy(rng.normal(size=(50, 80)).astype(np.float32))
    score = lambda users: scores[users].clone()  # noqa: E731
    plain = Evaluator(split, train, 80, [5, 10, 20], ["recall", "ndcg"], 7)
    empty = Evaluator(split, train, 80, [5, 10, 20], ["recall", "ndcg"], 7, also_masked={})
    masked = Evaluator(
        split, train, 80, [5, 10, 20], ["recall", "ndcg"], 7, also_masked={"valid": valid}
    )
    assert np.array_equal(plain.hits(score), hits_before_streaming(plain, scores))
    assert empty.evaluate(score) == plain.evaluate(score)
    assert empty.mask_rule == "train"
    assert masked.evaluate(score) != plain.evaluate(score)


def test_integer_scores_rank_as_floats():
    rng, train, split = random_case(3, n_users=40, n_items=120, n_train=500)
    counts = torch.from_numpy(rng.integers(0, 6, size=120)).expand(40, 120)
    evaluator = Evaluator(split, train, 120, [5, 10], ["recall", "ndcg"], 9)
    as_float = evaluator.evaluate(lambda users: counts[: len(users)].float())
    assert evaluator.evaluate(lambda users: counts[: len(users)].clone()) == as_float
