"""Autograd operations shared by models, written for speed where torch's defaults are slow."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def rand_xavier_normal(*shape: int) -> torch.Tensor:
    """``xavier_normal_(torch.rand(shape))``: the reference's pattern for random tensors (the
    uniform draw is overwritten but consumes torch's RNG first, keeping the streams in step)."""
    return nn.init.xavier_normal_(torch.rand(shape))
