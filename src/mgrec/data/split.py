"""The reference's per-user train/valid/test split rule (MMRec's preprocessing notebook).

Per user, after a shuffle: fewer than 10 interactions -> all but two for training, then exactly
one valid and one test item; otherwise ``v = floor(0.2 n)`` rows are held out, ``v // 2`` for
validation and the rest for test. The reference's shuffle had no seed; ours takes one.
"""

from __future__ import annotations

import numpy as np


def split_labels(users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Assign x_label 0/1/2 to interaction rows by the reference's rule.

    Args:
        users: int [rows] user id of each interaction row.
        rng: the random generator for the within-user shuffle.

    Returns:
        ``(order, labels)``: ``order`` [rows] is a permutation of the rows grouped by user
        (users ascending, shuffled within a user) and ``labels`` [rows] the x_label of
        ``rows[order]``, in that order.
    """
    users = np.asarray(users)
    shuffled = rng.permutation(len(users))
    order = shuffled[np.argsort(users[shuffled], kind="stable")]
    grouped = users[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    counts = np.diff(np.r_[starts, len(grouped)])
    position = np.arange(len(grouped)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    held_out = (n * 0.2).astype(np.int64)
    n_train = np.where(n < 10, n - 2, n - held_out)
    n_valid = np.where(n < 10, 1, held_out // 2)
    labels = np.where(position < n_train, 0, np.where(position < n_train + n_valid, 1, 2))
    return order, labels.astype(np.int64)
