"""Curvature measures (``mgrec.analysis.hessian``) checked against known answers: quadratics with
a chosen spectrum (indefinite, repeated eigenvalues, float32), a small matrix-factorisation BPR
loss against its dense autograd Hessian, and the worst-case sharpness against the trust-region
maximum of a quadratic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mgrec.analysis import hessian, vectors

SHAPES = [(3, 4), (5,)]  # a weight and a bias: 17 entries
INDEFINITE = [5.0, 3.0, 1.0, 0.5, 0.2, 0.0, 0.0, 0.0, -0.1, -0.3, -1, -2, -3, -4, -5, -6, -8.0]
REPEATED = [5.0, 5.0, 5.0, 3.0, *np.linspace(-1.0, 1.0, 12), -8.0]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Quadratic:
    """H = Q diag(spectrum) Qᵀ (Q a seeded random orthogonal matrix) acting on vectors split
    into tensors of ``shapes``; ``hvp`` is the exact product."""

    def __init__(
        self,
        spectrum,
        shapes=SHAPES,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        diagonal: bool = False,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.spectrum = np.sort(np.asarray(spectrum, dtype=np.float64))[::-1]
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        n = sum(self.sizes)
        assert len(self.spectrum) == n
        q = np.eye(n) if diagonal else np.linalg.qr(rng.normal(size=(n, n)))[0]
        values = rng.permutation(self.spectrum) if diagonal else self.spectrum
        self.matrix64 = q @ np.diag(values) @ q.T
        self.matrix = torch.tensor(self.matrix64, dtype=dtype)
        self.like = [torch.zeros(s, dtype=dtype) for s in self.shapes]

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.reshape(s) for t, s in zip(flat.split(self.sizes), self.shapes, strict=True)]

    def hvp(self, vector: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.split(self.matrix @ torch.cat([v.reshape(-1) for v in vector]))


def power_iteration(hvp, like, iterations: int = 300) -> float:
    """The naive estimate (largest *magnitude* eigenvalue), for contrast."""
    v = vectors.gaussian_like(like, vectors.generator(0))
    for _ in range(iterations):
        v = vectors.scale(1.0 / vectors.norm(v), v)
        hv = list(hvp(v))
        estimate = vectors.dot(v, hv)
        v = hv
    return estimate


# --- quadratics with a known spectrum -----------------------------------------------------------


@pytest.mark.parametrize("spectrum", [INDEFINITE, REPEATED], ids=["indefinite", "repeated"])
def test_lanczos_extremes_on_a_known_spectrum(spectrum):
    quad = Quadratic(spectrum)
    # The case the algebraic extremes are for: the largest magnitude is the negative one.
    assert power_iteration(quad.hvp, quad.like) == pytest.approx(-8.0, rel=1e-6)
    result = hessian.lanczos(quad.hvp, quad.like, iterations=17, seed=1)
    assert result["converged"]
    assert result["lambda_max"] == pytest.approx(5.0, rel=1e-6)
    assert result["lambda_min"] == pytest.approx(-8.0, rel=1e-6)
    assert result["iterations"] <= 17
    # Interlacing: Ritz values lie inside the spectrum (up to rounding).
    assert all(-8.0 - 1e-9 <= x <= 5.0 + 1e-9 for x in result["ritz_values"])
    assert result["residual_max"] <= 1e-6 * 8.0 and result["residual_min"] <= 1e-6 * 8.0


def test_lanczos_without_early_stop_recovers_the_whole_spectrum_with_multiplicities():
    """tol=0 and n iterations: breakdowns restart in the complement, so T holds the full
    spectrum, repeated eigenvalues included (one Krylov space alone sees one copy of 5)."""
    quad = Quadratic(REPEATED)
    result = hessian.lanczos(quad.hvp, quad.like, iterations=17, seed=0, tol=0.0)
    assert result["exhausted"] and result["restarts"] >= 1
    np.testing.assert_allclose(result["ritz_values"], np.sort(quad.spectrum), atol=1e-10)


@pytest.mark.parametrize(
    ("spectrum", "top"),
    [(INDEFINITE, [5.0, 3.0, 1.0]), (REPEATED, [5.0, 5.0, 5.0])],
    ids=["indefinite", "repeated"],
)
def test_top_eigenvalues_are_the_largest_algebraic(spectrum, top):
    quad = Quadratic(spectrum)
    result = hessian.top_eigenvalues(quad.hvp, quad.like, k=3, iterations=17, tol=1e-6, seed=2)
    assert result["all_converged"] and result["verified"]
    np.testing.assert_allclose(result["eigenvalues"], top, rtol=1e-6)
    # With k = 4 on the repeated spectrum the fourth is the 3 behind the triple 5.
    if spectrum is REPEATED:
        four = hessian.top_eigenvalues(quad.hvp, quad.like, k=4, iterations=17, seed=2)
        np.testing.assert_allclose(four["eigenvalues"], [5.0, 5.0, 5.0, 3.0], rtol=1e-6)


def test_too_few_iterations_are_flagged_and_ritz_values_stay_inside_the_spectrum():
    quad = Quadratic(INDEFINITE)
    short = hessian.lanczos(quad.hvp, quad.like, iterations=4, seed=0)
    assert short["iterations"] == 4 and not short["converged"]
    assert -8.0 < short["lambda_min"] <= short["lambda_max"] < 5.0  # interlacing, strictly
    top = hessian.top_eigenvalues(quad.hvp, quad.like, k=3, iterations=4, seed=0)
    assert not top["all_converged"] and not top["verified"] and top["converged"] == [False] * 3
    assert all(x <= y for x, y in zip(top["eigenvalues"], [5.0, 3.0, 1.0], strict=True))
    once = hessian.top_eigenvalues(quad.hvp, quad.like, k=3, iterations=17, seed=0, verify=False)
    assert once["rounds"] == 1 and once["all_converged"] and not once["verified"]
    np.testing.assert_allclose(once["eigenvalues"], [5.0, 3.0, 1.0], rtol=1e-6)


def test_a_zero_hessian_gives_zeros():
    quad = Quadratic(INDEFINITE)

    def zero(vector):
        return [torch.zeros_like(v) for v in vector]

    result = hessian.lanczos(zero, quad.like, iterations=10)
    assert result["lambda_max"] == result["lambda_min"] == 0.0 and result["converged"]
    assert hessian.top_eigenvalues(zero, quad.like, k=2, iterations=10)["eigenvalues"] == [0, 0]
    assert hessian.hutchinson_trace(zero, quad.like, probes=3)["trace"] == 0.0
    weight = nn.Parameter(torch.randn(3, dtype=torch.float64))
    linear = vectors.double_backward_hvp(lambda: (2.0 * weight).sum(), [weight])
    assert torch.equal(linear([torch.ones(3, dtype=torch.float64)])[0], torch.zeros(3).double())


def test_top_eigenvalues_return_orthonormal_eigenvectors():
    quad = Quadratic(INDEFINITE)
    result = hessian.top_eigenvalues(
        quad.hvp, quad.like, k=3, iterations=17, seed=0, return_vectors=True
    )
    eigenvectors = result["eigenvectors"]
    gram = np.array([[vectors.dot(a, b) for b in eigenvectors] for a in eigenvectors])
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-10)
    for value, vector in zip(result["eigenvalues"], eigenvectors, strict=True):
        residual = vectors.axpy(-value, vector, quad.hvp(vector))
        assert vectors.norm(residual) <= 1e-6 * 8.0


def test_lanczos_converges_well_before_n_on_a_larger_problem():
    """n = 210 ([20, 10] weight + [10] bias): outliers 5, 3, 1.5 and -8 over a bulk in [-1, 1];
    far fewer products than n suffice for the extremes and the top 3."""
    rng = np.random.default_rng(1)
    spectrum = np.concatenate([[5.0, 3.0, 1.5], rng.uniform(-1.0, 1.0, 206), [-8.0]])
    quad = Quadratic(spectrum, shapes=[(20, 10), (10,)], seed=3)
    result = hessian.lanczos(quad.hvp, quad.like, iterations=60, seed=0)
    assert result["converged"] and result["iterations"] < 40
    assert result["lambda_max"] == pytest.approx(5.0, rel=1e-6)
    assert result["lambda_min"] == pytest.approx(-8.0, rel=1e-6)
    top = hessian.top_eigenvalues(quad.hvp, quad.like, k=3, iterations=60, seed=0)
    assert top["all_converged"] and top["hvps"] < 210
    np.testing.assert_allclose(top["eigenvalues"], [5.0, 3.0, 1.5], rtol=1e-6)


def test_float32_vectors_keep_their_dtype_and_a_float32_accuracy():
    quad = Quadratic(INDEFINITE, dtype=torch.float32)
    seen = []

    def hvp(vector):
        seen.append({v.dtype for v in vector})
        return quad.hvp(vector)

    result = hessian.lanczos(hvp, quad.like, iterations=17, seed=0, tol=1e-5)
    assert seen and all(s == {torch.float32} for s in seen)
    assert result["lambda_max"] == pytest.approx(5.0, rel=1e-5)
    assert result["lambda_min"] == pytest.approx(-8.0, rel=1e-5)
    top = hessian.top_eigenvalues(hvp, quad.like, k=3, iterations=17, tol=1e-5, seed=0)
    np.testing.assert_allclose(top["eigenvalues"], [5.0, 3.0, 1.0], rtol=1e-5)


def test_hutchinson_trace_within_three_standard_errors():
    quad = Quadratic(INDEFINITE)
    exact = float(np.sum(quad.spectrum))  # -23.7
    result = hessian.hutchinson_trace(quad.hvp, quad.like, probes=300, seed=0)
    assert result["probes"] == 300 and len(result["samples"]) == 300
    assert 0 < result["trace_stderr"] < 1.5
    assert abs(result["trace"] - exact) <= 3 * result["trace_stderr"]
    # Var[zᵀHz] = 2 Σ_{i≠j} H_ij² for Rademacher z: the sample stderr estimates it.
    h = quad.matrix64
    predicted = math.sqrt(2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)) / 300)
    assert result["trace_stderr"] == pytest.approx(predicted, rel=0.25)


def test_hutchinson_is_exact_on_a_diagonal_hessian():
    quad = Quadratic(INDEFINITE, diagonal=True)
    result = hessian.hutchinson_trace(quad.hvp, quad.like, probes=5, seed=3)
    for sample in result["samples"]:
        assert sample == pytest.approx(float(np.sum(quad.spectrum)), abs=1e-12)
    assert result["trace_stderr"] <= 1e-12
    assert math.isnan(hessian.hutchinson_trace(quad.hvp, quad.like, 1)["trace_stderr"])


# --- a matrix-factorisation BPR loss ------------------------------------------------------------


class BPR:
    """−mean log σ(⟨u, p⟩ − ⟨u, n⟩) + ½·λ(‖U‖² + ‖I‖²), 6 users, 7 items, dim 3 (float64)."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.users = nn.Parameter(0.8 * torch.randn(6, 3, generator=gen, dtype=torch.float64))
        self.items = nn.Parameter(0.8 * torch.randn(7, 3, generator=gen, dtype=torch.float64))
        self.triples = torch.stack(
            [
                torch.randint(0, 6, (24,), generator=gen),
                torch.randint(0, 7, (24,), generator=gen),
                torch.randint(0, 7, (24,), generator=gen),
            ]
        )
        self.reg = 1e-2
        self.params = [self.users, self.items]

    def loss_of(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u, p, n = self.triples
        margin = (users[u] * (items[p] - items[n])).sum(-1)
        penalty = 0.5 * self.reg * (users.pow(2).sum() + items.pow(2).sum())
        return -torch.nn.functional.logsigmoid(margin).mean() + penalty

    def loss(self) -> torch.Tensor:
        return self.loss_of(self.users, self.items)

    def dense_hessian(self) -> torch.Tensor:
        flat = torch.cat([self.users.detach().reshape(-1), self.items.detach().reshape(-1)])

        def of_flat(x: torch.Tensor) -> torch.Tensor:
            return self.loss_of(x[:18].reshape(6, 3), x[18:].reshape(7, 3))

        return torch.autograd.functional.hessian(of_flat, flat)


def test_double_backward_hvp_matches_the_dense_hessian():
    model = BPR()
    dense = model.dense_hessian()
    hvp = vectors.double_backward_hvp(model.loss, model.params)
    for draw in range(3):
        v = vectors.gaussian_like(model.params, vectors.generator(9, draw))
        expected = dense @ torch.cat([t.reshape(-1) for t in v])
        got = torch.cat([t.reshape(-1) for t in hvp(v)])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_mean_hvp_of_terms_is_the_mean_of_their_hessians():
    """A loss given as terms (one double graph at a time) has the mean of the terms' Hessians;
    a linear term adds nothing and an unused parameter gets a zero row."""
    g = torch.Generator().manual_seed(3)
    x = nn.Parameter(torch.randn(4, dtype=torch.float64, generator=g))
    unused = nn.Parameter(torch.randn(2, dtype=torch.float64, generator=g))
    a = torch.randn(4, 4, dtype=torch.float64, generator=g)
    b = torch.randn(4, 4, dtype=torch.float64, generator=g)
    terms = [
        lambda: 0.5 * x @ (a @ a.T) @ x,  # Hessian a aᵀ
        lambda: (x.sin() * b.sum(0)).sum(),  # Hessian diag(-sin x · colsums of b)
        lambda: (3.0 * x).sum(),  # linear: no curvature
    ]
    hvp = vectors.mean_double_backward_hvp(terms, [x, unused])
    v = vectors.gaussian_like([x, unused], vectors.generator(1))
    hx, hu = hvp(v)
    dense = (a @ a.T + torch.diag(-x.detach().sin() * b.sum(0))) / 3.0
    torch.testing.assert_close(hx, dense @ v[0], rtol=1e-12, atol=1e-12)
    assert torch.equal(hu, torch.zeros(2, dtype=torch.float64)) and not hx.requires_grad

    def quadratic(y: torch.Tensor) -> torch.Tensor:
        return 0.5 * y @ (a @ a.T) @ y

    (single,) = vectors.double_backward_hvp(lambda: quadratic(x), [x])(v[:1])
    expected = torch.autograd.functional.hvp(quadratic, x.detach(), v[0])[1]
    torch.testing.assert_close(single, expected, rtol=1e-12, atol=1e-12)


def test_shifted_parameters_come_back_bit_exactly():
    g = torch.Generator().manual_seed(0)
    params = [
        nn.Parameter(torch.randn(5, 3, generator=g)),
        nn.Parameter(torch.randn(3, generator=g)),
    ]
    saved = [p.detach().clone() for p in params]
    direction = vectors.gaussian_like(params, vectors.generator(2))
    vectors.shift(params, saved, direction, 0.3)
    for p, w, d in zip(params, saved, direction, strict=True):
        assert torch.equal(p.detach(), w + 0.3 * d)
    vectors.shift(params, saved, direction)  # step 1: from θ₀ again, not cumulative
    assert all(
        torch.equal(p.detach(), w + d) for p, w, d in zip(params, saved, direction, strict=True)
    )
    vectors.set_to(params, saved)
    assert all(torch.equal(p.detach(), w) for p, w in zip(params, saved, strict=True))
    assert vectors.dimension(params) == 18
    assert vectors.norm(direction) == pytest.approx(
        math.sqrt(sum(float(d.double().square().sum()) for d in direction)), rel=1e-12
    )


def test_curvature_of_bpr_matches_the_dense_spectrum():
    model = BPR()
    eigenvalues = torch.linalg.eigvalsh(model.dense_hessian()).numpy()  # ascending, 39
    assert eigenvalues[0] < 0 < eigenvalues[-1]  # indefinite: a bilinear model off its minimum
    scale = float(np.max(np.abs(eigenvalues)))
    hvp = vectors.double_backward_hvp(model.loss, model.params)

    result = hessian.lanczos(hvp, model.params, iterations=39, seed=0)
    assert result["converged"]
    assert result["lambda_max"] == pytest.approx(eigenvalues[-1], rel=1e-6)
    assert result["lambda_min"] == pytest.approx(eigenvalues[0], rel=1e-6, abs=1e-6 * scale)

    top = hessian.top_eigenvalues(hvp, model.params, k=3, iterations=39, seed=0)
    assert top["all_converged"]
    np.testing.assert_allclose(top["eigenvalues"], eigenvalues[::-1][:3], rtol=1e-6)

    trace = hessian.hutchinson_trace(hvp, model.params, probes=400, seed=0)
    exact = float(np.sum(eigenvalues))
    assert abs(trace["trace"] - exact) <= 3 * trace["trace_stderr"]
    assert trace["trace_stderr"] < 0.2 * abs(exact)


# --- worst-case sharpness -----------------------------------------------------------------------


class QuadraticLoss:
    """L(θ) = ½ θᵀ A θ + bᵀ θ over parameter tensors (A block diagonal per tensor when several
    shapes are given, so the worst case over a product of balls splits per tensor)."""

    def __init__(self, spectra, shapes, seed: int = 0, stationary: bool = True) -> None:
        rng = np.random.default_rng(seed)
        self.blocks = []
        self.params = []
        self.linear = []
        for spectrum, shape in zip(spectra, shapes, strict=True):
            n = math.prod(shape)
            q = np.linalg.qr(rng.normal(size=(n, n)))[0]
            a = q @ np.diag(spectrum) @ q.T
            theta = rng.normal(size=n)
            g = np.zeros(n) if stationary else 0.3 * rng.normal(size=n)  # gradient at θ₀
            self.blocks.append(a)
            self.params.append(nn.Parameter(torch.tensor(theta.reshape(shape))))
            self.linear.append(torch.tensor(g - a @ theta))
        self.matrices = [torch.tensor(a) for a in self.blocks]

    def loss(self) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for p, a, b in zip(self.params, self.matrices, self.linear, strict=True):
            x = p.reshape(-1)
            total = total + 0.5 * x @ a @ x + b @ x
        return total

    def gradient(self) -> list[torch.Tensor]:
        return list(torch.autograd.grad(self.loss(), self.params))

    def exact_worst_case(self, rho: float) -> float:
        """Σ_W max_{‖δ‖ ≤ ρ‖W‖} gᵀδ + ½ δᵀAδ (the trust-region subproblem, by bisection on the
        multiplier μ > λ_max of δ = (μ − A)⁻¹ g, ‖δ‖ = r)."""
        total = 0.0
        for p, a, b in zip(self.params, self.blocks, self.linear, strict=True):
            theta = p.detach().reshape(-1).numpy()
            r = rho * float(np.linalg.norm(theta))
            lam, u = np.linalg.eigh(a)
            g = u.T @ (a @ theta + b.numpy())
            if np.linalg.norm(g) < 1e-12:
                total += 0.5 * r * r * lam[-1]
                continue
            lo, hi = lam[-1], lam[-1] + np.linalg.norm(g) / r + 1.0
            for _ in range(200):
                mu = 0.5 * (lo + hi)
                lo, hi = (mu, hi) if np.linalg.norm(g / (mu - lam)) > r else (lo, mu)
            d = g / (hi - lam)
            total += float(g @ d + 0.5 * np.sum(lam * d * d))
        return total


def random_direction_increase(problem: QuadraticLoss, rho: float, draws: int) -> float:
    """The mean L(θ + δ) − L(θ) over random δ on the per-tensor spheres ‖δ_W‖ = ρ‖W‖."""
    gen = vectors.generator(123)
    base = float(problem.loss().detach())
    saved = [p.detach().clone() for p in problem.params]
    increases = []
    with torch.no_grad():
        for _ in range(draws):
            for p, w in zip(problem.params, saved, strict=True):
                u = torch.randn(w.shape, generator=gen, dtype=w.dtype)
                p.copy_(w + u * (rho * w.norm() / u.norm()))
            increases.append(float(problem.loss()) - base)
        for p, w in zip(problem.params, saved, strict=True):
            p.copy_(w)
    return float(np.mean(increases))


@pytest.mark.parametrize("stationary", [True, False], ids=["stationary", "with-gradient"])
def test_worst_case_sharpness_reaches_the_trust_region_maximum(stationary):
    rng = np.random.default_rng(5)
    spectrum = np.concatenate([[4.0, 2.5], rng.uniform(-1.0, 1.0, 17), [-6.0]])
    problem = QuadraticLoss([spectrum], [(4, 5)], seed=1, stationary=stationary)
    before = [p.detach().clone() for p in problem.params]
    rho = 0.05
    result = hessian.worst_case_sharpness(
        problem.params, problem.loss, problem.gradient, rho=rho, steps=40, seed=0
    )
    for p, w in zip(problem.params, before, strict=True):
        assert torch.equal(p.detach(), w)
    exact = problem.exact_worst_case(rho)
    if stationary:  # ½ r² λ_max with r = ρ‖θ‖
        r = rho * float(before[0].norm())
        assert exact == pytest.approx(0.5 * r * r * 4.0, rel=1e-12)
        assert result["base_loss"] == float(problem.loss().detach())
    assert result["increase"] <= exact * (1 + 1e-9)  # a feasible point: never above the max
    assert result["increase"] == pytest.approx(exact, rel=1e-4)
    assert result["increase"] >= random_direction_increase(problem, rho, draws=50)
    values = result["values"]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # monotone ascent
    assert result["max_loss"] - result["base_loss"] == pytest.approx(result["increase"])


def test_worst_case_sharpness_uses_a_ball_per_tensor():
    """Two tensors with block-diagonal curvature: the maximum over the product of balls is the
    sum of the per-tensor maxima, each with its own radius ρ‖W‖."""
    problem = QuadraticLoss(
        [[3.0, 1.0, 0.5, -0.5, -2.0, -4.0], [1.0, 0.2, -0.3, -1.0, -5.0]],
        [(2, 3), (5,)],
        seed=2,
        stationary=True,
    )
    before = [p.detach().clone() for p in problem.params]
    result = hessian.worst_case_sharpness(
        problem.params, problem.loss, problem.gradient, rho=0.1, steps=40, seed=0
    )
    assert all(torch.equal(p.detach(), w) for p, w in zip(problem.params, before, strict=True))
    assert result["increase"] == pytest.approx(problem.exact_worst_case(0.1), rel=1e-4)


def test_worst_case_sharpness_restores_parameters_on_an_exception():
    problem = QuadraticLoss([[2.0, 1.0, -1.0]], [(3,)], seed=0, stationary=False)
    before = problem.params[0].detach().clone()
    calls = []

    def failing_gradient():
        calls.append(1)
        if len(calls) > 1:  # the first ascent step, with the parameters perturbed
            raise RuntimeError("boom")
        return problem.gradient()

    with pytest.raises(RuntimeError, match="boom"):
        hessian.worst_case_sharpness(problem.params, problem.loss, failing_gradient, 0.1, 5)
    assert torch.equal(problem.params[0].detach(), before)
    zero = hessian.worst_case_sharpness(problem.params, problem.loss, problem.gradient, 0.0, 3)
    assert zero["increase"] == 0.0 and torch.equal(problem.params[0].detach(), before)


# --- reproducibility ----------------------------------------------------------------------------


def test_same_seed_same_numbers_different_seed_different_draws():
    quad = Quadratic(INDEFINITE)
    assert hessian.lanczos(quad.hvp, quad.like, 8, seed=4) == hessian.lanczos(
        quad.hvp, quad.like, 8, seed=4
    )
    assert hessian.lanczos(quad.hvp, quad.like, 8, seed=4) != hessian.lanczos(
        quad.hvp, quad.like, 8, seed=5
    )
    assert hessian.top_eigenvalues(quad.hvp, quad.like, 3, 10, seed=4) == (
        hessian.top_eigenvalues(quad.hvp, quad.like, 3, 10, seed=4)
    )
    first = hessian.hutchinson_trace(quad.hvp, quad.like, 20, seed=4)
    assert first == hessian.hutchinson_trace(quad.hvp, quad.like, 20, seed=4)
    other = hessian.hutchinson_trace(quad.hvp, quad.like, 20, seed=5)
    assert other["samples"] != first["samples"]
    # Probe i depends on (seed, i) only: more probes extend the same sequence.
    assert (
        hessian.hutchinson_trace(quad.hvp, quad.like, 30, seed=4)["samples"][:20]
        == (first["samples"])
    )
    a = vectors.rademacher_like(quad.like, vectors.generator(4, 1))
    b = vectors.rademacher_like(quad.like, vectors.generator(4, 1))
    c = vectors.rademacher_like(quad.like, vectors.generator(5, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert all(set(x.unique().tolist()) <= {-1.0, 1.0} for x in a)

    problem = QuadraticLoss([[2.0, 1.0, 0.5, -3.0]], [(4,)], seed=0, stationary=True)
    runs = [
        hessian.worst_case_sharpness(problem.params, problem.loss, problem.gradient, 0.1, 5, seed)
        for seed in (1, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[0]["values"][0] != runs[2]["values"][0]  # a random start at a stationary point
