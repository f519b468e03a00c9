"""Curvature of a loss at a point from Hessian-vector products: extreme eigenvalues, the top-k
eigenvalues, the trace, and the worst-case (adversarial) sharpness in a relative ball.

Pure numerics over an abstract objective: nothing here knows about models. A "vector" is a list
of tensors shaped like the parameters (``mgrec.analysis.vectors``: products and norms in float64,
seeded draws on a CPU generator whatever the device). The Hessian enters only through a
caller-supplied ``hvp(v) -> H v`` (``vectors.double_backward_hvp`` builds one from a
differentiable scalar loss closure), so the same code serves a toy quadratic and a
recommender's training loss. Each function draws from its own stream of ``vectors.generator``.

Why the smallest eigenvalue matters: for a bilinear score s = ⟨u, i⟩ with per-pair loss ℓ(s),
the Hessian in (u, i) is ℓ''·[i; u][i; u]ᵀ + ℓ'·[[0, I], [I, 0]], and the second term has
eigenvalues ±ℓ': wherever the pairs' loss slopes ℓ' do not cancel the Hessian is indefinite. A
trained checkpoint is an early-stopped, not an exact, minimum, so λ_min < 0 is expected along
some directions, at times of larger magnitude than λ_max. Plain power iteration returns the
eigenvalue of largest *magnitude*, possibly that negative one, so the functions here return the
largest and smallest *algebraic* eigenvalues separately.

Memory: Lanczos keeps its whole basis (full reorthogonalisation), ``iterations`` vectors of the
parameters' size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mgrec.analysis.vectors import (
    HVP,
    Vector,
    axpy,
    dimension,
    dot,
    gaussian_like,
    generator,
    norm,
    orthogonalise,
    rademacher_like,
    scale,
    set_to,
    shift,
    tensor_norm,
)

# Streams of ``generator`` used by each function (so their draws never coincide).
_LANCZOS_STREAM, _TOP_STREAM, _HUTCHINSON_STREAM, _SHARPNESS_STREAM = 1, 2, 3, 4


# --- Lanczos ------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One Lanczos run: Ritz values ``theta`` (ascending), the eigenvectors ``s`` of T (columns),
    residual estimates, the basis, the cost."""

    theta: np.ndarray
    s: np.ndarray
    residuals: np.ndarray
    basis: list[Vector]
    hvps: int
    restarts: int
    scale: float
    exhausted: bool

    def ritz_vector(self, index: int) -> Vector:
        """y = Σ_j s[j, index] v_j."""
        coefficients = self.s[:, index]
        vector = [torch.zeros_like(t) for t in self.basis[0]]
        for c, v in zip(coefficients, self.basis, strict=True):
            vector = axpy(float(c), v, vector)
        return vector


def _unit_start(
    like: Sequence[torch.Tensor], gen: torch.Generator, against: Sequence[Vector]
) -> Vector | None:
    """A Gaussian unit vector orthogonal to ``against`` (None if nothing is left of it)."""
    v = orthogonalise(gaussian_like(like, gen), against)
    size = norm(v)
    # Of a Gaussian vector (norm ~sqrt(n)) the projection keeps norm ~sqrt(n - len(against)),
    # at least ~1 while any direction is left; rounding leaves ~eps sqrt(n).
    if size <= max(1e-8, 100 * _eps(like)) * math.sqrt(dimension(like)) or not math.isfinite(size):
        return None
    return scale(1.0 / size, v)


