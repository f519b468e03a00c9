"""The user-user co-interaction graph of DualGNN and DRAGON (``user_graph_dict.npy``).

Definition (the reference's generator): two users are neighbours when they share training items;
the weight is the number of distinct items they share; each user keeps the top 200 neighbours
by weight, ties going to the lower user id. The reference builds a dense users x users matrix in
a quadratic Python loop (~148 GB for Elec); here it is a sparse product A A^T computed in row
chunks whose work is bounded, so memory stays in the low GBs at any scale.

The reference's file is a pickled dict ``{user: [neighbour ids, weights]}`` (Python lists,
weights as floats, sorted by weight descending). A pickle can run code when loaded, so mgrec loads
one only from the dataset folder the user named, and keeps its own cache as plain ``.npz`` arrays.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from mgrec.data.cache import Cache
from mgrec.data.dataset import RecData, content_hash
from mgrec.errors import UserError

TOP_NEIGHBOURS = 200


@dataclass
class UserGraph:
    """Each user's neighbours, best first.

    Attributes:
        neighbours: int64 [U, K] neighbour ids (row u holds ``lengths[u]`` valid entries).
        weights: float32 [U, K] their weights (co-interaction counts).
        lengths: int64 [U] number of neighbours of each user (0..K).
    """

    neighbours: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.lengths)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"neighbours": self.neighbours, "weights": self.weights, "lengths": self.lengths}


def build(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    top: int = TOP_NEIGHBOURS,
    progress: bool = True,
    budget: float = 2e7,
) -> UserGraph:
    """Top-``top`` co-interaction neighbours of every user over the given (training) rows.

    Args:
        users, items: int [E] interaction rows (duplicates count once).
        n_users: number of user ids (rows of the result).
        top: neighbours kept per user.
        progress: show a progress bar over the row chunks.
        budget: candidate pairs per chunk (bounds memory: ~16 bytes each).
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_items = int(items.max()) + 1 if len(items) else 0
    pairs = np.unique(users * max(n_items, 1) + items)
    u, i = pairs // max(n_items, 1), pairs % max(n_items, 1)
    ones = np.ones(len(pairs), dtype=np.int32)
    by_user = sp.csr_matrix((ones, (u, i)), shape=(n_users, n_items))
    by_item = by_user.T.tocsr()
    # Work of a user's row of A A^T: the summed degrees of its items. Chunks are cut so that
    # each product holds at most `budget` candidate pairs.
    item_degree = np.diff(by_item.indptr)
    work = np.bincount(u, weights=item_degree[i], minlength=n_users)
    bounds = [0]
    cumulative = np.cumsum(work)
    while bounds[-1] < n_users:
        start = bounds[-1]
        offset = cumulative[start - 1] if start else 0.0
        stop = int(np.searchsorted(cumulative, offset + budget, side="right"))
        bounds.append(min(n_users, max(stop, start + 1)))
    neighbours = np.zeros((n_users, top), dtype=np.int64)
    weights = np.zeros((n_users, top), dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    # Candidates are ordered by one sort of a packed int64 key: local row | inverted count | id,
    # i.e. by row, then weight descending, then the lower id (3-4x faster than a lexsort).
    most_shared = int(np.diff(by_user.indptr).max(initial=0))
    col_bits, count_bits = max(n_users - 1, 1).bit_length(), max(most_shared, 1).bit_length()
    chunks = list(zip(bounds[:-1], bounds[1:], strict=True))
    for start, stop in tqdm(
        chunks, desc="user graph", unit="chunk", disable=not progress or len(chunks) < 2
    ):
        shared = by_user[start:stop] @ by_item  # CSR [rows, U]: shared item counts
        per_row = np.diff(shared.indptr)
        local_row = np.repeat(np.arange(stop - start, dtype=np.int64), per_row)
        counts = shared.data
        counts[shared.indices == local_row + start] = 0  # a user is not its own neighbour
        if (stop - start).bit_length() + count_bits + col_bits > 63:
            raise UserError("user graph: too many users or items for the packed sort key")
        key = local_row << (count_bits + col_bits)
        key |= (most_shared - counts.astype(np.int64)) << col_bits
        key |= shared.indices
        key.sort()
        # Rows keep their positions (indptr) after the sort: read each row's first `top` entries.
        kept_per_row = np.minimum(per_row, top)
        row_of = np.repeat(np.arange(stop - start), kept_per_row)
        rank = np.arange(len(row_of)) - np.repeat(
            np.cumsum(kept_per_row) - kept_per_row, kept_per_row
        )
        kept = key[shared.indptr[:-1][row_of] + rank]
        kept_counts = most_shared - ((kept >> col_bits) & ((1 << count_bits) - 1))
        real = kept_counts > 0  # drops the zeroed self pair
        rows, rank = row_of[real] + start, rank[real]
        neighbours[rows, rank] = kept[real] & ((1 << col_bits) - 1)
        weights[rows, rank] = kept_counts[real]
        lengths[start:stop] = np.bincount(row_of[real], minlength=stop - start)
    return UserGraph(neighbours, weights, lengths)


def to_reference_dict(graph: UserGraph) -> dict[int, list[list]]:
    """The reference's format: ``{user: [neighbour id list, weight list (floats)]}``."""
    return {
        u: [graph.neighbours[u, :n].tolist(), graph.weights[u, :n].astype(float).tolist()]
        for u, n in enumerate(graph.lengths.tolist())
    }


def from_reference_dict(mapping: object, n_users: int, source: str) -> UserGraph:
    """Check and convert a loaded reference dict; any deviation is a user error naming ``source``."""
    if not isinstance(mapping, dict):
        raise UserError(f"{source}: expected a pickled dict {{user: [neighbours, weights]}}")
    missing = [u for u in range(n_users) if u not in mapping]
    if missing:
        raise UserError(
            f"{source}: has no entry for user {missing[0]} ({len(missing)} of {n_users} users missing); "
            "rebuild it for this dataset with --build_user_graph"
        )
    longest = max((len(mapping[u][0]) for u in range(n_users)), default=0)
    neighbours = np.zeros((n_users, max(longest, 1)), dtype=np.int64)
    weights = np.zeros((n_users, max(longest, 1)), dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    for u in range(n_users):
        entry = mapping[u]
        if not (
            isinstance(entry, (list, tuple)) and len(entry) == 2 and len(entry[0]) == len(entry[1])
        ):
            raise UserError(
                f"{source}: the entry of user {u} is not [neighbour ids, weights] of equal length"
            )
        ids = np.asarray(entry[0], dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= n_users):
            raise UserError(f"{source}: user {u} has a neighbour id outside 0..{n_users - 1}")
        neighbours[u, : len(ids)] = ids
        weights[u, : len(ids)] = np.asarray(entry[1], dtype=np.float32)
        lengths[u] = len(ids)
    return UserGraph(neighbours, weights, lengths)


def load_reference(path: Path, n_users: int) -> UserGraph:
    """Load a reference ``user_graph_dict.npy`` (a pickle: only from the user's dataset folder)."""
    try:
        mapping = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(
            f"{path}: cannot be read as the reference's pickled user-graph dict ({exc})"
        ) from exc
    return from_reference_dict(mapping, n_users, str(path))


def save_reference(path: Path, graph: UserGraph) -> None:
    """Write ``graph`` in the reference's pickled-dict format, atomically."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npy")
    os.close(handle)
    try:
        np.save(tmp, to_reference_dict(graph), allow_pickle=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sample_neighbours(
    graph: UserGraph, k: int, rng: np.random.RandomState | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's neighbour table, as DualGNN/DRAGON's ``pre_epoch_processing``.

    Users with at least ``k`` neighbours keep their first ``k``. Users with 1..k-1 are padded to
    ``k`` by repeatedly appending a uniformly random entry of their growing list (so padded
    entries can be drawn again), redrawn every epoch. Weights are the softmax of the (padded)
    raw weights; users without neighbours get neighbour 0 with weight 0.

    Returns:
        ``(ids int64 [U, k], weights float32 [U, k])``.
    """
    # NumPy's global RNG (seeded per grid combination), as the reference's padding uses.
    uniform = rng.random_sample if rng is not None else np.random.random_sample
    n_users = graph.n_users
    width = graph.neighbours.shape[1]
    ids = np.zeros((n_users, k), dtype=np.int64)
    raw = np.zeros((n_users, k), dtype=np.float32)
    take = min(k, width)
    ids[:, :take] = graph.neighbours[:, :take]
    raw[:, :take] = graph.weights[:, :take]
    lengths = np.minimum(graph.lengths, k)
    padded = np.flatnonzero((lengths > 0) & (lengths < k))
    for position in range(int(lengths[padded].min()) if len(padded) else k, k):
        rows = padded[lengths[padded] <= position]
        # the list has `position` entries now; choose one of them uniformly
        pick = (uniform(len(rows)) * position).astype(np.int64)
        ids[rows, position] = ids[rows, pick]
        raw[rows, position] = raw[rows, pick]
    weights = torch.softmax(torch.from_numpy(raw), dim=1).numpy()  # the reference's float32 softmax
    empty = lengths == 0
    ids[empty], weights[empty] = 0, 0.0
    return ids, weights


def for_dataset(
    data: RecData, file_name: str, cache: Cache, progress: bool = True
) -> tuple[UserGraph, str]:
    """The user graph of a dataset: its own ``file_name`` when the folder has one (the reference's
    pickle, loaded from the folder the user named), else built from the training split into the
    cache (plain arrays). Returns the graph and a line saying where it came from."""
    path = data.path / file_name
    if path.is_file():
        return load_reference(path, data.n_users), f"user graph: {path}"
    params = {
        "train": content_hash(data.train.users, data.train.items),
        "n_users": data.n_users,
        "top": TOP_NEIGHBOURS,
    }
    arrays = cache.get_or_build(
        "user-graph",
        params,
        lambda: build(data.train.users, data.train.items, data.n_users, progress=progress).arrays(),
    )
    where = f"user graph: built from the training split into {cache.path('user-graph', params)} ({path.name} not in the dataset folder)"
    return UserGraph(**arrays), where
