"""The metric functions against the reference's values and against hand-computed cases."""

import math

import numpy as np
import pytest

from conftest import GOLDEN
from mgrec.metrics import METRIC_FUNCTIONS


@pytest.mark.parametrize("name", ["recall", "precision", "ndcg", "map"])
def test_metrics_match_reference_fixture(name):
    stored = np.load(GOLDEN / "reference" / "metrics.npz")
    ours = METRIC_FUNCTIONS[name](stored["hits"], stored["pos_len"])
    np.testing.assert_array_equal(ours, stored[name])  # bit for bit


def test_hand_computed_user():
    # Relevant items at ranks 1 and 3, three relevant items in all.
    hits = np.array([[True, False, True, False]])
    pos_len = np.array([3])
    recall = METRIC_FUNCTIONS["recall"](hits, pos_len).tolist()
    assert recall == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    precision = METRIC_FUNCTIONS["precision"](hits, pos_len).tolist()
    assert precision == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4])
    d = [1 / math.log2(r + 1) for r in range(1, 5)]
    ideal = [d[0], d[0] + d[1], d[0] + d[1] + d[2], d[0] + d[1] + d[2]]  # min(3, k) ideal hits
    dcg = [d[0], d[0], d[0] + d[2], d[0] + d[2]]
    assert METRIC_FUNCTIONS["ndcg"](hits, pos_len).tolist() == pytest.approx(
        [a / b for a, b in zip(dcg, ideal, strict=True)]
    )
    # AP@k: sum of precision at hits over min(k, pos_len)
    ap = [1 / 1, 1 / 2, (1 + 2 / 3) / 3, (1 + 2 / 3) / 3]
    assert METRIC_FUNCTIONS["map"](hits, pos_len).tolist() == pytest.approx(ap)