def _lanczos_run(
    hvp: HVP,
    like: Sequence[torch.Tensor],
    iterations: int,
    tol: float,
    seed_stream: tuple[int, ...],
    frozen: Sequence[Vector] = (),
    want_top: int = 1,
    want_bottom: int = 1,
    scale_floor: float = 0.0,
) -> _Run:
    """Lanczos with full reorthogonalisation on H restricted to the complement of ``frozen``
    (orthonormal vectors, e.g. eigenvectors already found: every new basis vector is kept
    orthogonal to them, which is the same as running on (I - YYᵀ) H (I - YYᵀ) there).

    Stops after ``iterations`` products, when the basis spans the whole space, or when the
    ``want_top`` largest and ``want_bottom`` smallest Ritz pairs have residual estimates
    ≤ tol · scale (scale = max(scale_floor, max |Ritz value|)). On a breakdown (an invariant
    subspace found, β ≈ 0) that is not yet converged, it restarts from a fresh random vector
    orthogonal to the basis (T becomes block diagonal), so repeated eigenvalues are found too.
    """
    n_free = dimension(like) - len(frozen)
    iterations = min(int(iterations), n_free)
    if iterations < 1:
        raise ValueError("iterations must be >= 1 (and the space must not be exhausted)")
    dtype_eps = max(torch.finfo(t.dtype).eps for t in like) if like else 2.0**-52
    restarts = 0
    v = _unit_start(like, generator(*seed_stream, restarts), frozen)
    if v is None:
        raise ValueError("no start vector orthogonal to the frozen vectors")
    basis: list[Vector] = []
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples basis j and j + 1 (0 at a restart)
    norm_estimate = 0.0
    theta = np.zeros(0)
    s = np.zeros((0, 0))
    residuals = np.zeros(0)
    exhausted = False
    while True:
        basis.append(v)
        w = list(hvp(v))
        alpha = dot(v, w)
        w = orthogonalise(w, [*frozen, *basis])
        beta = norm(w)
        alphas.append(alpha)
        norm_estimate = max(norm_estimate, abs(alpha), beta)
        # Ritz pairs of T_m = tridiag(betas, alphas, betas): residual ‖H y - θ y‖ = β_m |s_mi|.
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(t)
        residuals = beta * np.abs(s[-1, :])
        exhausted = len(basis) >= n_free
        if exhausted:
            residuals = np.zeros_like(residuals)
        threshold = tol * max(scale_floor, float(np.max(np.abs(theta))))
        top = residuals[::-1][:want_top]
        bottom = residuals[:want_bottom]
        converged = bool(np.all(top <= threshold) and np.all(bottom <= threshold))
        if converged or exhausted or len(basis) >= iterations:
            break
        if beta <= 1e3 * dtype_eps * norm_estimate:  # invariant subspace: restart
            restarts += 1
            fresh = _unit_start(like, generator(*seed_stream, restarts), [*frozen, *basis])
            if fresh is None:
                exhausted = True
                residuals = np.zeros_like(residuals)
                break
            v = fresh
            betas.append(0.0)
        else:
            v = scale(1.0 / beta, w)
            betas.append(beta)
    return _Run(
        theta=theta,
        s=s,
        residuals=residuals,
        basis=basis,
        hvps=len(basis),
        restarts=restarts,
        scale=max(scale_floor, float(np.max(np.abs(theta)))),
        exhausted=exhausted,
    )


