"""Parameter-shaped vectors for the analyses: seeded draws, inner products and norms, linear
combinations, moving a model's parameters to θ₀ + step·d and back, Hessian-vector products.

A "vector" is a list of tensors shaped like the parameters (one tensor per parameter tensor).
Inner products and norms are accumulated in float64 whatever the tensors' dtype. Every random
draw comes from a CPU ``torch.Generator`` seeded from ``(seed, stream, ...)`` (``generator``)
and is then moved to the vectors' device and dtype, so a seed gives the same numbers on any
device (up to the device's arithmetic). Parameters are moved by copying ``θ₀ + step·d`` from
saved copies θ₀, never by adding and subtracting, so putting them back is bit-exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

Vector = list[torch.Tensor]
HVP = Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]


# --- random draws -------------------------------------------------------------------------------


def generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for (seed, stream...): statistically independent streams per draw."""
    state = np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def gaussian_like(like: Sequence[torch.Tensor], gen: torch.Generator) -> Vector:
    """Standard normal entries, drawn on the CPU in ``like``'s dtypes, moved to its devices."""
    return [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in like]


def rademacher_like(like: Sequence[torch.Tensor], gen: torch.Generator) -> Vector:
    """Independent ±1 entries (probability ½ each), drawn on the CPU, moved to ``like``'s
    devices and dtypes."""
    return [
        (2 * torch.randint(0, 2, t.shape, generator=gen) - 1).to(dtype=t.dtype, device=t.device)
        for t in like
    ]


# --- inner products, norms, linear combinations -------------------------------------------------


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """⟨a, b⟩ = Σ_tensors Σ_entries a·b, accumulated in float64."""
    return float(dot64(a, b))


def dot64(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """⟨a, b⟩ as a 0-d float64 tensor on the first tensor's device (no host synchronisation)."""
    device = a[0].device if len(a) else torch.device("cpu")
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in zip(a, b, strict=True):
        total = total + torch.dot(x.reshape(-1).double(), y.reshape(-1).double()).to(device)
    return total


def norm(a: Sequence[torch.Tensor]) -> float:
    """‖a‖₂ over all tensors together, accumulated in float64."""
    return math.sqrt(max(dot(a, a), 0.0))


def tensor_norm(t: torch.Tensor) -> float:
    """‖t‖₂ of one tensor (all its entries), in float64."""
    return float(torch.linalg.vector_norm(t.detach().reshape(-1).double()))


def axpy(alpha: float, x: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> Vector:
    """alpha·x + y, as new tensors (``y``'s dtype)."""
    return [yt + alpha * xt for xt, yt in zip(x, y, strict=True)]


def scale(alpha: float, x: Sequence[torch.Tensor]) -> Vector:
    """alpha·x, as new tensors."""
    return [alpha * xt for xt in x]


def dimension(like: Sequence[torch.Tensor]) -> int:
    """The number of entries n of a vector shaped like ``like`` (a Hessian is n x n)."""
    return sum(t.numel() for t in like)


def orthogonalise(w: Vector, basis: Sequence[Sequence[torch.Tensor]]) -> Vector:
    """w minus its projection on the orthonormal ``basis``: classical Gram-Schmidt done twice
    ("twice is enough": orthogonal to working precision)."""
    for _ in range(2):
        if not basis:
            break
        coefficients = [float(dot64(u, w)) for u in basis]
        for c, u in zip(coefficients, basis, strict=True):
            w = [wt - c * ut for wt, ut in zip(w, u, strict=True)]
    return w


# --- moving parameters --------------------------------------------------------------------------


def set_to(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """θ <- values, copied in place (restores saved copies bit-exactly)."""
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


def shift(
    params: Sequence[torch.Tensor],
    origin: Sequence[torch.Tensor],
    direction: Sequence[torch.Tensor],
    step: float = 1.0,
) -> None:
    """θ <- θ₀ + step · direction, from the saved θ₀ = ``origin`` (never cumulative)."""
    with torch.no_grad():
        for p, w, d in zip(params, origin, direction, strict=True):
            # step 1 adds d itself (1.0·d is d exactly, so this only saves a product)
            p.copy_(w + d if step == 1.0 else w + step * d)


# --- Hessian-vector products --------------------------------------------------------------------


def mean_double_backward_hvp(
    term_losses: Sequence[Callable[[], torch.Tensor]], params: Sequence[torch.Tensor]
) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """An ``hvp`` of the mean of the scalar losses ``term_losses[k]()`` (each differentiable
    w.r.t. ``params``): H v = mean_k ∇_θ (∇_θ L_k(θ) · v), two backward passes through autograd
    per term (Pearlmutter's trick), one term's double graph alive at a time.

    Every term is re-evaluated at every call, so the product is taken at the parameters' current
    values. Parameters no term depends on get zero rows; a term whose gradient does not depend
    on θ (linear) adds nothing. The result is detached, shaped like ``params``.
    """
    params = list(params)
    terms = list(term_losses)
    if not terms:
        raise ValueError("an HVP needs at least one loss term")

    def product(vector: list[torch.Tensor]) -> list[torch.Tensor]:
        total: list[torch.Tensor | None] = [None] * len(params)
        for loss_fn in terms:
            grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
            inner: torch.Tensor | None = None
            for g, v in zip(grads, vector, strict=True):
                if g is not None:
                    term = (g * v.detach().to(dtype=g.dtype, device=g.device)).sum()
                    inner = term if inner is None else inner + term
            if inner is None or not inner.requires_grad:
                continue  # no parameter reached, or a gradient that does not depend on θ
            hv = torch.autograd.grad(inner, params, allow_unused=True)
            for index, h in enumerate(hv):
                if h is not None:
                    acc = total[index]
                    total[index] = h.detach() if acc is None else acc + h.detach()
        count = len(terms)
        return [
            torch.zeros_like(p) if h is None else (h if count == 1 else h / count)
            for p, h in zip(params, total, strict=True)
        ]

    return product


def double_backward_hvp(
    loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]
) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """An ``hvp`` for the scalar ``loss_fn()`` (differentiable w.r.t. ``params``):
    H v = ∇_θ (∇_θ L(θ) · v) (``mean_double_backward_hvp`` of one term).

    ``loss_fn`` is re-evaluated at every call, so the product is taken at the parameters' current
    values. Parameters the loss does not depend on get zero rows; a loss whose gradient does not
    depend on θ (linear) gives H v = 0. The result is detached.
    """
    return mean_double_backward_hvp([loss_fn], params)
