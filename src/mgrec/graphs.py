"""Graph building shared by the models (written once, never pasted into a model).

Nodes of the bipartite graph are users ``0..U-1`` followed by items ``U..U+I-1`` (N = U + I).
Every function returns plain tensors; values follow the reference's arithmetic (including its
float32/float64 steps) so graphs match it to the last bit where that is cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm


def sparse(
    indices: torch.Tensor, values: torch.Tensor, size: int | tuple[int, int]
) -> torch.Tensor:
    """A coalesced sparse COO matrix [rows, cols] (a square one when ``size`` is an int)."""
    shape = (size, size) if isinstance(size, int) else size
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


# CSR products are stable in every torch we support; the "beta" notice would only confuse users.
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)


class _SparseMatmul(torch.autograd.Function):
    """``A @ X`` with a precomputed ``A^T`` for the backward pass (CSR both ways).

    torch's own backward for a CSR product transposes the matrix on every call; the graphs here
    are fixed for many products, so the transpose is built once.
    """

    @staticmethod
    def forward(
        ctx, matrix: torch.Tensor, transposed: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.transposed = transposed
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.transposed @ grad


class SparseOp:
    """A fixed sparse matrix used as a linear operator: ``op @ x`` for dense x [cols, d].

    Args:
        matrix: a sparse COO matrix [rows, cols].
        symmetric: the matrix equals its transpose (the bipartite graphs), so no copy is kept.
    """

    def __init__(self, matrix: torch.Tensor, symmetric: bool = False) -> None:
        self.coo = matrix.coalesce()
        self.csr = self.coo.to_sparse_csr()
        self.csr_t = self.csr if symmetric else self.coo.t().coalesce().to_sparse_csr()
        self.shape = tuple(self.coo.shape)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(self.csr, self.csr_t, x)

    def to_dense(self) -> torch.Tensor:
        return self.coo.to_dense()


def layer_mean(adj: SparseOp, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN's propagation ``mean_{l=0..L} A^l x`` (layer 0 included): x [N, d] -> [N, d]."""
    layers = [x]
    for _ in range(n_layers):
        x = adj @ x
        layers.append(x)
    return torch.stack(layers, dim=1).mean(dim=1)


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


def knn_item_graph(
    features: torch.Tensor, k: int, chunk_bytes: int = 1 << 28
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item-item kNN graph by cosine similarity, built in row chunks (never a dense I x I matrix).

    Every row keeps its top-``k`` columns (usually including itself); with ``k`` entries in
    every row the reference's normalisation ``(rowdeg_i + 1e-7)^-1/2 (rowdeg_j + 1e-7)^-1/2``
    gives every edge ~1/k. Rows of zeros yield NaN similarities, ranked first by ``topk``,
    exactly as in the reference.

    Args:
        features: [I, D] raw item features.
        k: neighbours per item.

    Returns:
        ``(indices [2, I*k], values [I*k])`` of the sparse [I, I] graph.
    """
    normed = features.div(torch.norm(features, p=2, dim=-1, keepdim=True))
    n_items = normed.shape[0]
    rows_per_chunk = max(1, chunk_bytes // (4 * max(n_items, 1)))
    neighbours = []
    starts = range(0, n_items, rows_per_chunk)
    for start in tqdm(
        starts, desc="kNN item graph", unit="chunk", leave=False, disable=len(starts) < 8
    ):
        sim = normed[start : start + rows_per_chunk] @ normed.T
        neighbours.append(torch.topk(sim, k, dim=-1).indices)
    cols = torch.cat(neighbours).flatten()
    rows = torch.arange(n_items, device=features.device).repeat_interleave(k)
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


def weighted_sum(
    x: torch.Tensor, edges: torch.Tensor, weights: torch.Tensor, n_nodes: int
) -> torch.Tensor:
    """``out_i = sum over edges e = (j -> i) of weights_e * x_j``; x [N, d], weights [E] or [E, 1]."""
    source, target = edges
    messages = x[source] * weights.reshape(-1, 1)
    return torch.zeros(n_nodes, x.shape[1], device=x.device, dtype=x.dtype).index_add(
        0, target, messages
    )