def lanczos(
    hvp: HVP,
    like: Sequence[torch.Tensor],
    iterations: int,
    seed: int = 0,
    tol: float = 1e-6,
) -> dict[str, Any]:
    """The largest and smallest (algebraic) eigenvalues of the symmetric H, by Lanczos.

    From a seeded Gaussian unit vector v₁, builds an orthonormal basis V_m = [v₁ … v_m] of the
    Krylov space span{v₁, H v₁, …, H^{m-1} v₁} with full reorthogonalisation (each new vector is
    Gram-Schmidt-ed twice against all previous ones, so no spurious "ghost" copies appear), and
    the tridiagonal T_m = V_mᵀ H V_m. The eigenvalues θ of T_m (Ritz values) are returned:
    ``lambda_max`` = θ_max, ``lambda_min`` = θ_min.

    Guarantees (exact arithmetic; rounding adds ~eps ‖H‖): T_m is a compression of H, so by
    Cauchy interlacing the Ritz values lie inside the spectrum, λ_min ≤ θ_min ≤ θ_max ≤ λ_max:
    Lanczos under-estimates the extent of the spectrum, never over-estimates it. For a Ritz pair
    (θ, y) the residual r = ‖H y − θ y‖ = β_m |e_mᵀ s| is known without extra products, and some
    eigenvalue of H lies within r of θ (within ~r²/gap when θ is separated by ``gap`` from the
    rest of the spectrum). "Converged" means r ≤ tol · max|θ| (relative to the spectral radius
    estimate; a λ_min near 0 is thus known to tol·‖H‖, not to tol relative to itself). The
    extremes converge first and fast (Kaniel-Paige-Saad theory: at a rate set by the gap to the next
    eigenvalue relative to the spread), far faster than power iteration; a start vector almost
    orthogonal to the extreme eigenvector can delay it (a Krylov method cannot certify that
    nothing lies outside [θ_min, θ_max]). When iterations ≥ n (the dimension) the whole space
    is spanned (restarting on breakdowns) and the Ritz values are the full spectrum.

    Args:
        hvp: v -> H v (H symmetric), vectors shaped like ``like``.
        like: tensors giving the shapes, dtypes and devices of the vectors (e.g. the parameters).
        iterations: the most Hessian-vector products (capped at n).
        seed: seeds the start vector (and any restart vector).
        tol: relative residual tolerance for early stopping; 0 runs all ``iterations`` (unless
            a residual is exactly 0).

    Returns:
        ``{"lambda_max", "lambda_min", "ritz_values" (ascending), "residuals" (per Ritz value),
        "residual_max", "residual_min", "converged_max", "converged_min", "converged",
        "iterations" (= Hessian-vector products), "restarts", "exhausted", "dimension", "tol"}``.
    """
    run = _lanczos_run(hvp, like, iterations, tol, (seed, _LANCZOS_STREAM))
    threshold = tol * run.scale
    residual_max, residual_min = float(run.residuals[-1]), float(run.residuals[0])
    return {
        "lambda_max": float(run.theta[-1]),
        "lambda_min": float(run.theta[0]),
        "ritz_values": [float(x) for x in run.theta],
        "residuals": [float(x) for x in run.residuals],
        "residual_max": residual_max,
        "residual_min": residual_min,
        "converged_max": residual_max <= threshold,
        "converged_min": residual_min <= threshold,
        "converged": residual_max <= threshold and residual_min <= threshold,
        "iterations": run.hvps,
        "restarts": run.restarts,
        "exhausted": run.exhausted,
        "dimension": dimension(like),
        "tol": float(tol),
    }


