"""Graph building shared by the models (written once, never pasted into a model).

Nodes of the bipartite graph are users ``0..U-1`` followed by items ``U..U+I-1`` (N = U + I).
Every function returns plain tensors; values follow the reference's arithmetic (including its
float32/float64 steps) so graphs match it to the last bit where that is cheap.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

T = TypeVar("T")


def sparse(
    indices: torch.Tensor, values: torch.Tensor, size: int | tuple[int, int]
) -> torch.Tensor:
    """A coalesced sparse COO matrix [rows, cols] (a square one when ``size`` is an int)."""
    shape = (size, size) if isinstance(size, int) else size
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


def _row_pointers(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers [n + 1] of entries sorted by ``rows``."""
    counts = torch.bincount(rows, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]):
    with warnings.catch_warnings():
        # CSR products are stable in every torch we support; the "beta" notice would only
        # confuse users (silenced here, not for the whole process).
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def uses_embedding_bag(device: torch.device) -> bool:
    """Whether sparse products on ``device`` are ``embedding_bag`` sums (a CPU) rather than
    torch's CSR product (see ``RowEntries``)."""
    return device.type == "cpu"


class RowEntries:
    """A sparse matrix's pattern, its entries grouped by row (the CSR layout): row r holds
    the entries ``crow[r]:crow[r + 1]``, in columns ``col``. Values come with each product.

    ``product(values, x)`` is ``M @ x``: on a CPU an ``embedding_bag`` sum (each row a
    weighted sum of rows of x; 2-3x faster there than torch's CSR product, which zero-fills
    and copies its result), elsewhere torch's CSR product. Duplicated entries are summed one
    by one, as a weighted sum over a neighbour list is.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, shape: tuple[int, int]) -> None:
        self.crow, self.col, self.shape = crow, col, shape

    @classmethod
    def from_sorted(
        cls, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]
    ) -> RowEntries:
        """From entries already ordered by row."""
        return cls(_row_pointers(rows, shape[0]), cols, shape)

    def __len__(self) -> int:
        return len(self.col)

    def product(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``M(values) @ x``: values [nnz] (entry order), x [cols, d] -> [rows, d]."""
        if not uses_embedding_bag(x.device):
            return _csr(self.crow, self.col, values, self.shape) @ x
        if len(self.col) == 0:
            return x.new_zeros(self.shape[0], x.shape[1])
        return torch.nn.functional.embedding_bag(
            self.col,
            x.contiguous(),
            self.crow,
            mode="sum",
            per_sample_weights=values.to(x.dtype),
            include_last_offset=True,
        )


def _transposed(
    rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, RowEntries]:
    """The order of the entries in the transpose (by column, then row) and its pattern."""
    order = torch.argsort(cols * shape[0] + rows, stable=True)
    return order, RowEntries.from_sorted(cols[order], rows[order], (shape[1], shape[0]))


class _SparseMatmul(torch.autograd.Function):
    """``A @ X`` with the transpose's pattern and values kept for the backward pass.

    Its backward is this Function again on the transpose, so it can be differentiated twice.
    """

    @staticmethod
    def forward(ctx, op: SparseOp, transposed: bool, x: torch.Tensor) -> torch.Tensor:
        ctx.op, ctx.transposed = op, transposed
        return op.product(x, transposed)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, _SparseMatmul.apply(ctx.op, not ctx.transposed, grad)


