"""Flatness measurements: checked on a quadratic with a known Hessian, then smoke-tested on the
golden reference checkpoints (FREEDOM, LayerGCN, BM3, DualGNN)."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import build_golden_model, golden_batch, golden_experiment, reference_state, trained
from mgrec import graphs
from mgrec.analysis import flatness
from mgrec.data.sampler import TrainBatches
from mgrec.models import get, names
from mgrec.models.ops import _Linear

NO_BATCH = [torch.zeros(3, 1, dtype=torch.long)]  # the quadratic ignores its batch


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: thread synchronisation costs more than it saves (and on a busy
    machine intra-op threads spin), so measure with one thread; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Quadratic(nn.Module):
    """L(θ) = 0.5 (θ - θ*)ᵀ H (θ - θ*), θ = [vec(W) [3x4] ; b [5]] (17 entries, float64), with
    the parameters at the minimum θ* and H = Q diag(spectrum) Qᵀ."""

    def __init__(self, spectrum: list[float], seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.weight = nn.Parameter(torch.tensor(rng.normal(size=(3, 4)) + 1.0))
        self.bias = nn.Parameter(torch.tensor(rng.normal(size=5)))
        self.register_buffer("centre", torch.cat([self.weight.flatten(), self.bias]).detach())
        q, _ = np.linalg.qr(rng.normal(size=(17, 17)))
        values = np.concatenate([spectrum, np.full(17 - len(spectrum), 0.1)])
        self.register_buffer("hessian", torch.tensor(q @ np.diag(values) @ q.T))

    randomness = ""  # no training-time randomness: the model API's two contexts do nothing
    deterministic = staticmethod(contextlib.nullcontext)
    training_draw = staticmethod(lambda seed, draw=0: contextlib.nullcontext())

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.weight.flatten(), self.bias]) - self.centre
        return 0.5 * x @ self.hessian @ x

    def curvature(self, direction: list[torch.Tensor]) -> float:
        """0.5 dᵀ H d for d given per parameter (weight, bias)."""
        d = torch.cat([t.flatten() for t in direction])
        return float(0.5 * d @ self.hessian @ d)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# --- the quadratic ------------------------------------------------------------------------------


def test_sharpness_matches_each_draw_and_the_expectation():
    model = Quadratic([3.0, 2.0, 1.0])
    before = snapshot(model)
    rhos, draws = [0.01, 0.1], 200
    with flatness.FixedLoss(model, NO_BATCH) as loss:
        result = flatness.sharpness(loss, model, rhos, draws, seed=5)
    assert_bit_equal(model, before)
    assert result["base_loss"] == 0.0
    weights = [before["weight"], before["bias"]]
    for r, rho in enumerate(rhos):
        exact = [
            model.curvature(flatness.layer_normalised_perturbation(weights, rho, 5, k))
            for k in range(draws)
        ]
        np.testing.assert_allclose(result["increases"][r], exact, rtol=1e-9)
        assert result["mean"][r] == pytest.approx(np.mean(exact), rel=1e-9)
        assert result["std"][r] == pytest.approx(np.std(exact, ddof=1), rel=1e-7)
        # E[u uᵀ] = I/n for a unit u uniform on the sphere, per tensor (independent tensors):
        # E[0.5 δᵀHδ] = 0.5 ρ² Σ_t ‖W_t‖² tr(H_tt) / n_t.
        blocks = [(slice(0, 12), weights[0]), (slice(12, 17), weights[1])]
        expected = sum(
            0.5 * rho**2 * float(w.norm() ** 2) * float(model.hessian[s, s].trace()) / w.numel()
            for s, w in blocks
        )
        standard_error = result["std"][r] / math.sqrt(draws)
        assert abs(result["mean"][r] - expected) < 5 * standard_error
    # Common random numbers: the same unit directions at every ρ, so increases scale as ρ².
    np.testing.assert_allclose(
        np.array(result["increases"][1]), 100 * np.array(result["increases"][0]), rtol=1e-6
    )


def test_curvature_of_a_quadratic_with_a_negative_dominant_eigenvalue():
    # Largest magnitude -6: the algebraic extremes and the trace must come out, not |λ|max.
    spectrum = [5.0, 2.0, -1.0, -6.0]
    model = Quadratic(spectrum)
    before = snapshot(model)
    with flatness.FixedLoss(model, NO_BATCH) as loss:
        result = flatness.curvature(
            loss, model, iterations=17, top_k=3, probes=400, seed=1, tol=1e-9
        )
    assert_bit_equal(model, before)
    assert result["lambda_max"] == pytest.approx(5.0, rel=1e-6)
    assert result["lambda_min"] == pytest.approx(-6.0, rel=1e-6)
    assert result["top_eigenvalues"] == pytest.approx([5.0, 2.0, 0.1], rel=1e-6)
    exact_trace = sum(spectrum) + 0.1 * (17 - len(spectrum))
    assert abs(result["trace"] - exact_trace) < 4 * result["trace_stderr"]


def test_worst_case_sharpness_dominates_the_mean_and_bounds_the_quadratic(tmp_path):
    model = Quadratic([3.0, 1.0])
    with flatness.FixedLoss(model, NO_BATCH) as loss:
        worst = flatness.worst_sharpness(loss, model, [0.05], steps=30, seed=0)
        mean = flatness.sharpness(loss, model, [0.05], 50, seed=0)
    # At the minimum the worst case lies between perturbing the best single tensor alone
    # (0.5 r_t^2 lambda_max of its diagonal block) and 0.5 lambda_max(H) sum_t r_t^2.
    blocks = [(slice(0, 12), model.weight), (slice(12, 17), model.bias)]
    radii = [0.05 * float(w.norm()) for _, w in blocks]
    lower = max(
        0.5 * r**2 * float(torch.linalg.eigvalsh(model.hessian[s, s])[-1])
        for (s, _), r in zip(blocks, radii, strict=True)
    )
    upper = 0.5 * float(torch.linalg.eigvalsh(model.hessian)[-1]) * sum(r**2 for r in radii)
    assert mean["mean"][0] <= worst["increase"][0] <= upper * (1 + 1e-9)
    assert worst["increase"][0] >= lower * (1 - 1e-6)


def test_loss_curve_is_the_exact_quadratic_along_a_filter_normalised_direction():
    model = Quadratic([4.0, 1.0])
    before = snapshot(model)
    alphas = [-1.0, -0.25, 0.0, 0.5, 2.0]
    with flatness.FixedLoss(model, NO_BATCH) as loss:
        curve = flatness.loss_curve(loss, model, alphas, seed=3)
    assert_bit_equal(model, before)
    weights = [before["weight"], before["bias"]]
    d = flatness.filter_normalised_direction(weights, seed=3)
    expected = [a * a * model.curvature(d) for a in alphas]
    np.testing.assert_allclose(curve["loss"], expected, rtol=1e-9, atol=1e-15)
    assert curve["loss"][2] == 0.0 and curve["one_d"] == "zero"
    # Each filter (row) of d has the norm of θ's row; the 1-D bias direction is zeroed ...
    np.testing.assert_allclose(d[0].norm(dim=1), weights[0].norm(dim=1), rtol=1e-12)
    assert not d[1].any()
    # ... or, on request, scaled as a whole to the bias's norm.
    d_all = flatness.filter_normalised_direction(weights, seed=3, one_d="normalise")
    assert torch.equal(d_all[0], d[0])
    assert float(d_all[1].norm()) == pytest.approx(float(weights[1].norm()), rel=1e-12)


SMALL = {"rhos": [0.05, 0.2], "sharpness_draws": 4, "alphas": [-0.5, 0.0, 0.5], "worst_steps": 3,
         "lanczos_iterations": 10, "top_k": 2, "probes": 4}  # fmt: skip
REQUIRED = {"lambda_max", "lambda_min", "top_eigenvalues", "trace", "trace_stderr", "rho",
            "sharpness_mean", "sharpness_worst", "alpha", "loss", "settings", "fixed"}  # fmt: skip


def test_analyse_is_deterministic_restores_parameters_and_plots(tmp_path):
    def run(seed: int) -> dict:
        return flatness.analyse(model, NO_BATCH, seed, **SMALL)

    model = Quadratic([2.0, 1.0])
    before = snapshot(model)
    first, second, other = run(7), run(7), run(8)
    assert_bit_equal(model, before)
    assert json.loads(json.dumps(first)) == first == second
    assert set(first) >= REQUIRED and len(first["sharpness_worst"]) == 2
    assert first["settings"]["seed"] == 7 and first["settings"]["draws"] == 0  # no randomness
    assert first["details"]["sharpness"]["increases"] != other["details"]["sharpness"]["increases"]
    assert first["model"] == "Quadratic" and first["n_parameters"] == 17
    path = tmp_path / "flatness.png"
    flatness.plot({"MG": first, "no MG": other}, path, title="quadratic")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fixed_loss_leaves_the_callers_random_streams_alone():
    model = Quadratic([1.0])
    torch.manual_seed(0)
    np.random.seed(0)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    flatness.FixedLoss(model, NO_BATCH, seed=11).value()
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


# --- the golden reference checkpoints -----------------------------------------------------------


def golden(name: str, summary: dict, tmp_path) -> tuple[nn.Module, torch.Tensor, float]:
    """The reference's trained model, its fixture batch and the loss the reference computed on
    it with training-time randomness removed."""
    model = trained(name, summary, tmp_path)
    stored = golden_batch(name)
    return model, stored["batch"], stored["loss"]


@pytest.mark.parametrize("name", ["FREEDOM", "LayerGCN", "BM3", "DualGNN"])
def test_fixed_loss_is_bit_identical_and_matches_the_reference(name, summary, tmp_path):
    model, batch, reference = golden(name, summary, tmp_path)
    model.eval()
    kept = {
        key: getattr(model, key)
        for key in ("masked_adj", "neighbours", "dropout", "training_cache")
        if hasattr(model, key)
    }
    with flatness.FixedLoss(model, [batch, batch.flip(1)], seed=3) as loss:
        first, second = loss(), loss()
        assert torch.equal(first, second)
        assert first.requires_grad and first.shape == ()
        assert loss.batch_loss(0).item() == pytest.approx(reference, rel=1e-5)
        assert loss.fixed
        assert getattr(model, "dropout", 0.0) == kept.get("dropout", 0.0)
    assert not model.training
    for key, value in kept.items():  # the pruned graph / neighbour table / cache are put back
        assert getattr(model, key) is value, key


def test_bm3_loss_is_random_without_fixing(summary, tmp_path):
    model, batch, _ = golden("BM3", summary, tmp_path)
    model.train()
    with torch.no_grad():
        assert model.calculate_loss(batch) != model.calculate_loss(batch)


ALPHAS = [-0.04, -0.02, -0.01, 0.0, 0.01, 0.02, 0.04]
# Models whose measured loss does not have the property this sanity check relies on (a descent
# on it reaches a point where it is locally smooth and minimal), with the reason.
NOT_A_SMOOTH_DESCENT = {
    "SELFCFED_LGN": "its targets are stop-gradient (as the reference's): training follows a "
    "pseudo-gradient, not the gradient of the loss measured, so a descent on that loss's "
    "gradient need not stop where the worst-case sharpness is positive",
    "LATTICE": "its learned item graph keeps each row's top-k: a move of radius 1e-3 changes "
    "which neighbours are kept, so the loss is only piecewise smooth and the mean sharpness at "
    "the smallest radius can dip below zero (by ~1e-7)",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_at_a_point_of_small_gradient_the_curve_bottoms_at_zero_and_sharpness_is_positive(
    name, summary, tmp_path
):
    if not get(name).trainable:
        pytest.skip(f"{name} trains nothing")
    if name in NOT_A_SMOOTH_DESCENT:
        pytest.skip(f"{name}: {NOT_A_SMOOTH_DESCENT[name]}")
    # The sanity check of the instrument: descend on the very loss that is measured (K = 2 fixed
    # draws of the model's training randomness, regularisers included) to a point of small
    # gradient; there the 1-D curve must bottom out near alpha = 0 and the mean sharpness must
    # be >= 0. An instrument measuring another function (e.g. the full graph of a model
    # trained on pruned ones) fails this.
    # The whole training split (4 batches of 512): on one small batch a BPR loss without an
    # embedding-norm term (MMGCN, FREEDOM) is soon near zero, where it has no minimum to find.
    built = golden_experiment(name, summary, tmp_path, train_batch_size=512)
    model = built.build_model(reference_state(name), name)
    model.prepare_scoring()
    batches = flatness.fixed_batches(built.batches, 8, seed=0)
    draws = 2 if model.randomness else 0
    loss = flatness.FixedLoss(model, batches, seed=0, draws=draws)
    descent = flatness.descend(loss, model, steps=60, reduce=1e-2)
    assert descent["losses"][-1] < descent["losses"][0]
    result = flatness.analyse(
        model, batches, 0, draws=draws, rhos=[0.001, 0.005, 0.02], sharpness_draws=8,
        alphas=ALPHAS, worst_steps=3, lanczos_iterations=10, top_k=1, probes=4,
    )  # fmt: skip
    assert result["base_loss"] == pytest.approx(descent["losses"][-1], rel=1e-6)
    curve = result["loss"]
    lowest = ALPHAS[curve.index(min(curve))]
    assert abs(lowest) <= 0.02, (lowest, curve)
    assert curve[0] > curve[3] and curve[-1] > curve[3]  # the ends rise above the centre
    assert all(value >= 0.0 for value in result["sharpness_mean"]), result["sharpness_mean"]
    assert all(
        worst >= mean
        for worst, mean in zip(result["sharpness_worst"], result["sharpness_mean"], strict=True)
    )
    assert result["lambda_max"] > 0 and result["lambda_min"] <= result["lambda_max"]


def test_double_backward_through_the_custom_ops_matches_finite_differences(summary, tmp_path):
    # FREEDOM's loss goes through both graphs._SparseMatmul and ops._Linear.
    model, batch, _ = golden("FREEDOM", summary, tmp_path)
    with flatness.FixedLoss(model, [batch]) as loss:
        params = [p for _, p in flatness.trainable_parameters(model)]
        generator = torch.Generator().manual_seed(0)
        vector = [torch.randn(p.shape, generator=generator) for p in params]
        exact = flatness.hessian_vector_product(loss, model, vector, "double_backward")
        approx = flatness.hessian_vector_product(
            loss, model, vector, "finite_difference", fd_step=1e-2
        )
    error = sum(float((a - b).pow(2).sum()) for a, b in zip(exact, approx, strict=True))
    scale = sum(float(b.pow(2).sum()) for b in approx)
    assert math.sqrt(error / scale) < 1e-2


def test_fixed_batches_are_reproducible_and_leave_the_sampler_alone(summary, tmp_path):
    _, data, combo = build_golden_model("VBPR", summary, tmp_path)
    sampler = TrainBatches(data.train, data.n_items, 100)
    sampler.seed(42)
    state = sampler.generator.get_state()
    first = flatness.fixed_batches(sampler, 3, seed=1)
    second = flatness.fixed_batches(sampler, 3, seed=1)
    assert len(first) == 3 and all(b.shape == (3, 100) for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(sampler.generator.get_state(), state)


def test_custom_ops_support_double_backward():
    # Power iteration differentiates through the gradient: the project's custom autograd ops
    # must build their backward from differentiable operations (checked in float64).
    generator = torch.Generator().manual_seed(0)
    dense = torch.rand(5, 4, generator=generator, dtype=torch.float64)
    dense[dense < 0.5] = 0.0
    op = graphs.SparseOp(dense.to_sparse())
    x = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: (op @ x).tanh(), (x,))
    inputs = [
        torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
        for shape in ((6, 4), (3, 4), (3,))
    ]
    assert torch.autograd.gradgradcheck(lambda x, w, b: _Linear.apply(x, w, b).tanh(), inputs)