def top_eigenvalues(
    hvp: HVP,
    like: Sequence[torch.Tensor],
    k: int,
    iterations: int,
    tol: float = 1e-6,
    seed: int = 0,
    verify: bool = True,
    max_rounds: int | None = None,
    return_vectors: bool = False,
) -> dict[str, Any]:
    """The k largest *algebraic* eigenvalues of the symmetric H (negative eigenvalues of large
    magnitude do not get in the way), by Lanczos with locking (explicit deflation).

    Round 1 runs Lanczos (``lanczos``'s method, at most ``iterations`` products) until its k
    largest Ritz pairs converge; the converged ones, from the top down, are locked: the Ritz
    vector y is formed, re-orthogonalised against the locked ones, and refined by one more
    product, θ = yᵀHy with the true residual ‖H y − θ y‖. Each later round runs Lanczos in the
    orthogonal complement of the locked vectors (the deflated operator (I − YYᵀ) H (I − YYᵀ)),
    locking any converged Ritz value above the current k-th largest. This matters because a
    single Krylov space holds only one copy of a repeated eigenvalue: [5, 5, 3] would be seen as
    [5, 3, …]; deflation brings out the second 5. The search ends when a round finds nothing
    above the k-th value (to tol · scale, scale the spectral-radius estimate: ``verified``), when
    the space is exhausted, or after ``max_rounds`` (default k + 1: the first round, at most
    k − 1 rounds for further copies of repeated values, and the check). ``verify=False`` stops
    as soon as k values are locked (saves a round, at the risk of missing a repeated value).
    A round whose top Ritz pair does not converge fills the remaining places with its largest
    Ritz values, flagged unconverged, and ends the search. Ritz values are lower bounds in
    exact arithmetic (θ_i ≤ λ_i, interlacing), so unconverged values under-estimate.

    Cost: about ``iterations`` products per round plus one per locked vector; with ``verify``,
    typically two rounds.

    Args:
        hvp, like: as for ``lanczos``.
        k: how many eigenvalues (1 ≤ k ≤ n).
        iterations: the most products per round (capped at what is left of n).
        tol: a Ritz pair is converged when its residual is ≤ tol · scale.
        seed: seeds each round's start vector.
        verify, max_rounds: see above.
        return_vectors: also return the locked eigenvectors.

    Returns:
        ``{"eigenvalues" (k, descending), "residuals" (true ‖H y − θ y‖), "converged" (k bools,
        residual ≤ tol·scale), "all_converged", "verified", "rounds", "hvps", "scale" (the
        spectral-radius estimate), "k", "tol"}`` and ``"eigenvectors"`` (k unit vectors shaped
        like ``like``) when ``return_vectors``.
    """
    n = dimension(like)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    rounds_cap = k + 1 if max_rounds is None else int(max_rounds)
    locked: list[tuple[float, float, Vector, bool]] = []  # (θ, residual, y, Lanczos-converged)
    hvps, rounds, spectral_scale, verified = 0, 0, 0.0, False

    def kth_value() -> float:
        if len(locked) < k:
            return -math.inf
        return sorted((entry[0] for entry in locked), reverse=True)[k - 1]

    while rounds < rounds_cap:
        if len(locked) >= n:
            verified = True
            break
        want = k - len(locked) if len(locked) < k else 1
        run = _lanczos_run(
            hvp,
            like,
            iterations,
            tol,
            (seed, _TOP_STREAM, rounds),
            frozen=[entry[2] for entry in locked],
            want_top=min(want, n - len(locked)),
            want_bottom=0,
            scale_floor=spectral_scale,
        )
        rounds += 1
        hvps += run.hvps
        spectral_scale = max(spectral_scale, run.scale)
        threshold = tol * spectral_scale
        new = 0
        order = np.argsort(run.theta)[::-1]
        candidates = order[: max(k, 1)]
        stalled = False
        for index in candidates:
            theta_i = float(run.theta[index])
            if theta_i <= kth_value() + threshold:
                break
            lanczos_converged = bool(run.residuals[index] <= threshold)
            if not lanczos_converged and new > 0:
                break
            y = orthogonalise(run.ritz_vector(int(index)), [entry[2] for entry in locked])
            size = norm(y)
            if size == 0.0 or not math.isfinite(size):
                break
            y = scale(1.0 / size, y)
            hy = list(hvp(y))
            hvps += 1
            value = dot(y, hy)
            residual = norm(axpy(-value, y, hy))
            locked.append((value, residual, y, lanczos_converged))
            new += 1
            if not lanczos_converged:
                stalled = True
                break
        if stalled:
            # Nothing converged this round: fill the remaining places with its Ritz values.
            for index in candidates[1:]:
                if len(locked) >= k:
                    break
                y = orthogonalise(run.ritz_vector(int(index)), [entry[2] for entry in locked])
                y = scale(1.0 / max(norm(y), 1e-300), y)
                locked.append((float(run.theta[index]), float(run.residuals[index]), y, False))
            break
        if run.exhausted and new == 0:
            verified = True
            break
        if new == 0:
            if len(locked) >= k:
                verified = True
                break
            # Defensive: a round that locks nothing but is below k (cannot converge): stop.
            break
        if len(locked) >= k and not verify:
            break
    best = sorted(locked, key=lambda entry: entry[0], reverse=True)[:k]
    threshold = tol * spectral_scale
    # The true residual has a rounding floor of ~eps ‖H‖ (float32: ~1e-7 relative).
    floor = max(threshold, 10 * _eps(like) * spectral_scale)
    converged = [entry[1] <= floor for entry in best]
    result: dict[str, Any] = {
        "eigenvalues": [float(entry[0]) for entry in best],
        "residuals": [float(entry[1]) for entry in best],
        "converged": converged,
        "all_converged": len(best) == k and all(converged),
        "verified": verified,
        "rounds": rounds,
        "hvps": hvps,
        "scale": float(spectral_scale),
        "k": int(k),
        "tol": float(tol),
    }
    if return_vectors:
        result["eigenvectors"] = [entry[2] for entry in best]
    return result