class SparseOp:
    """A fixed sparse matrix used as a linear operator: ``op @ x`` for dense x [cols, d].

    Args:
        matrix: a sparse COO matrix [rows, cols] (coalesced here: duplicates summed).
        symmetric: the matrix equals its transpose (the bipartite graphs), so no copy is kept.

    ``from_entries`` builds one from entries in row order without merging duplicates.
    """

    def __init__(self, matrix: torch.Tensor, symmetric: bool = False) -> None:
        coo = matrix.coalesce()  # entries sorted by row, then column
        rows, cols = coo.indices()
        n_rows, n_cols = coo.shape
        self._init(rows, cols, coo.values(), (n_rows, n_cols), symmetric)
        self._coo: torch.Tensor | None = coo

    @classmethod
    def from_entries(
        cls, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
    ) -> SparseOp:
        """The matrix with ``values`` at (rows, cols), entries ordered by row; duplicated
        entries stay separate terms of each product (the sum of their contributions)."""
        op = cls.__new__(cls)
        op._init(rows, cols, values, shape, symmetric=False)
        op._coo = None
        return op

    def _init(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int],
        symmetric: bool,
    ) -> None:
        self.shape = shape
        self._rows, self._cols = rows, cols
        self.entries = RowEntries.from_sorted(rows, cols, shape)
        self.values = values
        if symmetric:
            self.entries_t, self.values_t = self.entries, values
        else:
            order, self.entries_t = _transposed(rows, cols, shape)
            self.values_t = values[order]

    def product(self, x: torch.Tensor, transposed: bool = False) -> torch.Tensor:
        """``A @ x`` (``A^T @ x`` when transposed), without autograd."""
        if transposed:
            return self.entries_t.product(self.values_t, x)
        return self.entries.product(self.values, x)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(self, False, x)

    @property
    def coo(self) -> torch.Tensor:
        """The matrix as a coalesced sparse COO tensor (duplicates summed)."""
        if self._coo is None:
            indices = torch.stack([self._rows, self._cols])
            self._coo = sparse(indices, self.values, self.shape)
        return self._coo

    @property
    def csr(self) -> torch.Tensor:
        """The matrix as a sparse CSR tensor (duplicates summed)."""
        with warnings.catch_warnings():
            # stable in every torch we support; the "beta" notice would only confuse users
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return self.coo.to_sparse_csr()

    def to_dense(self) -> torch.Tensor:
        return self.coo.to_dense()


def check_edge_arrays(
    n_rows: int, n_cols: int, max_entries: int | None = None
) -> Callable[[dict[str, np.ndarray]], str | None]:
    """A check for a stored sparse matrix (``indices`` [2, n], ``values`` [n]) of shape
    [n_rows, n_cols] with at most ``max_entries`` entries: None when sound, else what is wrong
    (so a damaged cache entry is rebuilt, never turned into a sparse tensor with out-of-range
    indices)."""

    def check(arrays: dict[str, np.ndarray]) -> str | None:
        indices, values = arrays.get("indices"), arrays.get("values")
        if indices is None or values is None:
            return f"arrays {sorted(arrays)}"
        if indices.ndim != 2 or indices.shape[0] != 2 or values.shape != (indices.shape[1],):
            return f"shapes {indices.shape} and {values.shape}"
        if values.shape[0] == 0 or (max_entries is not None and values.shape[0] > max_entries):
            return f"{values.shape[0]} entries (at most {max_entries} expected)"
        if not np.issubdtype(indices.dtype, np.integer):
            return f"indices of {indices.dtype}"
        if indices.size and (
            indices.min() < 0 or indices[0].max() >= n_rows or indices[1].max() >= n_cols
        ):
            return "indices out of range"
        if not np.isfinite(values).all():
            return "non-finite values"
        return None

    return check


