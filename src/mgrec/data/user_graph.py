"""The user-user co-interaction graph of DualGNN and DRAGON (``user_graph_dict.npy``).

Definition (the reference's generator): two users are neighbours when they share training items;
the weight is the number of distinct items they share; each user keeps the top 200 neighbours
by weight, ties going to the lower user id. The reference builds a dense users x users matrix in
a quadratic Python loop (~148 GB for Elec); here it is a sparse product A A^T computed in row
chunks whose work is bounded, so memory stays in the low GBs at any scale.

The reference's file is a pickled dict ``{user: [neighbour ids, weights]}`` (Python lists,
weights as floats, sorted by weight descending). A pickle can run code when loaded, so mgrec reads
it with a restricted unpickler that admits only what that format needs (dicts, lists, numbers,
numeric NumPy arrays and scalars) and refuses anything else, and keeps its own cache as plain
``.npz`` arrays.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from mgrec import atomic
from mgrec.data.cache import Cache
from mgrec.data.dataset import RecData, content_hash, file_digest
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


def check_arrays(n_users: int) -> Callable[[dict[str, np.ndarray]], str | None]:
    """A check for a cached graph of ``n_users`` users: None when sound, else what is wrong."""

    def check(arrays: dict[str, np.ndarray]) -> str | None:
        if set(arrays) != {"neighbours", "weights", "lengths"}:
            return f"arrays {sorted(arrays)}"
        ids, weights, lengths = arrays["neighbours"], arrays["weights"], arrays["lengths"]
        if ids.ndim != 2 or ids.shape[0] != n_users or weights.shape != ids.shape:
            return f"shapes {ids.shape}, {weights.shape} for {n_users} users"
        if lengths.shape != (n_users,) or lengths.min(initial=0) < 0:
            return "lengths"
        if lengths.max(initial=0) > ids.shape[1]:
            return "lengths beyond the table"
        if ids.size and (ids.min() < 0 or ids.max() >= n_users):
            return "neighbour ids out of range"
        if not np.isfinite(weights).all():
            return "non-finite weights"
        return None

    return check


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


class RefusedPickle(Exception):
    """The pickle asked for something a user-graph file never holds."""


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in "biufc" and dtype != np.dtype(object):
        raise RefusedPickle(f"a NumPy dtype {dtype}")
    return dtype


def _array(cls: Any, *args: Any) -> Any:
    if cls is not np.ndarray:
        raise RefusedPickle(f"an array of class {cls!r}")
    return np.ndarray.__new__(np.ndarray, *args)


def _scalar(dtype: Any, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc":
        raise RefusedPickle(f"a NumPy scalar of {dtype!r}")
    return np.frombuffer(args[0], dtype=dtype)[0] if args else dtype.type()


# The globals a pickled object array of dicts, lists and numbers refers to (NumPy 1 and 2 names).
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy", "ndarray"): np.ndarray,  # only ever passed to _reconstruct, which checks it
    ("numpy", "dtype"): _numeric_dtype,
    **{(m, "_reconstruct"): _array for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
}


class _GraphUnpickler(pickle.Unpickler):
    """Admits only ``_ALLOWED``: array reconstruction, dtypes (numeric, or ``object`` for the
    outer array) and numeric scalars. Anything else raises ``RefusedPickle`` before it runs."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise RefusedPickle(f"{module}.{name}")
        return found


def read_reference_pickle(path: Path) -> object:
    """The object stored in a pickled ``.npy`` file, read with the restricted unpickler."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f".npy format version {version}")
            if not dtype.hasobject:
                raise ValueError(f"an array of {dtype}, not a pickled dict")
            payload = handle.read()
        loaded = _GraphUnpickler(io.BytesIO(payload)).load()
    except RefusedPickle as exc:
        raise UserError(
            f"{path}: refused: the pickle asks for {exc}, which a user-graph file never holds "
            "(loading it could run code); delete the file and let mgrec build the graph, or "
            "rebuild it with --build_user_graph --force"
        ) from exc
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError, IndexError) as exc:
        raise UserError(
            f"{path}: cannot be read as the reference's pickled user-graph dict (truncated or "
            f"corrupt: {exc}); rebuild it with --build_user_graph --force"
        ) from exc
    if isinstance(loaded, np.ndarray) and loaded.shape == ():
        return loaded.item()
    return loaded


def load_reference(path: Path, n_users: int) -> UserGraph:
    """Load a reference ``user_graph_dict.npy`` safely (see ``read_reference_pickle``)."""
    return from_reference_dict(read_reference_pickle(path), n_users, str(path))


def save_reference(path: Path, graph: UserGraph) -> None:
    """Write ``graph`` in the reference's pickled-dict format, atomically."""
    with atomic.atomic_open(Path(path), "wb") as handle:
        np.save(handle, np.array(to_reference_dict(graph), dtype=object), allow_pickle=True)


def sample_neighbours(
    graph: UserGraph, k: int, rng: np.random.RandomState | None = None, draw: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's neighbour table, as DualGNN/DRAGON's ``pre_epoch_processing``.

    Users with at least ``k`` neighbours keep their first ``k``. Users with 1..k-1 are padded to
    ``k`` by repeatedly appending a uniformly random entry of their growing list (so padded
    entries can be drawn again), redrawn every epoch. Weights are the softmax of the (padded)
    raw weights; users without neighbours get neighbour 0 with weight 0.

    ``draw`` False pads without randomness: position p repeats entry p mod length (used when a
    model's training randomness is switched off for analysis).

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
        if draw:
            pick = (uniform(len(rows)) * position).astype(np.int64)
        else:
            pick = position % lengths[rows]
        ids[rows, position] = ids[rows, pick]
        raw[rows, position] = raw[rows, pick]
    weights = torch.softmax(torch.from_numpy(raw), dim=1).numpy()  # the reference's float32 softmax
    empty = lengths == 0
    ids[empty], weights[empty] = 0, 0.0
    return ids, weights


def for_dataset(
    data: RecData, file_name: str, cache: Cache | None, progress: bool = True
) -> tuple[UserGraph, str]:
    """The user graph of a dataset: its own ``file_name`` when the folder has one (the reference's
    pickle, read safely; its fingerprint is added to ``data.sources``), else built from the
    training split into the cache (plain arrays; not stored when ``cache`` is None). Returns
    the graph and a line saying where it came from."""
    path = data.path / file_name
    if path.is_file():
        graph = load_reference(path, data.n_users)
        data.sources["user_graph"] = file_digest(path)
        return graph, f"user graph: {path}"

    def make() -> dict[str, np.ndarray]:
        return build(data.train.users, data.train.items, data.n_users, progress=progress).arrays()

    if cache is None:
        return UserGraph(**make()), "user graph: built from the training split (not cached)"
    params = {
        "train": content_hash(data.train.users, data.train.items),
        "n_users": data.n_users,
        "top": TOP_NEIGHBOURS,
    }
    arrays = cache.get_or_build("user-graph", params, make, check=check_arrays(data.n_users))
    where = (
        f"user graph: built from the training split into {cache.path('user-graph', params)} "
        f"({path.name} not in the dataset folder)"
    )
    return UserGraph(**arrays), where