def _eps(like: Sequence[torch.Tensor]) -> float:
    return max((torch.finfo(t.dtype).eps for t in like), default=2.0**-52)


# --- trace --------------------------------------------------------------------------------------


def hutchinson_trace(
    hvp: HVP, like: Sequence[torch.Tensor], probes: int, seed: int = 0
) -> dict[str, Any]:
    """tr(H) by Hutchinson's estimator: the mean of zᵀ H z over Rademacher probes z (entries ±1).

    E[zᵀHz] = Σ_ij H_ij E[z_i z_j] = Σ_i H_ii = tr(H): unbiased, with
    Var[zᵀHz] = 2 Σ_{i≠j} H_ij² (the smallest among probes with independent zero-mean,
    unit-variance entries; Hutchinson, 1990), so for a diagonal H every probe gives the exact
    trace. ``trace_stderr`` is the sample standard
    deviation of the probe values over sqrt(probes) (the standard error of the mean; NaN for one
    probe). Probe i depends on (seed, i) only, so a larger ``probes`` extends the same sequence.

    Returns:
        ``{"trace", "trace_stderr", "probes", "samples" (zᵀHz per probe)}``.
    """
    if probes < 1:
        raise ValueError("probes must be >= 1")
    samples = []
    for probe in range(int(probes)):
        z = rademacher_like(like, generator(seed, _HUTCHINSON_STREAM, probe))
        samples.append(dot(z, hvp(z)))
    mean = math.fsum(samples) / len(samples)
    if len(samples) > 1:
        variance = math.fsum((x - mean) ** 2 for x in samples) / (len(samples) - 1)
        stderr = math.sqrt(variance / len(samples))
    else:
        stderr = float("nan")
    return {"trace": mean, "trace_stderr": stderr, "probes": int(probes), "samples": samples}


# --- worst-case sharpness -----------------------------------------------------------------------


