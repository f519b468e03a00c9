"""Autograd operations shared by models, written for speed where torch's defaults are slow.

Each fused operation has a fast backward for training and, when it is differentiated twice
(Hessian-vector products by double backward, ``mgrec.analysis``), falls back to autograd on
its plain formula (``plain_backward``), so second derivatives stay exact.
"""

from __future__ import annotations

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


class _Linear(torch.autograd.Function):
    """``F.linear`` whose weight gradient is computed as ``(x^T g)^T``.

    Same maths as ``nn.Linear``; on CPUs this layout of the weight-gradient product runs ~1.7x
    faster for the wide raw-feature projections (4,096-d images), the largest matmul of VBPR,
    BM3 and FREEDOM.
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = (x.t() @ grad).t().contiguous() if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with the faster backward above. x: [n, in] -> [n, out]."""
    return _Linear.apply(x, layer.weight, layer.bias)


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
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias, rows)
        ctx.n_rows = n_rows
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, bias, rows = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            return (*plain_backward(F.linear, (x, weight, bias), grad, needs[:3]), None, None)
        grad_x = grad @ weight if needs[0] else None
        grad_weight = (x.t() @ grad).t().contiguous() if needs[1] else None
        grad_bias = None
        if needs[2]:
            padded = grad.new_zeros(ctx.n_rows, grad.shape[1]).index_copy_(0, rows, grad)
            grad_bias = padded.sum(0)
        return grad_x, grad_weight, grad_bias, None, None


def rows_linear(layer: nn.Linear, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``layer(table)[rows]`` computed on the rows only (``rows`` distinct): [len(rows), out].

    The same values as projecting the table and indexing (each output row depends on its input
    row only), and the same gradients; the bias gradient is summed as the full projection's
    (see ``_RowsLinear``)."""
    rows_of_table = table.index_select(0, rows)
    return _RowsLinear.apply(rows_of_table, layer.weight, layer.bias, rows, table.shape[0])


def project_rows(table: nn.Embedding, layer: nn.Linear, rows: torch.Tensor) -> torch.Tensor:
    """``layer(table(rows))`` for distinct ``rows`` of a trainable feature table: [n, out].

    ``index_select`` on the table's weight: its backward scatters the rows' gradients into the
    dense table gradient directly, without the sort ``nn.Embedding``'s backward does."""
    return linear(layer, table.weight.index_select(0, rows))


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
