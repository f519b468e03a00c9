"""Top-K ranking metrics with exactly the reference's definitions and float arithmetic.

Inputs are a hit matrix ``hits`` [n_users, K] (bool: is the item at rank r relevant?) and
``pos_len`` [n_users] (number of relevant rows of the user). Each function returns the
per-rank average over users, [K]; entry k-1 is metric@k.

These run in float64 NumPy on the host, in the reference's order of operations (the averages
are reported rounded to 4 places, and values on a rounding boundary do occur, so the last bits
matter). The expensive part, scoring and ranking every item, happens on the model's device.
"""

from __future__ import annotations

import numpy as np


def _ranks(hits: np.ndarray) -> np.ndarray:
    return np.arange(1, hits.shape[1] + 1)


def recall(hits: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    """Hits in the top k over the number of relevant items."""
    return (np.cumsum(hits, axis=1) / pos_len.reshape(-1, 1)).mean(axis=0)


def precision(hits: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    """Hits in the top k over k."""
    return (np.cumsum(hits, axis=1) / _ranks(hits)).mean(axis=0)


def ndcg(hits: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    """DCG with binary gains over the ideal DCG of min(pos_len, k) hits."""
    discount = 1.0 / np.log2(_ranks(hits).astype(np.float64) + 1)
    dcg = np.cumsum(np.where(hits, discount, 0), axis=1)
    ideal_prefix = np.cumsum(discount)
    ideal_len = np.minimum(pos_len, hits.shape[1])
    ideal = ideal_prefix[np.minimum(np.arange(hits.shape[1]), (ideal_len - 1).reshape(-1, 1))]
    return (dcg / ideal).mean(axis=0)


def average_precision(hits: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    """Sum of precision at each hit, over min(k, pos_len) (the reference's MAP normaliser)."""
    ranks = _ranks(hits)
    precision_at = np.cumsum(hits, axis=1) / ranks
    summed = np.cumsum(precision_at * hits.astype(np.float64), axis=1)
    normaliser = np.minimum(ranks, np.minimum(pos_len, hits.shape[1]).reshape(-1, 1))
    return (summed / normaliser).mean(axis=0)


def round4(value: float) -> float:
    """Round to 4 places the way the reference's reported numbers are (NumPy's rounding:
    scale, round half to even, unscale), which differs from Python's ``round`` on ties."""
    return float(np.round(np.float64(value), 4))


METRIC_FUNCTIONS = {
    "recall": recall,
    "precision": precision,
    "ndcg": ndcg,
    "map": average_precision,
}
