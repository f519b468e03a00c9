"""The floor: the arithmetic a training epoch cannot avoid, and how long this machine needs for it.

Per model and workload, ``batch_ops`` lists the dense and sparse products one forward + backward
pass over one training batch requires, counted from the shapes (a script helper for
``benchmarks/run.py``, not part of mgrec). ``epoch_ops`` sums them over an epoch's batches (an MG
epoch repeats the pass on every ``beta``-th batch); ``measure_rates`` times each product's shape
on the device with the current thread count, and ``floor`` turns FLOPs into seconds.

Counting rules (the *minimum* the equations need, not what any implementation does):

- dense ``[m, k] @ [k, n]``: 2mkn FLOPs. Backward: 2mkn for the gradient of each operand that
  needs one (both: 2x the forward; one: 1x). Frozen inputs (raw features held as buffers, the
  frozen random tensors of MMGCN) get no gradient; trainable feature tables (BM3, FREEDOM: the
  reference trains them) do, for the rows the batch reads. A layer's input gradient is counted
  only for the rows that lead back to a parameter (``grad_rows``).
- sparse ``A @ X`` over a graph with nnz stored entries, X of width d: 2 nnz d; its backward
  ``A^T @ G`` the same again when X needs a gradient. Per-edge dot products (GRCN's attention,
  the gradient of per-edge weights) are counted as 2 nnz d as well and timed as such a product.
- rows are computed only where the loss reads them: only the batch's distinct items have their
  features projected in VBPR, BM3 and FREEDOM; fusion and predictor layers run on the batch's
  rows. Graph propagations run over the whole graph (a batch's receptive field at two or more
  hops covers most of it; restricting to it is not counted).
- not counted: element-wise work (activations, norms, cosine re-weighting, dropout), gathers,
  row-wise dot products of the loss, the optimiser update, negative sampling, per-epoch graph
  pruning / neighbour sampling, and re-associations that would precompute products of frozen
  operands once (e.g. ``A @ features`` before the projection).

What is counted per model (B batch rows, n the batch's distinct items, N = U + I, d the model's
width; every product forward and backward unless marked "weight grad only"):

- VBPR: the item projection ``X[n] W^T`` [n, Dt+Dv] x [Dt+Dv, d] (features frozen: weight grad
  only). Nothing else is a product.
- MMGCN: per modality, the image MLP [I, Dv] x [Dv, 256] (weight grad only); per layer (3):
  ``X W`` [N, w] x [w, w], the mean aggregation (two-way graph, coalesced; width w),
  ``Lin(X)`` [N, w] x [w, d] and the gate [N, w + d] x [w + d, d]; layer 1's input (the text branch: raw Dt-wide
  features, frozen) needs no gradient (image: only its item rows).
- GRCN: per modality, the MLP [I, Dm] x [Dm, C] (weight grad only), the per-edge attention over
  2E edges (width C; gradient through both endpoints) and the alpha-weighted sum (gradient to x
  and to alpha); two weighted id propagations (2E edges, width d; gradient to x and to weights).
- DualGNN: per modality, MLP [I, Dm] x [Dm, 256] (weight grad only) and MLP_1 [I, 256] x [256,
  64]; two propagations over the user-item graph at width 128 (both branches); the user graph
  (top-40 per user) at width 64.
- SLMRec: the image and text projections of all items (weight grad only), ``layer_num``
  propagations at width 3d, the user fusion layer on the batch rows and the item one on the
  batch's n distinct positives, the [B, d] x [d, n] logits, and the FAC heads and [n, n] logits
  (a repeated positive is one logit column, counted).
- BM3: ``n_layers`` propagations at width d, the text and image projections of the batch's
  distinct items (trainable tables: input and weight grads), the predictor on the batch's user
  and item rows and on the projected feature rows.
- FREEDOM: ``n_mm_layers`` products with the frozen kNN item graph and ``n_ui_layers`` with the
  pruned user-item graph (width d); with reg_weight > 0 also the text and image projections of
  the batch's distinct items (trainable tables). With reg_weight == 0 the feature terms are
  multiplied by 0 and not needed.
- DRAGON: as DualGNN's branches and propagations, plus ``n_mm_layers`` products with the kNN
  item graph at width 128 and the user graph at width 128. Its feature tables and ``*_trs``
  layers never reach the loss: not counted.
- LayerGCN: ``n_layers`` propagations over the (pruned) user-item graph at width d.
- LATTICE: ``len(weight_size)`` propagations over the user-item graph with self-loops (width
  d) and ``n_layers`` products with the item graph S (learned + frozen kNN entries, 4k per row
  with both modalities; width d); once per epoch (``PER_EPOCH``: S is rebuilt, with its
  gradient, on the epoch's first batch only, not on MG's mirror pass) the projections of all
  items (trainable tables: input and weight grads), their [I, f] x [f, I] cosine for the
  learned top-k, the kept entries' dot products (gradient to both ends) and the gradient of S's
  values (an SDDMM over S at width d).
- MGCN: the image and text projections of all items (trainable tables: input and weight
  grads) and their gates, ``n_ui_layers`` propagations over the user-item graph, per modality
  ``n_layers`` products with its frozen kNN item graph and one with R (users x items), the
  attention query (d -> d -> 1) on both [N, d] views, the two preference gates on [N, d], and
  with cl_loss > 0 the two in-batch InfoNCE logits, [n, d] x [d, n] over the batch's distinct
  users and distinct positives (a repeated row is one row and column, counted).
- MVGAE: per expert (image, text, collaborative) the MLP of all items to 128 (inputs frozen:
  weight grad only), ``X W`` of every layer's convolutions (layer 1: input gradient for the
  item rows only, the user preferences being frozen), one mean aggregation per layer for the
  three experts' columns together (3d wide, then 6d for the mu and log-variance convolutions),
  the gates g_1, g_4, g_5 and linear_4, linear_5 on [N, d]; the four reconstruction terms'
  hardest-negative searches, [distinct users, d] x [d, distinct negatives] each, forward only.
- SELFCFED_LGN: ``n_layers`` propagations over the edge-dropped graph (the kept entries at
  the expected rate: the drop rate is uniform in [0, 1), half the entries on average) and the
  predictor on the batch's user and item rows. No negatives, no features.
- ItemKNNCBF has no floor: it trains nothing (its scores are built from the data at
  construction), so it has no epoch; the benchmark times its build and its ranking only.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

GEMM, GEMM_TN, SPMM = "gemm", "gemm_tn", "spmm"
IMAGE_LATENT = 256  # MMGCN's image MLP width (hard-coded in the reference)
BRANCH_LATENT = 64  # DualGNN/DRAGON's branch width (hard-coded in the reference)
NEIGHBOURS = 40  # DualGNN/DRAGON's sampled user-graph neighbours per user
MVGAE_LATENT = 128  # MVGAE's expert input width (hard-coded in the reference)


@dataclass(frozen=True)
class Op:
    """One product.

    kind ``gemm``: ``[m, k] @ [k, n]`` (dims (m, k, n)); ``gemm_tn``: the same with the first
    operand a transposed view of a [k, m] tensor (weight gradients ``x^T g``); ``spmm``: a CSR
    [rows, cols] matrix with nnz entries times a dense [cols, d] (dims (rows, cols, nnz, d)).
    ``role`` is "fwd", "bwd_input" or "bwd_weight" (the backward of a sparse product is
    "bwd_input").
    """

    label: str
    kind: str
    dims: tuple[int, ...]
    role: str = "fwd"

    @property
    def flops(self) -> int:
        if self.kind == SPMM:
            return 2 * self.dims[2] * self.dims[3]
        m, k, n = self.dims
        return 2 * m * k * n


@dataclass
class Workload:
    """The shapes an epoch is made of.

    Attributes:
        n_users, n_items: U, I.
        train_rows: E (duplicates kept).
        batch_rows: rows of every batch of an epoch, in order.
        distinct_items: distinct item ids each batch reads (positives and negatives; positives
            only when the model samples none), one per batch; None: estimated as
            min(rows * item rows per row, I).
        distinct_positives: distinct positive items of each batch (SLMRec's losses need one
            logit column per distinct item, counted); None: the batch's rows.
        distinct_users, distinct_negatives: distinct users / negative items of each batch
            (MVGAE's hardest-negative search runs on their product); None: the batch's rows.
        pairs: distinct (user, item) training pairs (default: E).
        dv, dt: image / text feature widths (None: the modality is absent).
        graph_nnz: stored entries of the model's graphs, by the model's attribute name
            (norm_adj, masked_adj, mm_adj, mean_agg, propagation, neighbours); missing ones are
            estimated from the shapes.
    """

    n_users: int
    n_items: int
    train_rows: int
    batch_rows: Sequence[int]
    distinct_items: Sequence[int] | None = None
    distinct_positives: Sequence[int] | None = None
    distinct_users: Sequence[int] | None = None
    distinct_negatives: Sequence[int] | None = None
    pairs: int | None = None
    dv: int | None = 4096
    dt: int | None = 384
    graph_nnz: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def uniform(
        cls, n_users: int, n_items: int, train_rows: int, batch_size: int, **extra: Any
    ) -> Workload:
        """A workload whose batches are ``batch_size`` rows (the last one shorter)."""
        full, rest = divmod(train_rows, batch_size)
        rows = [batch_size] * full + ([rest] if rest else [])
        return cls(n_users, n_items, train_rows, rows, **extra)

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    @property
    def n_pairs(self) -> int:
        return self.train_rows if self.pairs is None else self.pairs

    def distinct(self, batch: int, per_row: int = 2) -> int:
        if self.distinct_items is not None:
            return int(self.distinct_items[batch])
        return min(per_row * int(self.batch_rows[batch]), self.n_items)

    def positives(self, batch: int) -> int:
        if self.distinct_positives is not None:
            return int(self.distinct_positives[batch])
        return min(int(self.batch_rows[batch]), self.n_items)

    def users(self, batch: int) -> int:
        if self.distinct_users is not None:
            return int(self.distinct_users[batch])
        return min(int(self.batch_rows[batch]), self.n_users)

    def negatives(self, batch: int) -> int:
        if self.distinct_negatives is not None:
            return int(self.distinct_negatives[batch])
        return min(int(self.batch_rows[batch]), self.n_items)

    def nnz(self, name: str, default: int) -> int:
        return int(self.graph_nnz.get(name, default))


# --- building blocks: a product and the backward products it needs ---------------------------


def linear(label: str, rows: int, fan_in: int, fan_out: int, grad_rows: int) -> list[Op]:
    """``x [rows, fan_in] @ W^T``: forward, the input gradient for ``grad_rows`` rows (0: the
    input is frozen) and the weight gradient ``x^T g``."""
    if rows <= 0:
        return []
    ops = [Op(label, GEMM, (rows, fan_in, fan_out))]
    if grad_rows > 0:
        ops.append(Op(label, GEMM, (grad_rows, fan_out, fan_in), "bwd_input"))
    ops.append(Op(label, GEMM_TN, (fan_in, rows, fan_out), "bwd_weight"))
    return ops


def matmul(
    label: str, m: int, k: int, n: int, grad_rows: int | None = None, grad_b: bool = True
) -> list[Op]:
    """``a [m, k] @ b [k, n]`` and the gradients of the operands that need one: a's for
    ``grad_rows`` of its rows (default all m; 0: none), b's when ``grad_b``."""
    grad_rows = m if grad_rows is None else grad_rows
    ops = [Op(label, GEMM, (m, k, n))]
    if grad_rows > 0:
        ops.append(Op(label, GEMM, (grad_rows, n, k), "bwd_input"))
    if grad_b:
        ops.append(Op(label, GEMM_TN, (k, m, n), "bwd_weight"))
    return ops


def spmm(label: str, rows: int, cols: int, nnz: int, d: int, backward: int = 1) -> list[Op]:
    """``A [rows, cols] @ x [cols, d]`` and ``backward`` products of the transpose's shape
    (1: the gradient of x; 2: also of A's values, an SDDMM of the same cost; 0: none)."""
    return [Op(label, SPMM, (rows, cols, nnz, d))] + [
        Op(label, SPMM, (cols, rows, nnz, d), "bwd_input") for _ in range(backward)
    ]


def _cfg(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None else value


# --- per model: the products of one forward + backward pass over batch b ---------------------


def _vbpr(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    width = (w.dt or 0) + (w.dv or 0)
    return linear("item projection", w.distinct(b), width, int(_cfg(c, "embedding_size", 64)), 0)


def _layergcn(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, n_layers = int(_cfg(c, "embedding_size", 64)), int(_cfg(c, "n_layers", 4))
    dropout = float(_cfg(c, "dropout", 0.0))
    default = 2 * w.n_pairs if dropout <= 0 else 2 * int(w.train_rows * (1 - dropout))
    nnz = w.nnz("masked_adj", default)
    ops: list[Op] = []
    for _ in range(n_layers):
        ops += spmm("A @ X", w.n_nodes, w.n_nodes, nnz, d)
    return ops


def _freedom(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d = int(_cfg(c, "embedding_size", 64))
    dropout = float(_cfg(c, "dropout", 0.8))
    k = int(_cfg(c, "knn_k", 10))
    default = 2 * w.n_pairs if dropout <= 0 else 2 * int(w.train_rows * (1 - dropout))
    ops: list[Op] = []
    mm_nnz = w.nnz("mm_adj", k * w.n_items * (2 if w.dv and w.dt else 1))
    for _ in range(int(_cfg(c, "n_mm_layers", 1))):
        ops += spmm("M @ h (kNN item graph)", w.n_items, w.n_items, mm_nnz, d)
    for _ in range(int(_cfg(c, "n_ui_layers", 2))):
        ops += spmm("A @ X (pruned graph)", w.n_nodes, w.n_nodes, w.nnz("masked_adj", default), d)
    if float(_cfg(c, "reg_weight", 0.0)) != 0.0:
        n = w.distinct(b)
        if w.dt:
            ops += linear("text projection (batch items)", n, w.dt, d, n)
        if w.dv:
            ops += linear("image projection (batch items)", n, w.dv, d, n)
    return ops


def _bm3(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d = int(_cfg(c, "embedding_size", 64))
    rows, n = int(w.batch_rows[b]), w.distinct(b, per_row=1)
    ops: list[Op] = []
    for _ in range(int(_cfg(c, "n_layers", 1))):
        ops += spmm("A @ X", w.n_nodes, w.n_nodes, w.nnz("norm_adj", 2 * w.n_pairs), d)
    present = [(m, width) for m, width in (("text", w.dt), ("image", w.dv)) if width]
    for modality, width in present:
        ops += linear(f"{modality} projection (batch items)", n, width, d, n)
    ops += linear("predictor (batch rows)", rows, d, d, rows) * 2  # users and items
    for _ in present:
        ops += linear("predictor (feature rows)", n, d, d, n)
    return ops


def _slmrec(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, rows = int(_cfg(c, "recdim", 64)), int(w.batch_rows[b])
    fused = 3 * d if _cfg(c, "mm_fusion_mode", "concat") == "concat" else d
    ops: list[Op] = []
    for modality, width in (("image", w.dv), ("text", w.dt)):
        if width:  # features frozen (normalised buffers): weight gradient only
            ops += linear(f"{modality} projection (all items)", w.n_items, width, d, 0)
    nnz = w.nnz("norm_adj", 2 * w.n_pairs)
    for _ in range(int(_cfg(c, "layer_num", 3))):
        ops += spmm("A @ X (3d wide)", w.n_nodes, w.n_nodes, nnz, 3 * d)
    # The losses read one logit column per distinct positive item (a repeated item is the same
    # column, counted), so n = distinct positives, not B, sets their size.
    n = w.positives(b)
    ops += linear("user fusion layer (batch rows)", rows, fused, d, rows)
    ops += linear("item fusion layer (distinct positives)", n, fused, d, n)
    ops += matmul("in-batch logits", rows, d, n)
    ops += linear("FAC heads d -> d", n, d, d, n) * 3
    ops += linear("FAC heads d -> d/2", n, d, d // 2, n) * 2
    ops += matmul("FAC logits (image)", n, d, n)
    ops += matmul("FAC logits (text)", n, d // 2, n)
    return ops


def _mmgcn(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, n = int(_cfg(c, "embedding_size", 64)), w.n_nodes
    nnz = w.nnz("mean_agg", 2 * w.n_pairs)
    ops: list[Op] = []
    branches = []
    if w.dv:
        ops += linear("image MLP", w.n_items, w.dv, IMAGE_LATENT, 0)
        branches.append(("image", IMAGE_LATENT, w.n_items))  # item rows lead back to the MLP
    if w.dt:
        branches.append(("text", w.dt, 0))  # raw frozen features and frozen preferences
    for modality, width, first_grad_rows in branches:
        for layer in (1, 2, 3):
            in_dim, grad_rows = (width, first_grad_rows) if layer == 1 else (d, n)
            tag = f"{modality} layer {layer}" if layer == 1 else "layers 2-3"
            ops += matmul(f"X W ({tag})", n, in_dim, in_dim, grad_rows)
            ops += spmm(f"mean aggregation ({tag})", n, n, nnz, in_dim)
            ops += linear(f"Lin(X) ({tag})", n, in_dim, d, grad_rows)
            ops += linear(f"gate ({tag})", n, in_dim + d, d, n)
    return ops


def _grcn(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, dim_c = int(_cfg(c, "embedding_size", 64)), int(_cfg(c, "latent_embedding", 64))
    n = w.n_nodes
    edges = 2 * w.train_rows  # S2: every training row in both directions, duplicates kept
    ops: list[Op] = []
    for modality, width in (("image", w.dv), ("text", w.dt)):
        if width:
            ops += linear(f"{modality} MLP", w.n_items, width, dim_c, 0)
            ops += spmm("attention <x_i, x_j> per edge", n, n, edges, dim_c, backward=2)
            ops += spmm("alpha-weighted sum", n, n, edges, dim_c, backward=2)
    for _ in range(2):
        ops += spmm("id propagation", n, n, edges, d, backward=2)
    return ops


def _branches(w: Workload) -> list[Op]:
    ops: list[Op] = []
    for modality, width in (("image", w.dv), ("text", w.dt)):
        if width:
            ops += linear(f"{modality} MLP", w.n_items, width, 4 * BRANCH_LATENT, 0)
            ops += linear("MLP_1", w.n_items, 4 * BRANCH_LATENT, BRANCH_LATENT, w.n_items)
    nnz = w.nnz("propagation", 2 * w.n_pairs)
    for _ in range(2):
        ops += spmm("P @ X (both branches)", w.n_nodes, w.n_nodes, nnz, 2 * BRANCH_LATENT)
    return ops


def _dualgnn(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    nnz = w.nnz("neighbours", NEIGHBOURS * w.n_users)
    return _branches(w) + spmm("user graph", w.n_users, w.n_users, nnz, BRANCH_LATENT)


def _dragon(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    width = 2 * BRANCH_LATENT
    k = int(_cfg(c, "knn_k", 10))
    ops = _branches(w)
    mm_nnz = w.nnz("mm_adj", 2 * k * w.n_items)
    for _ in range(int(_cfg(c, "n_mm_layers", 1))):
        ops += spmm("M @ items (kNN item graph)", w.n_items, w.n_items, mm_nnz, width)
    nnz = w.nnz("neighbours", NEIGHBOURS * w.n_users)
    return ops + spmm("user graph", w.n_users, w.n_users, nnz, width)


def _lattice_item_graph_nnz(w: Workload, k: int) -> int:
    """Entries of LATTICE's S: k per row from each modality's learned and frozen graphs."""
    return 2 * k * w.n_items * sum(1 for width in (w.dv, w.dt) if width)


def _lattice(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, k = int(_cfg(c, "embedding_size", 64)), int(_cfg(c, "knn_k", 10))
    n, s_nnz = w.n_nodes, _lattice_item_graph_nnz(w, k)
    ops: list[Op] = []
    for _ in range(len(_cfg(c, "weight_size", [64, 64]))):  # P = D^-1 (A + Id)
        ops += spmm("P @ X", n, n, w.nnz("norm_adj", 2 * w.n_pairs + n), d)
    for _ in range(int(_cfg(c, "n_layers", 1))):
        ops += spmm("S @ h (item graph)", w.n_items, w.n_items, s_nnz, d)
    return ops


def _lattice_rebuild(w: Workload, c: Mapping[str, Any]) -> list[Op]:
    """The learned graph's products, made once per epoch (on its first batch)."""
    d, f = int(_cfg(c, "embedding_size", 64)), int(_cfg(c, "feat_embed_dim", 64))
    k, n_items = int(_cfg(c, "knn_k", 10)), w.n_items
    ops: list[Op] = []
    for modality, width in (("image", w.dv), ("text", w.dt)):
        if width:  # trainable feature tables: input and weight grads, every item
            ops += linear(f"{modality} projection (all items)", n_items, width, f, n_items)
            ops.append(Op("learned kNN: cosine of all item pairs", GEMM, (n_items, f, n_items)))
            ops += spmm("learned kNN: kept entries' dots", n_items, n_items, k * n_items, f, 2)
    if int(_cfg(c, "n_layers", 1)) > 0:  # S's values get a gradient from its first product
        dims = (n_items, n_items, _lattice_item_graph_nnz(w, k), d)
        ops.append(Op("S @ h: gradient of S's values", SPMM, dims, "bwd_input"))
    return ops


def _mgcn(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, n_items, n = int(_cfg(c, "embedding_size", 64)), w.n_items, w.n_nodes
    ops: list[Op] = []
    for modality, width in (("image", w.dv), ("text", w.dt)):
        if width:  # trainable feature tables: input and weight grads, every item
            ops += linear(f"{modality} projection (all items)", n_items, width, d, n_items)
            ops += linear("feature gates (all items)", n_items, d, d, n_items)
    for _ in range(int(_cfg(c, "n_ui_layers", 2))):
        ops += spmm("A @ X", n, n, w.nnz("norm_adj", 2 * w.n_pairs), d)
    k = int(_cfg(c, "knn_k", 10))
    for modality, width in (("image", w.dv), ("text", w.dt)):
        if width:
            graph_nnz = w.nnz(f"{modality}_graph", k * n_items)
            for _ in range(int(_cfg(c, "n_layers", 1))):
                ops += spmm("G_m @ x (kNN item graph)", n_items, n_items, graph_nnz, d)
            ops += spmm("R @ items", w.n_users, n_items, w.nnz("user_item", w.n_pairs), d)
            ops += linear("attention query d -> d", n, d, d, n)
            ops += linear("attention query d -> 1", n, d, 1, n)
    ops += linear("preference gates", n, d, d, n) * 2
    if float(_cfg(c, "cl_loss", 0.001)) != 0.0:  # one logit row and column per distinct id
        ops += matmul("InfoNCE logits (users)", w.users(b), d, w.users(b))
        ops += matmul("InfoNCE logits (items)", w.positives(b), d, w.positives(b))
    return ops


def _mvgae(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, n, n_items = int(_cfg(c, "embedding_size", 64)), w.n_nodes, w.n_items
    experts = [(m, width) for m, width in (("image", w.dv), ("text", w.dt)) if width]
    experts.append(("collaborative", d))
    e = len(experts)
    nnz = w.nnz("mean_agg", 2 * w.train_rows + n)  # S2 both ways and a self-loop per node
    ops: list[Op] = []
    for modality, width in experts:  # frozen inputs: weight grad only
        ops += linear(f"{modality} MLP", n_items, width, MVGAE_LATENT, 0)
    for layer in range(1, min(int(_cfg(c, "n_layers", 1)), 2) + 1):
        in_dim, grad_rows = (MVGAE_LATENT, n_items) if layer == 1 else (d, n)
        ops += matmul(f"conv X W (layer {layer})", n, in_dim, d, grad_rows) * e
        ops += spmm(f"mean aggregation (layer {layer})", n, n, nnz, e * d)
        ops += linear(f"g_layer{layer}", n, d, d, n) * e
    ops += matmul("conv X W (mu, log-variance)", n, d, d) * (2 * e)
    ops += spmm("mean aggregation (mu, log-variance)", n, n, nnz, 2 * e * d)
    ops += linear("g_layer4/5, linear_layer4/5", n, d, d, n) * (4 * e)
    search = Op("hardest negatives (no grad)", GEMM, (w.users(b), d, w.negatives(b)))
    return ops + [search] * (e + 1)  # the fused z and each expert's


def _selfcfed_lgn(w: Workload, c: Mapping[str, Any], b: int) -> list[Op]:
    d, rows = int(_cfg(c, "embedding_size", 64)), int(w.batch_rows[b])
    kept = w.nnz("norm_adj", 2 * w.n_pairs) // 2  # the drop rate is U[0, 1): half kept
    ops: list[Op] = []
    for _ in range(int(_cfg(c, "n_layers", 1))):
        ops += spmm("A_drop @ X", w.n_nodes, w.n_nodes, kept, d)
    ops += linear("predictor (batch users, batch items)", rows, d, d, rows) * 2
    return ops


MODELS: dict[str, Callable[[Workload, Mapping[str, Any], int], list[Op]]] = {
    "VBPR": _vbpr,
    "MMGCN": _mmgcn,
    "GRCN": _grcn,
    "DualGNN": _dualgnn,
    "SLMRec": _slmrec,
    "BM3": _bm3,
    "FREEDOM": _freedom,
    "DRAGON": _dragon,
    "LayerGCN": _layergcn,
    "LATTICE": _lattice,
    "MGCN": _mgcn,
    "MVGAE": _mvgae,
    "SELFCFED_LGN": _selfcfed_lgn,
}

# Products an epoch makes once, not per batch (MG's mirror pass does not repeat them).
PER_EPOCH: dict[str, Callable[[Workload, Mapping[str, Any]], list[Op]]] = {
    "LATTICE": _lattice_rebuild,
}


def batch_ops(model: str, workload: Workload, config: Mapping[str, Any], batch: int) -> list[Op]:
    """The products of one forward + backward pass of ``model`` over batch ``batch``."""
    return MODELS[model](workload, config, batch)


def mg_batches(n_batches: int, beta: int) -> list[int]:
    """The batches an MG epoch passes twice (the reference's trigger: index % beta == 0)."""
    return list(range(0, n_batches, beta))


@dataclass
class OpClass:
    """Same-labelled products of one role and kind over an epoch: total FLOPs, instance count
    and a representative shape (the instances' mean dims, rounded), timed once."""

    label: str
    kind: str
    role: str
    dims: tuple[int, ...]
    flops: int
    count: int

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        return self.kind, self.dims


def aggregate(ops: Iterable[Op]) -> list[OpClass]:
    """Group products by (label, role, kind), keeping first-seen order."""
    groups: dict[tuple[str, str, str], list[Op]] = {}
    for op in ops:
        groups.setdefault((op.label, op.role, op.kind), []).append(op)
    classes = []
    for (label, role, kind), members in groups.items():
        dims = tuple(
            max(1, round(sum(op.dims[i] for op in members) / len(members)))
            for i in range(len(members[0].dims))
        )
        classes.append(
            OpClass(label, kind, role, dims, sum(op.flops for op in members), len(members))
        )
    return classes


def epoch_ops(
    model: str, workload: Workload, config: Mapping[str, Any], mg: bool = False, beta: int = 3
) -> list[Op]:
    """Every product of one epoch: its per-epoch products (``PER_EPOCH``), every batch's, and
    with ``mg`` the repeated pass of every beta-th batch."""
    n_batches = len(workload.batch_rows)
    ops = PER_EPOCH[model](workload, config) if model in PER_EPOCH else []
    ops += [op for b in range(n_batches) for op in batch_ops(model, workload, config, b)]
    if mg:
        for b in mg_batches(n_batches, beta):
            ops += batch_ops(model, workload, config, b)
    return ops


def total_flops(ops: Iterable[Op]) -> int:
    return sum(op.flops for op in ops)


# --- the machine's throughput for those products ---------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_csr(rows: int, cols: int, nnz: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A CSR [rows, cols] matrix with ~nnz float32 entries at uniformly random positions,
    spread evenly over the rows (column indices sorted within each row)."""
    generator = torch.Generator().manual_seed(seed)
    row_ids = torch.arange(nnz) * rows // max(nnz, 1)
    col_ids = torch.randint(cols, (nnz,), generator=generator)
    order = torch.argsort(row_ids * cols + col_ids)
    row_ids, col_ids = row_ids[order], col_ids[order]
    crow = torch.zeros(rows + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(row_ids, minlength=rows), 0)
    values = torch.rand(nnz, generator=generator)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(
            crow, col_ids, values, (rows, cols), check_invariants=False
        )
    return matrix.to(device)


def _operands(kind: str, dims: tuple[int, ...], device: torch.device) -> Callable[[], Any]:
    """The product as a call, writing into one preallocated output: the floor is the
    arithmetic, not the first touch of a fresh output's pages (a process with a bounded heap,
    as ``benchmarks/run.py``, maps every output of 4 MB or more afresh)."""
    if kind == SPMM:
        rows, cols, nnz, d = dims
        matrix = random_csr(rows, cols, nnz, device)
        x = torch.randn(cols, d, device=device)
        out = torch.empty(rows, d, device=device)
        try:
            torch.mm(matrix, x, out=out)
        except RuntimeError:  # no out= for this layout here
            return lambda: matrix @ x
        return lambda: torch.mm(matrix, x, out=out)
    m, k, n = dims
    out = torch.empty(m, n, device=device)
    if kind == GEMM_TN:
        a = torch.randn(k, m, device=device)
        b = torch.randn(k, n, device=device)
        return lambda: torch.mm(a.t(), b, out=out)
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    return lambda: torch.mm(a, b, out=out)


def time_op(
    kind: str, dims: tuple[int, ...], device: torch.device, repeats: int = 3, budget_s: float = 1.0
) -> float:
    """Best seconds of one product of this kind and shape: one warm-up call, then up to
    ``repeats`` timed calls (fewer once ``budget_s`` is spent, at least one)."""
    run = _operands(kind, dims, device)
    run()
    _synchronize(device)
    best, spent = math.inf, 0.0
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        _synchronize(device)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget_s:
            break
    return best


def measure_rates(
    classes: Iterable[OpClass],
    device: torch.device | str = "cpu",
    repeats: int = 3,
    budget_s: float = 1.0,
    cache: dict[tuple[str, tuple[int, ...]], float] | None = None,
) -> dict[tuple[str, tuple[int, ...]], float]:
    """Seconds per product for each class's (kind, representative dims), timed on ``device``
    with torch's current thread count. ``cache`` (updated) skips shapes already timed."""
    device = torch.device(device)
    seconds = {} if cache is None else cache
    with torch.no_grad():
        for cls in classes:
            if cls.key not in seconds:
                seconds[cls.key] = time_op(cls.kind, cls.dims, device, repeats, budget_s)
    return seconds


@dataclass
class Floor:
    """An epoch's floor: FLOPs and seconds, with the per-class breakdown."""

    flops: int
    seconds: float
    classes: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"gflop": self.flops / 1e9, "seconds": self.seconds, "products": self.classes}


def floor(
    classes: Sequence[OpClass], seconds_per_op: Mapping[tuple[str, tuple[int, ...]], float]
) -> Floor:
    """Floor seconds = sum over classes of their FLOPs at the measured rate of their shape."""
    rows, total_s = [], 0.0
    for cls in classes:
        per_op = seconds_per_op[cls.key]
        rep_flops = Op(cls.label, cls.kind, cls.dims).flops
        rate = rep_flops / per_op if per_op > 0 else math.inf
        class_s = cls.flops / rate if rate > 0 else 0.0
        total_s += class_s
        rows.append({
            "label": cls.label, "kind": cls.kind, "role": cls.role, "dims": list(cls.dims),
            "count": cls.count, "gflop": cls.flops / 1e9, "gflops_per_s": rate / 1e9,
            "seconds": class_s,
        })  # fmt: skip
    return Floor(sum(c.flops for c in classes), total_s, rows)


def model_floor(
    model: str,
    workload: Workload,
    config: Mapping[str, Any],
    device: torch.device | str = "cpu",
    beta: int = 3,
    repeats: int = 3,
    budget_s: float = 1.0,
) -> dict[str, Floor]:
    """{"epoch": ..., "epoch_mg": ...}: the plain and MG epoch floors, timed on ``device``."""
    plain = aggregate(epoch_ops(model, workload, config))
    mirrored = aggregate(epoch_ops(model, workload, config, mg=True, beta=beta))
    seconds = measure_rates(plain + mirrored, device, repeats, budget_s)
    return {"epoch": floor(plain, seconds), "epoch_mg": floor(mirrored, seconds)}