def _project(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """The nearest point of the ball ‖δ‖ ≤ radius: δ scaled down if it lies outside."""
    size = tensor_norm(delta)
    return delta * (radius / size) if size > radius else delta


def worst_case_sharpness(
    params: Sequence[torch.Tensor],
    value_fn: Callable[[], float | torch.Tensor],
    grad_fn: Callable[[], Sequence[torch.Tensor | None]],
    rho: float,
    steps: int = 10,
    seed: int = 0,
    step_size: float = 1.0,
    backtracks: int = 4,
) -> dict[str, Any]:
    """max L(θ + δ) − L(θ) over the relative per-tensor ball ‖δ_W‖ ≤ ρ ‖W‖ (every parameter
    tensor W; ASAM-style scale invariance per tensor), by projected gradient ascent.

    ``params`` are the live parameters; ``value_fn()`` returns L at their current values and
    ``grad_fn()`` its gradient (one tensor per parameter, None for zero). Start: δ_W =
    r_W g_W / ‖g_W‖ with r_W = ρ‖W‖ and g = ∇L(θ), the exact maximiser of the first-order model
    gᵀδ over the product of balls (SAM's perturbation, per tensor); a tensor whose first-order
    gain r_W ‖g_W‖ is at the loss's rounding level (≤ 64 eps |L(θ)|: a stationary point, where
    the computed gradient is noise) starts from a seeded random direction on its sphere instead.
    Each step takes the gradient g at θ + δ and moves δ_W <- P_W(δ_W + α r_W g_W / ‖g_W‖) (P_W
    the projection onto the ball ‖δ_W‖ ≤ r_W), with the step α chosen greedily each step: the
    best of α/2, α and 2α (capped at ``step_size``) that increases the loss; if none does, α is
    halved up to ``backtracks`` times and then the ascent stops (``stalled``). Trying the smaller
    step matters on indefinite curvature: near the maximiser a normalised step of α r_W is a
    power step with (H + σ I), σ = ‖∇‖/(α r), which is unstable when λ_min < −(λ_max + 2σ)
    (large negative curvature), and a smaller α (larger shift) restores convergence. The ascent
    is monotone, so the best value seen is the last; δ = 0 is in the ball, so ``increase`` =
    max(0, best − L(θ)). Cost per step: one gradient and up to three loss values.

    The result is a lower bound on the true maximum (a local ascent). On a quadratic with one
    tensor it reaches the trust-region maximum max_{‖δ‖≤r} gᵀδ + ½δᵀHδ (= ½ r² λ_max at a
    stationary point with λ_max > 0), which upper-bounds the mean increase over random
    directions of the same size (½ r² tr(H)/n there). The parameters are restored bit-exactly
    (copied back from saved copies, also on an exception). Tensors with W = 0 have a zero radius
    and are not perturbed.

    Returns:
        ``{"increase", "base_loss", "max_loss", "rho", "steps", "steps_taken", "stalled",
        "values" (L at the start point and after each step), "value_evaluations",
        "gradient_evaluations"}``.
    """
    if rho < 0:
        raise ValueError("rho must be >= 0")
    if steps < 0:
        raise ValueError("steps must be >= 0")
    params = list(params)
    saved = [p.detach().clone() for p in params]
    radii = [float(rho) * tensor_norm(w) for w in saved]
    counts = {"value": 0, "gradient": 0}

    def value() -> float:
        counts["value"] += 1
        with torch.no_grad():
            return float(value_fn())

    def gradient() -> Vector:
        counts["gradient"] += 1
        grads = list(grad_fn())
        return [
            torch.zeros_like(w) if g is None else g.detach().to(dtype=w.dtype, device=w.device)
            for w, g in zip(saved, grads, strict=True)
        ]

    def ascend(delta: Vector, grads: Vector, alpha: float) -> Vector:
        moved = []
        for d, g, r in zip(delta, grads, radii, strict=True):
            size = tensor_norm(g)
            moved.append(_project(d + g * (alpha * r / size), r) if size > 0 and r > 0 else d)
        return moved

    values: list[float] = []
    taken, stalled = 0, False
    try:
        base = value()
        grads = gradient()
        random_directions = gaussian_like(saved, generator(seed, _SHARPNESS_STREAM))
        delta: Vector = []
        for w, g, u, r in zip(saved, grads, random_directions, radii, strict=True):
            size = tensor_norm(g)
            # A first-order gain r‖g‖ at the loss's rounding level is noise, not a direction.
            noise = 64.0 * torch.finfo(w.dtype).eps * abs(base)
            if r == 0:
                delta.append(torch.zeros_like(w))
            elif size > 0 and r * size > noise:
                delta.append(g * (r / size))
            else:
                delta.append(u * (r / max(tensor_norm(u), 1e-300)))
        shift(params, saved, delta)
        current = value()
        values.append(current)
        alpha = float(step_size)
        for _ in range(int(steps)):
            grads = gradient()
            improved = False
            # Greedy step size: the best of α/2, α, 2α (capped at step_size), then backtracking.
            trials = sorted({alpha / 2.0, alpha, min(2.0 * alpha, float(step_size))})
            for _ in range(int(backtracks) + 1):
                best_trial: tuple[float, float, Vector] | None = None
                for size in trials:
                    trial = ascend(delta, grads, size)
                    shift(params, saved, trial)
                    candidate = value()
                    if candidate > current and (best_trial is None or candidate > best_trial[0]):
                        best_trial = (candidate, size, trial)
                if best_trial is not None:
                    current, alpha, delta = best_trial
                    improved = True
                    break
                alpha = trials[0] / 2.0
                trials = [alpha]
            taken += 1
            values.append(current)
            if not improved:
                stalled = True
                break
            shift(params, saved, delta)
    finally:
        set_to(params, saved)
    best = max(values)
    return {
        "increase": max(0.0, best - base),
        "base_loss": base,
        "max_loss": best,
        "rho": float(rho),
        "steps": int(steps),
        "steps_taken": taken,
        "stalled": stalled,
        "values": values,
        "value_evaluations": counts["value"],
        "gradient_evaluations": counts["gradient"],
    }