def layer_mean(adj: SparseOp, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN's propagation ``mean_{l=0..L} A^l x`` (layer 0 included): x [N, d] -> [N, d]."""
    # A running sum, divided once: the same sums as stacking the layers and averaging them
    # (torch reduces the stacked layers in order), without the [N, L+1, d] copy and its
    # [N, L+1, d] gradient.
    total = x
    for _ in range(n_layers):
        x = adj @ x
        total = total + x
    return total / (n_layers + 1)


def bipartite_norm_adj(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, device: torch.device | str
) -> torch.Tensor:
    """Symmetric-normalised user-item adjacency ``D^-1/2 A D^-1/2`` as a sparse [N, N] tensor.

    ``A`` has a 1 at (u, U+i) and (U+i, u) for every *distinct* training pair (duplicates
    collapse); ``deg`` counts those pairs, plus 1e-7; there are no self-loops.
    """
    pairs = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    u, i = pairs // n_items, pairs % n_items + n_users
    n = n_users + n_items
    degree = np.bincount(np.concatenate([u, i]), minlength=n) + 1e-7
    inv_sqrt = np.power(degree, -0.5)  # float64, cast once at the end as the reference does
    values = (inv_sqrt[u] * inv_sqrt[i]).astype(np.float32)
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
    indices = torch.as_tensor(np.stack([rows, cols]), device=device)
    return sparse(indices, torch.as_tensor(np.concatenate([values, values]), device=device), n)


def _pair_counts(
    users: np.ndarray, items: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct training pairs (users, items) and how many rows each has (float64)."""
    keys = np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64)
    pairs, counts = np.unique(keys, return_counts=True)
    return pairs // n_items, pairs % n_items, counts.astype(np.float64)


def row_norm_adj_self_loops(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, device: torch.device | str
) -> torch.Tensor:
    """LATTICE's user-item graph ``P = D^-1 (A + Id)`` as a sparse [N, N] tensor (not symmetric).

    ``A[u, U+i] = A[U+i, u]`` = the number of training rows (u, i) (duplicates add), ``Id`` adds
    a self-loop to every node and ``D`` holds the row sums of ``A + Id``: a random-walk (row)
    normalisation, computed in float64 and stored as float32.
    """
    u, i, counts = _pair_counts(users, items, n_items)
    i = i + n_users
    n = n_users + n_items
    nodes = np.arange(n)
    rows = np.concatenate([u, i, nodes])
    cols = np.concatenate([i, u, nodes])
    weights = np.concatenate([counts, counts, np.ones(n)])
    inverse = 1.0 / np.bincount(rows, weights=weights, minlength=n)
    values = (inverse[rows] * weights).astype(np.float32)
    indices = torch.as_tensor(np.stack([rows, cols]), device=device)
    return sparse(indices, torch.as_tensor(values, device=device), n)


def count_norm_adj(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """MGCN's user-item graph ``Â = D^-1/2 A D^-1/2`` [N, N] and its user -> item block R [U, I]
    (``R[u, i] = Â[u, U+i]``), both sparse float32.

    ``A[u, U+i] = A[U+i, u] = c_ui``, the number of training rows (u, i) (duplicates add); no
    self-loops; D holds the row sums (count-weighted degrees) and an isolated node gets 0.
    Computed in float64. For duplicate-free data it equals ``bipartite_norm_adj`` up to rounding.
    """
    u, i, counts = _pair_counts(users, items, n_items)
    n = n_users + n_items
    degree = np.bincount(np.concatenate([u, i + n_users]), np.concatenate([counts, counts]), n)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(degree > 0, np.power(degree, -0.5), 0.0)
    values = (inv_sqrt[u] * counts * inv_sqrt[i + n_users]).astype(np.float32)
    block = torch.as_tensor(values, device=device)
    rows, cols = np.concatenate([u, i + n_users]), np.concatenate([i + n_users, u])
    full = sparse(
        torch.as_tensor(np.stack([rows, cols]), device=device), torch.cat([block, block]), n
    )
    user_item = sparse(torch.as_tensor(np.stack([u, i]), device=device), block, (n_users, n_items))
    return full, user_item


def edge_norm_values(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
) -> torch.Tensor:
    """``(deg_u + 1e-7)^-1/2 (deg_i + 1e-7)^-1/2`` per edge row, degrees counting rows (float32)."""
    user_degree = torch.bincount(users, minlength=n_users).float() + 1e-7
    item_degree = torch.bincount(items, minlength=n_items).float() + 1e-7
    return user_degree.pow(-0.5)[users] * item_degree.pow(-0.5)[items]


def pruned_adj(
    users: torch.Tensor,
    items: torch.Tensor,
    keep: torch.Tensor,
    n_users: int,
    n_items: int,
) -> SparseOp:
    """Symmetric sparse [N, N] adjacency over the kept edge rows, renormalised on them alone."""
    ku, ki = users[keep], items[keep]
    values = edge_norm_values(ku, ki, n_users, n_items)
    rows = torch.cat([ku, ki + n_users])
    cols = torch.cat([ki + n_users, ku])
    adj = sparse(torch.stack([rows, cols]), torch.cat([values, values]), n_users + n_items)
    return SparseOp(adj, symmetric=True)


def degree_sensitive_keep(weights: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of ``n_keep`` edges drawn without replacement with probability ~ ``weights``.

    ``weights`` are the edges' ``edge_norm_values``: edges between high-degree nodes are the
    likeliest to be pruned (FREEDOM's and LayerGCN's degree-sensitive dropout).
    """
    return torch.multinomial(weights, n_keep, replacement=False)


def uniform_keep(n_edges: int, n_keep: int, device: torch.device | str) -> torch.Tensor:
    """Indices of ``n_keep`` edges drawn uniformly without replacement."""
    return torch.randperm(n_edges, device=device)[:n_keep]


# --- item-item top-k graphs (FREEDOM, DRAGON, LATTICE, MGCN): never a dense I x I matrix -------


BLOCK_BYTES = 1 << 28
"""The default memory one block of a blocked similarity product may take (256 MiB)."""


def row_topk(
    left: torch.Tensor, right: torch.Tensor, k: int, block_bytes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``k`` entries of every row of ``left @ right.T``, computed in row blocks.

    Each block of rows of the [R, C] product (at most ``block_bytes`` of it; blocks of equal
    size) is made, reduced to its ``torch.topk`` along the row and dropped, so memory is
    O(block + R k), never R x C. Every row sees all C columns, so the columns and values are
    those of ``topk`` on the whole product (NaN ranked first, ties as torch breaks them), up
    to the BLAS kernel's rounding for the block's shape.

    Args:
        left: [R, D] row vectors (e.g. L2-normalised features, for cosine similarity).
        right: [C, D] column vectors (``left`` itself for a square similarity).
        k: entries kept per row (<= C).
        block_bytes: the most memory one block of the product may take (``BLOCK_BYTES``).

    Returns:
        ``(rows, cols, values)``, each [R * k], row-major: row r's k entries, largest first.
        No autograd: ``values`` are plain numbers (see ``gathered_dots`` for gradients).
    """
    n_rows, n_cols = left.shape[0], right.shape[0]
    most_rows = max(1, (block_bytes or BLOCK_BYTES) // (left.element_size() * max(n_cols, 1)))
    n_blocks = max(1, -(-n_rows // most_rows))
    # balanced blocks: no small last block (a matmul of a few rows may take another kernel)
    rows_per_block = max(1, -(-n_rows // n_blocks))
    starts = range(0, n_rows, rows_per_block)
    cols, values = [], []
    with torch.no_grad():
        for start in tqdm(
            starts, desc="top-k item graph", unit="block", leave=False, disable=len(starts) < 8
        ):
            block = left[start : start + rows_per_block] @ right.T
            top = torch.topk(block, k, dim=-1)
            cols.append(top.indices)
            values.append(top.values)
            del block, top
    rows = torch.arange(n_rows, device=left.device).repeat_interleave(k)
    return rows, torch.cat(cols).flatten(), torch.cat(values).flatten()


def l2_rows(features: torch.Tensor) -> torch.Tensor:
    """Every row divided by its L2 norm, with no epsilon (the reference's cosine: a row of zeros
    gives NaN): [n, D] -> [n, D]."""
    return features.div(torch.norm(features, p=2, dim=-1, keepdim=True))


def cosine_topk(
    features: torch.Tensor, k: int, block_bytes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each item's top-``k`` items by cosine similarity ``norm(F) norm(F)^T`` (usually itself
    among them), in row blocks: ``(rows, cols, values)`` [I * k] as ``row_topk``. No autograd."""
    with torch.no_grad():
        normed = l2_rows(features)
        return row_topk(normed, normed, k, block_bytes)


def gathered_dots(
    x: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, k: int
) -> torch.Tensor:
    """``values`` [I * k] (the top-k of ``x x^T`` from ``row_topk``, row-major) as a function of
    ``x`` [I, D]: the same numbers, with the gradient of the entries ``<x_i, x_j>`` at the kept
    (i, j) = (row, ``cols``), i.e. the gradient a dense ``topk(x x^T)`` passes back, from
    O(I k D) work. (The dots recomputed here differ from the blocked product's by rounding;
    adding their difference from themselves keeps the product's exact values.)"""
    n = x.shape[0]
    neighbours = x.index_select(0, cols).view(n, k, -1)
    dots = torch.bmm(neighbours, x.unsqueeze(2)).view(-1)
    return values + (dots - dots.detach())


def sym_norm_values(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int
) -> torch.Tensor:
    """The entries of ``D^-1/2 X D^-1/2`` for a sparse [n, n] matrix X given by its entries
    (rows, cols, values [nnz]; a repeated (i, j) counts as the sum of its entries), with D the
    **row** sums of X used at both ends (X need not be symmetric) and ``inf`` (a row summing to
    0) set to 0: the reference's normalised Laplacian of a kNN graph (LATTICE, MGCN).
    Differentiable in ``values``. Returns [nnz], ``d_i * x_ij * d_j`` in the reference's order."""
    row_sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    inv_sqrt = row_sums.pow(-0.5)
    inv_sqrt = torch.where(torch.isinf(inv_sqrt), torch.zeros_like(inv_sqrt), inv_sqrt)
    return inv_sqrt[rows] * values * inv_sqrt[cols]


def normalised_knn_graph(
    features: torch.Tensor, k: int, block_bytes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LATTICE's and MGCN's frozen item-item graph ``D^-1/2 kNN(cos F) D^-1/2``: each item's
    top-``k`` items by cosine similarity, keeping the similarity values, normalised with the
    row sums at both ends (``sym_norm_values``). Built in row blocks, never I x I.

    Args:
        features: [I, D] raw item features.
        k: neighbours per item.

    Returns:
        ``(rows, cols, values)``, each [I * k], row-major. No autograd.
    """
    rows, cols, values = cosine_topk(features, k, block_bytes)
    return rows, cols, sym_norm_values(rows, cols, values, features.shape[0])


_derived: dict[tuple[int, int, Hashable], Any] = {}


def derived_once(source: torch.Tensor, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, computed once per ``source`` tensor and ``key`` while ``source`` is alive
    and unchanged (the frozen graphs of a model's raw features, shared by the combinations of a
    grid that share the features); the entry goes when ``source`` is freed."""
    slot = (id(source), source._version, key)  # _version: bumped by every in-place change
    if slot not in _derived:
        _derived[slot] = build()
        weakref.finalize(source, _derived.pop, slot, None)
    return _derived[slot]  # type: ignore[no-any-return]


def frozen_knn_graph(
    features: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``normalised_knn_graph(features, k)``, built once per feature tensor and k while the
    tensor lives (``derived_once``): the combinations of a grid share their frozen graphs."""
    return derived_once(
        features, ("normalised-knn", int(k)), lambda: normalised_knn_graph(features, k)
    )


def knn_item_graph(
    features: torch.Tensor, k: int, chunk_bytes: int = 1 << 28
) -> tuple[torch.Tensor, torch.Tensor]:
    """FREEDOM's and DRAGON's item-item kNN graph: each item's top-``k`` items by cosine
    similarity (``cosine_topk``, in row blocks), every kept edge weighted alike.

    With ``k`` entries in every row the reference's normalisation
    ``(rowdeg_i + 1e-7)^-1/2 (rowdeg_j + 1e-7)^-1/2`` gives every edge ~1/k. Rows of zeros yield
    NaN similarities, ranked first by ``topk``, exactly as in the reference.

    Args:
        features: [I, D] raw item features.
        k: neighbours per item.
        chunk_bytes: the most memory one block of the similarity may take.

    Returns:
        ``(indices [2, I*k], values [I*k])`` of the sparse [I, I] graph.
    """
    rows, cols, _ = cosine_topk(features, k, chunk_bytes)
    n_items = features.shape[0]
    row_degree = torch.full((n_items,), float(k), device=features.device) + 1e-7
    inv_sqrt = row_degree.pow(-0.5)
    return torch.stack([rows, cols]), inv_sqrt[rows] * inv_sqrt[cols]


def mixed_modality_graph(
    v_feat: torch.Tensor | None,
    t_feat: torch.Tensor | None,
    k: int,
    image_weight: float,
    build: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] = knn_item_graph,
) -> torch.Tensor:
    """The frozen item-item graph of FREEDOM and DRAGON: ``w M_v + (1 - w) M_t`` (sparse [I, I]).

    With one modality it is that modality's kNN graph alone.
    """
    present = [f for f in (v_feat, t_feat) if f is not None]
    n_items = present[0].shape[0]
    graphs = {}
    for name, feat in (("v", v_feat), ("t", t_feat)):
        if feat is not None:
            graphs[name] = sparse(*build(feat, k), n_items)
    if len(graphs) == 1:
        return next(iter(graphs.values()))
    return sparse(
        torch.cat([graphs["v"].indices(), graphs["t"].indices()], 1),
        torch.cat(
            [image_weight * graphs["v"].values(), (1.0 - image_weight) * graphs["t"].values()]
        ),
        n_items,
    )


# --- edge lists (MMGCN, GRCN, DualGNN, DRAGON: PyG-style message passing, without PyG) -----------


def user_item_edges(
    users: torch.Tensor, items: torch.Tensor, n_users: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward edge list S [2, E] (user -> U + item, one column per training row, duplicates
    kept) and the bidirectional S2 = [S, S reversed] [2, 2E]. Messages flow source -> target."""
    forward = torch.stack([users, items + n_users])
    return forward, torch.cat([forward, forward.flip(0)], dim=1)


def mean_aggregation(edges: torch.Tensor, n_nodes: int) -> SparseOp:
    """``x_i = mean over edges (j -> i) of x_j`` as an operator (nodes without in-edges get 0).

    A duplicated edge counts twice, as in PyG's mean aggregation.
    """
    source, target = edges
    in_degree = torch.bincount(target, minlength=n_nodes).float()
    values = 1.0 / in_degree[target]
    return SparseOp(sparse(torch.stack([target, source]), values, n_nodes))


def symmetric_aggregation(edges: torch.Tensor, n_nodes: int) -> SparseOp:
    """``x_i = sum over edges (j -> i) of x_j / sqrt(deg(j) deg(i))`` with deg counting the edges
    a node is the source of (duplicates included): DualGNN's and DRAGON's GCN propagation."""
    source, target = edges
    inv_sqrt = torch.bincount(source, minlength=n_nodes).float().pow(-0.5)
    inv_sqrt[torch.isinf(inv_sqrt)] = 0.0
    values = inv_sqrt[source] * inv_sqrt[target]
    return SparseOp(sparse(torch.stack([target, source]), values, n_nodes))


def neighbour_sum(ids: torch.Tensor, weights: torch.Tensor, n_cols: int) -> SparseOp:
    """``out_r = sum_k weights[r, k] x[ids[r, k]]`` as an operator [R, n_cols], built directly
    from the table ids / weights [R, k] (its rows are in order by construction): DualGNN's and
    DRAGON's sampled user graph. An id repeated in a row (padding) is a separate term of the
    sum, as in the reference's weighted sum over the list."""
    n_rows, k = ids.shape
    rows = torch.arange(n_rows, device=ids.device).repeat_interleave(k)
    return SparseOp.from_entries(rows, ids.reshape(-1), weights.reshape(-1), (n_rows, n_cols))


def segment_softmax(scores: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of edge ``scores`` [E] within each group (e.g. all edges into one node), with the
    1e-16 guard of PyG's ``softmax`` in the denominator."""
    group_max = torch.full((n_groups,), float("-inf"), device=scores.device, dtype=scores.dtype)
    group_max = group_max.scatter_reduce(
        0, groups, scores.detach(), reduce="amax", include_self=True
    )
    exp = (scores - group_max[groups]).exp()
    total = torch.zeros(n_groups, device=scores.device, dtype=scores.dtype).index_add(
        0, groups, exp
    )
    return exp / (total[groups] + 1e-16)


class EdgeList:
    """A fixed directed edge list (j -> i) with per-edge weights that change every call (GRCN's
    attention): sums and dot products over the edges become sparse products.

    The edges are kept one entry per edge (duplicates too, so each is weighted and summed on
    its own, as PyG's message passing does), ordered by target then source: per-edge tensors
    of this class (``target``, ``source``, weights, scores) are in that *entry order*. The
    matrix ``M(w)`` [N, N] has ``w_k`` at (target_k, source_k); its transpose is kept as a
    second layout of the same entries, so both ``M(w) @ x`` and ``M(w)^T @ g`` are sparse
    products (5-20x faster on CPU than gathering [E, d] messages and ``index_add``-ing them).

    Args:
        source, target: int64 [E] edge endpoints (messages flow source -> target).
        n_nodes: N.
    """

    def __init__(self, source: torch.Tensor, target: torch.Tensor, n_nodes: int) -> None:
        self.n_nodes = n_nodes
        order = torch.argsort(target * n_nodes + source, stable=True)
        self.source, self.target = source[order], target[order]
        shape = (n_nodes, n_nodes)
        self.entries = RowEntries.from_sorted(self.target, self.source, shape)
        self.t_order, self.entries_t = _transposed(self.target, self.source, shape)
        # torch's sampled product needs a pattern without repeated entries; a sum of graphs
        # (LATTICE's) repeats them, and is then served by gathered rows instead.
        key = self.target * n_nodes + self.source
        self.repeated = bool(len(key) > 1 and (key[1:] == key[:-1]).any())

    @classmethod
    def from_edges(cls, edges: torch.Tensor, n_nodes: int) -> EdgeList:
        """From an edge list [2, E] (row 0: sources, row 1: targets)."""
        return cls(edges[0], edges[1], n_nodes)

    def __len__(self) -> int:
        return len(self.source)

    def product(self, values: torch.Tensor, x: torch.Tensor, transposed: bool = False):
        """``M(values) @ x`` (``M(values)^T @ x`` when transposed); values [E] in entry order,
        no autograd."""
        if transposed:
            return self.entries_t.product(values[self.t_order], x)
        return self.entries.product(values, x)

    def sampled_dots(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``<a[target_k], b[source_k]>`` for every entry k: [E] (an SDDMM, no autograd)."""
        if self.repeated:
            return (a.index_select(0, self.target) * b.index_select(0, self.source)).sum(-1)
        shape = (self.n_nodes, self.n_nodes)
        pattern = _csr(self.entries.crow, self.source, a.new_zeros(len(self)), shape)
        return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()


# The two products below are each other's backward. Their backward passes call these autograd
# Functions again (not raw sparse kernels), so second derivatives (Hessian-vector products by
# double backward, mgrec.analysis) work through them.


class _EdgeProduct(torch.autograd.Function):
    """out = M(w) @ x, or M(w)^T @ x when ``transposed``.

    Backward: dx = M(w)^T @ g (the other orientation); dw_k = <g[target_k], x[source_k]>
    (<g[source_k], x[target_k]> when transposed).
    """

    @staticmethod
    def forward(
        ctx, edges: EdgeList, transposed: bool, x: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        ctx.edges, ctx.transposed = edges, transposed
        ctx.save_for_backward(x, weights)
        return edges.product(weights, x, transposed)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weights = ctx.saved_tensors
        edges, transposed = ctx.edges, ctx.transposed
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[2]:
            grad_x = _EdgeProduct.apply(edges, not transposed, grad, weights)
        if ctx.needs_input_grad[3]:
            grad_w = _EdgeDots.apply(edges, transposed, grad, x)
        return None, None, grad_x, grad_w


class _EdgeDots(torch.autograd.Function):
    """s_k = <a[target_k], b[source_k]>, or <a[source_k], b[target_k]> when ``transposed``.

    Backward: da = M(ds) @ b (M(ds)^T @ b when transposed), db = the other orientation @ a.
    """

    @staticmethod
    def forward(
        ctx, edges: EdgeList, transposed: bool, a: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        ctx.edges, ctx.transposed = edges, transposed
        ctx.save_for_backward(a, b)
        return edges.sampled_dots(b, a) if transposed else edges.sampled_dots(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        edges, transposed = ctx.edges, ctx.transposed
        grad = grad.contiguous()
        grad_a = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_a = _EdgeProduct.apply(edges, transposed, b, grad)
        if ctx.needs_input_grad[3]:
            grad_b = _EdgeProduct.apply(edges, not transposed, a, grad)
        return None, None, grad_a, grad_b


def edge_dots(edges: EdgeList, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a_i, b_j>`` for every edge (j -> i), in ``edges``' entry order: a, b [N, d] -> [E]."""
    return _EdgeDots.apply(edges, False, a.contiguous(), b.contiguous())


def weighted_sum(edges: EdgeList, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out_i = sum over edges k = (j -> i) of weights_k * x_j``: x [N, d], weights [E] in
    ``edges``' entry order -> [N, d]. Differentiable in x and in the weights."""
    return _EdgeProduct.apply(edges, False, x.contiguous(), weights.reshape(-1).contiguous())
