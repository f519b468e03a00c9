"""The reference notebooks' transforms of the ratings (``0rating2inter``, ``1splitting``):
dropping repeated rows, the iterative 5-core, re-indexing by first appearance, the per-user split.

All work on integer code arrays of one row per rating; none reads or writes a file.
"""

from __future__ import annotations

import numpy as np

from mgrec.data.split import split_labels

K_CORE = 5


def first_occurrences(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """bool [rows]: true for the first row of each (user, item, timestamp) (``drop_duplicates``).

    Args:
        users, items, timestamps: int [rows], the rows in file order.
    """
    order = np.lexsort((timestamps, items, users))  # stable: equal keys keep their file order
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for column in (users, items, timestamps):
        sorted_column = column[order]
        same &= sorted_column[1:] == sorted_column[:-1]
    keep = np.ones(len(users), dtype=bool)
    keep[order[1:][same]] = False
    return keep


def k_core(users: np.ndarray, items: np.ndarray, k: int = K_CORE) -> tuple[np.ndarray, int]:
    """The iterative k-core filter of the reference: repeatedly drop every row whose user or item
    has fewer than ``k`` rows (counted among the rows still kept) until none is dropped.

    Args:
        users, items: int [rows] codes (0..n-1).

    Returns:
        ``(keep, rounds)``: bool [rows] the surviving rows, and the number of dropping rounds.
    """
    users, items = np.asarray(users), np.asarray(items)
    keep = np.ones(len(users), dtype=bool)
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        dropped = keep & ((user_count[users] < k) | (item_count[items] < k))
        if not dropped.any():
            return keep, rounds
        keep &= ~dropped
        rounds += 1


def first_appearance(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-index codes 0..N-1 in order of first appearance (``pd.unique``'s order).

    Args:
        codes: int [rows].

    Returns:
        ``(new_ids int64 [rows], originals [N])``: the new id of each row, and the original code
        of each new id.
    """
    originals, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(originals), dtype=np.int64)
    rank[order] = np.arange(len(originals))
    return rank[inverse.reshape(-1)], originals[order]


def split_rows(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's per-user train/valid/test split, after a shuffle seeded by ``seed`` (the
    reference's ``df.sample(frac=1)`` had no seed).

    Args:
        users: int [rows] the user of each row.

    Returns:
        ``(order int [rows], labels int64 [rows])``: the rows grouped by user (ascending) and
        shuffled within a user, and the ``x_label`` (0 train, 1 valid, 2 test) of
        ``rows[order]``, in that order.
    """
    return split_labels(users, np.random.default_rng(seed))
