"""Autograd operations shared by models, written for speed where torch's defaults are slow.

Each fused operation has a fast backward for training and, when it is differentiated twice
(Hessian-vector products by double backward, ``mgrec.analysis``), falls back to autograd on
its plain formula (``plain_backward``), so second derivatives stay exact.

One helper relies on a private torch API: ``ReusableBuffer`` reads torch's storage use count,
only where ``counts_storage_users`` (checked once per process) finds that counter present and
working; elsewhere it hands out fresh memory (the plain path, the same values).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def plain_backward(
    formula: Callable[..., torch.Tensor],
    inputs: Sequence[Any],
    grad: torch.Tensor,
    needs: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    """The vector-Jacobian product of ``formula(*inputs)`` with ``grad``, as a differentiable
    function of the inputs and of ``grad``: the backward of a fused Function when it is itself
    differentiated (``torch.is_grad_enabled()`` inside ``backward``). ``needs``: which inputs
    want a gradient (None for the others and for non-tensors).

    ``torch.func.vjp`` treats the inputs as independent: ``torch.autograd.grad`` would also
    follow paths from one input to another through the forward graph (an input computed from
    another, as LayerGCN's layers are), counting them twice.
    """
    wanted = [i for i, x in enumerate(inputs) if needs[i] and isinstance(x, torch.Tensor)]

    def of_wanted(*tensors: torch.Tensor) -> torch.Tensor:
        args = list(inputs)
        for i, tensor in zip(wanted, tensors, strict=True):
            args[i] = tensor
        return formula(*args)

    vjp = torch.func.vjp(of_wanted, *(inputs[i] for i in wanted))[1]
    found = dict(zip(wanted, vjp(grad), strict=True))
    return tuple(found.get(i) for i in range(len(inputs)))


def _storage_use_count(storage: torch.UntypedStorage) -> int:
    """How many owners ``storage``'s memory has: torch's private, undocumented counter (the
    storage object itself counts one, every tensor over the memory one more). Only called once
    ``counts_storage_users`` has found it present and counting so."""
    return int(torch._C._storage_Use_Count(storage._cdata))


@functools.cache
def counts_storage_users() -> bool:
    """Whether this torch has the private storage use count that ``ReusableBuffer`` relies on,
    and it counts as assumed: more than one while a tensor (or a view made with ``set_``) is
    over the memory, exactly one once only the storage object is left. Checked once per
    process; where it fails, every ``ReusableBuffer`` hands out fresh memory (the plain path:
    the same values, only slower), so an API change in torch can cost speed, never results."""
    if getattr(torch._C, "_storage_Use_Count", None) is None:
        return False
    try:
        tensor = torch.empty(8)
        storage = tensor.untyped_storage()
        with_tensor = _storage_use_count(storage)
        view = torch.empty(0).set_(storage, 0, (2, 2), (2, 1))
        with_view = _storage_use_count(storage)
        del tensor, view
        alone = _storage_use_count(storage)
    except Exception:  # a changed signature or attribute: not the API assumed
        return False
    return with_tensor > 1 and with_view > with_tensor and alone == 1


def _sole_owner(storage: torch.UntypedStorage) -> bool:
    """Whether nothing but ``storage`` itself references its memory (no tensor over it)."""
    return _storage_use_count(storage) == 1


class ReusableBuffer:
    """Memory kept for a large tensor that every training step makes anew (a gradient, a
    temporary), so that it is not handed back to the OS and faulted in again at every step:
    on the machines measured, first touching fresh memory costs ~1.5 us per 4 KiB page (9 ms
    for BM3's 24 MB image-table gradient, more than the product that fills it), and glibc
    returns large freed blocks to the OS.

    ``empty(shape, like)`` is an uninitialised tensor (``like``'s dtype and device) over the
    kept memory when nothing else references that memory any more (the tensor handed out last
    time, e.g. a ``.grad`` that ``zero_grad`` set to None, has been released), else over fresh
    memory, kept from then on. So a tensor handed out is never written again while anything
    still holds it (a caller keeping a gradient, ``zero_grad(set_to_none=False)``).

    Whether anything else references the memory is read from a private torch counter, used only
    where ``counts_storage_users`` finds it working; elsewhere ``empty`` is ``like.new_empty``.
    """

    def __init__(self) -> None:
        self._storage: torch.UntypedStorage | None = None

    def empty(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` (contiguous), ``like``'s dtype and device."""
        if not counts_storage_users():  # the plain path: fresh memory, nothing kept
            return like.new_empty(tuple(shape))
        nbytes = math.prod(shape) * like.element_size()
        storage = self._storage
        if (
            storage is None
            or storage.device != like.device
            or storage.nbytes() < nbytes
            or not _sole_owner(storage)
        ):
            tensor = like.new_empty(tuple(shape))
            self._storage = tensor.untyped_storage()
            return tensor
        strides, step = [], 1
        for size in reversed(shape):  # row-major (contiguous) strides
            strides.append(step)
            step *= size
        return like.new_empty(0).set_(storage, 0, tuple(shape), tuple(reversed(strides)))

    # A copy of a model (deepcopy, pickling) starts with no memory of its own.
    def __deepcopy__(self, memo: dict[int, Any]) -> ReusableBuffer:
        return ReusableBuffer()

    def __reduce__(self) -> tuple[type[ReusableBuffer], tuple[()]]:
        return ReusableBuffer, ()


def buffer_of(owner: nn.Module, name: str) -> ReusableBuffer:
    """The ``ReusableBuffer`` called ``name`` kept on the module ``owner`` (made on first use;
    not in its state_dict)."""
    buffers = owner.__dict__.setdefault("_reusable_buffers", {})
    if name not in buffers:
        buffers[name] = ReusableBuffer()
    return buffers[name]


# A row stride that is a multiple of 4 KiB (a 1,024- or 4,096-wide float32 matrix) maps the rows
# of a column block onto the same few cache sets, which slows the weight-gradient product
# ``x^T g`` of a wide feature matrix by ~25% on CPUs (measured at 1,500 x 4,096, d = 64 and 256);
# 64 spare floats per row (256 bytes, +1.6% memory) remove the aliasing.
ROW_PAD = 64


def needs_row_pad(width: int, element_size: int, device: torch.device) -> bool:
    """Whether a [n, width] matrix on ``device`` gets a padded row stride (``gemm_rows``)."""
    return device.type == "cpu" and width >= 1024 and (width * element_size) % 4096 == 0


def gemm_empty(
    n_rows: int, like: torch.Tensor, buffer: ReusableBuffer | None = None
) -> torch.Tensor:
    """An uninitialised [n_rows, like.shape[1]] matrix with ``like``'s dtype and device, its
    row stride padded where ``needs_row_pad`` says (a view of a wider buffer), over
    ``buffer``'s memory when given."""
    width = like.shape[1]
    padded = width + ROW_PAD if needs_row_pad(width, like.element_size(), like.device) else width
    shape = (n_rows, padded)
    matrix = like.new_empty(shape) if buffer is None else buffer.empty(shape, like)
    return matrix[:, :width]


def gemm_rows(x: torch.Tensor) -> torch.Tensor:
    """A copy of the 2-D matrix ``x`` laid out for fast products (see ``ROW_PAD``): the same
    values, its row stride padded where ``needs_row_pad`` says; ``x`` itself otherwise."""
    if not needs_row_pad(x.shape[1], x.element_size(), x.device):
        return x
    return gemm_empty(x.shape[0], x).copy_(x)


WeightGradBuffers = tuple[ReusableBuffer, ReusableBuffer]


def weight_grad_buffers(layer: nn.Module) -> WeightGradBuffers:
    """The memory ``weight_grad`` reuses for ``layer``'s weight gradient, kept on the layer."""
    return buffer_of(layer, "x^T g"), buffer_of(layer, "weight grad")


def weight_grad(
    x: torch.Tensor, grad: torch.Tensor, buffers: WeightGradBuffers | None = None
) -> torch.Tensor:
    """The weight gradient [out, in] of ``F.linear(x, W)``, computed as ``(x^T g)^T``: on CPUs
    this layout of the product runs ~1.3-1.7x faster than ``g^T x`` for the wide raw-feature
    projections (4,096-d images), the largest matmuls of most models. Outside grad mode it is
    made over ``buffers``' memory (the product and its transposed copy: 1-4 MB at every step).
    """
    if buffers is None or torch.is_grad_enabled():  # differentiable: the plain products
        return (x.t() @ grad).t().contiguous()
    product_buffer, grad_buffer = buffers
    product = product_buffer.empty((x.shape[1], grad.shape[1]), x)
    torch.mm(x.t(), grad, out=product)
    return grad_buffer.empty((grad.shape[1], x.shape[1]), x).copy_(product.t())


class _Linear(torch.autograd.Function):
    """``F.linear`` whose weight gradient is computed by ``weight_grad``.

    Same maths as ``nn.Linear``; its backward is made of differentiable products, so it can be
    differentiated twice.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        buffers: WeightGradBuffers | None = None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.buffers = buffers
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x = grad @ weight if needs[0] else None
        grad_weight = weight_grad(x, grad, ctx.buffers) if needs[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and needs[2] else None
        return grad_x, grad_weight, grad_bias, None


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with the faster backward above. x: [n, in] -> [n, out]."""
    return _Linear.apply(x, layer.weight, layer.bias, weight_grad_buffers(layer))


class _RowsLinear(torch.autograd.Function):
    """``F.linear`` of some rows of a table, with the bias gradient summed as the whole table's.

    The bias gradient of a projection of all rows sums an [n_rows, out] gradient whose other
    rows are zero; summing only the given rows gives the same value up to rounding, but the
    order of a float sum depends on the rows' positions. VBPR's bias gradient cancels
    analytically (it is all rounding noise), and Adam amplifies that noise, so it is summed
    here over the zero-padded table: bit for bit what the full projection computes.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        rows: torch.Tensor,
        n_rows: int,
        buffers: WeightGradBuffers | None = None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias, rows)
        ctx.n_rows, ctx.buffers = n_rows, buffers
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, bias, rows = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            return (*plain_backward(F.linear, (x, weight, bias), grad, needs[:3]), None, None, None)
        grad_x = grad @ weight if needs[0] else None
        grad_weight = weight_grad(x, grad, ctx.buffers) if needs[1] else None
        grad_bias = None
        if needs[2]:
            padded = grad.new_zeros(ctx.n_rows, grad.shape[1]).index_copy_(0, rows, grad)
            grad_bias = padded.sum(0)
        return grad_x, grad_weight, grad_bias, None, None, None


def rows_linear(layer: nn.Linear, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``layer(table)[rows]`` computed on the rows only (``rows`` distinct): [len(rows), out].

    The same values as projecting the table and indexing (each output row depends on its input
    row only), and the same gradients; the bias gradient is summed as the full projection's
    (see ``_RowsLinear``)."""
    rows_of_table = table.index_select(0, rows)
    buffers = weight_grad_buffers(layer)
    return _RowsLinear.apply(rows_of_table, layer.weight, layer.bias, rows, table.shape[0], buffers)


def _plain_table_rows_linear(
    table: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return F.linear(table.index_select(0, rows), weight, bias)


class _TableRowsLinear(torch.autograd.Function):
    """``F.linear(table[rows], weight, bias)`` for distinct ``rows`` of a trainable table
    (``_plain_table_rows_linear``), with its large tensors over kept memory.

    BM3's 4,096-d image table makes three ~24 MB tensors a step: the gathered rows [n, in],
    the rows' input gradient g W [n, in] and the dense table gradient [T, in] (zeros but for
    those rows). Made fresh, each is faulted in page by page at every step; here each lives in
    a ``ReusableBuffer`` kept on the table's module (the gradient is handed to autograd and
    reused only once it has been released). The gathered rows get a GEMM-friendly stride
    (``gemm_empty``). Values and gradients are those of the plain formula.
    """

    @staticmethod
    def forward(
        ctx,
        table: torch.Tensor,
        rows: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        buffers: tuple[ReusableBuffer, ReusableBuffer, ReusableBuffer, WeightGradBuffers],
    ) -> torch.Tensor:
        rows_buffer, ctx.rows_grad_buffer, ctx.grad_buffer, ctx.weight_buffers = buffers
        x = torch.index_select(table, 0, rows, out=gemm_empty(len(rows), table, rows_buffer))
        ctx.save_for_backward(table, rows, x, weight, bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, rows, x, weight, bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            inputs = (table, rows, weight, bias)
            return (*plain_backward(_plain_table_rows_linear, inputs, grad, needs[:4]), None)
        grad_table = grad_weight = grad_bias = None
        if needs[0]:
            # zero, then the rows' input gradients g W; both over kept memory
            rows_grad = ctx.rows_grad_buffer.empty((len(rows), table.shape[1]), table)
            torch.mm(grad, weight, out=rows_grad)
            grad_table = ctx.grad_buffer.empty(table.shape, table).zero_()
            grad_table.index_copy_(0, rows, rows_grad)
        if needs[2]:
            grad_weight = weight_grad(x, grad, ctx.weight_buffers)
        if bias is not None and needs[3]:
            grad_bias = grad.sum(0)
        return grad_table, None, grad_weight, grad_bias, None


def project_rows(table: nn.Embedding, layer: nn.Linear, rows: torch.Tensor) -> torch.Tensor:
    """``layer(table(rows))`` for distinct ``rows`` of a trainable feature table: [n, out]
    (the same values and gradients; see ``_TableRowsLinear``)."""
    buffers = (
        buffer_of(table, "rows"),
        buffer_of(table, "rows grad"),
        buffer_of(table, "grad"),
        weight_grad_buffers(layer),
    )
    return _TableRowsLinear.apply(table.weight, rows, layer.weight, layer.bias, buffers)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout(x, p, training=True)`` in distribution: each entry kept with probability
    1 - p and scaled by 1 / (1 - p) (the same values as torch's), its mask drawn as
    ``rand >= p`` from torch's generator, one uniform draw per entry. On a CPU torch's own
    kernel (``bernoulli_``) is ~2-4x slower and draws other masks, and leaves the generator
    elsewhere, so the draws after it differ from the reference's too."""
    if p <= 0.0:
        return x  # as F.dropout
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand_like(x).ge_(p)  # 1.0 / 0.0 in the draw's own memory
    return x * keep.div_(1.0 - p)


def rand_xavier_normal(*shape: int) -> torch.Tensor:
    """``xavier_normal_(torch.rand(shape))``: the reference's pattern for random tensors (the
    uniform draw is overwritten but consumes torch's RNG first, keeping the streams in step)."""
    return nn.init.xavier_normal_(torch.rand(shape))


def merges_repeated_rows(device: torch.device) -> bool:
    """Whether per-row work is done once per distinct row of a batch on ``device``: on a CPU,
    where ``torch.unique`` is cheap; elsewhere it would cost a host sync every batch."""
    return device.type == "cpu"


def group_entries(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(groups, inverse, counts)``: the entries of ``ids`` [B] grouped by value, so that
    ``groups[inverse] == ids`` and ``counts[g]`` entries fall in group g.

    Where rows are merged (``merges_repeated_rows``: a CPU) the groups are the distinct values
    (``torch.unique``): work done once per distinct row instead of once per entry. Elsewhere
    every entry is its own group (ids, arange, ones), with no host sync.
    """
    if merges_repeated_rows(ids.device):
        return torch.unique(ids, return_inverse=True, return_counts=True)
    return ids, torch.arange(len(ids), device=ids.device), torch.ones_like(ids)


def distinct_rows(ids: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, inverse)`` with ``rows[inverse] == ids``: the rows of an [n_rows, ...] table a
    batch reads, for per-row work (projections, dropout masks) done once per row.

    Where rows are merged (``merges_repeated_rows``: a CPU): the batch's distinct ids
    (``torch.unique``). Elsewhere: every row (``arange(n_rows)``, ``inverse = ids``), as the
    reference computes it, with no host sync.
    """
    if merges_repeated_rows(ids.device):
        return torch.unique(ids, return_inverse=True)
    return torch.arange(n_rows, device=ids.device), ids
