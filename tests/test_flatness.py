"""Flatness measurements: checked on a quadratic with a known Hessian, then smoke-tested on the
golden reference checkpoints (FREEDOM, LayerGCN, BM3, DualGNN)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import GOLDEN, build_golden_model
from mgrec import checkpoint, graphs
from mgrec.analysis import flatness
from mgrec.data.sampler import TrainBatches
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


@pytest.mark.parametrize("method", ["double_backward", "finite_difference", "auto"])
@pytest.mark.parametrize("top", [5.0, -6.0])
def test_power_iteration_finds_the_largest_magnitude_eigenvalue(method, top):
    model = Quadratic([top, 2.0, -1.0, 0.5])
    before = snapshot(model)
    with flatness.FixedLoss(model, NO_BATCH) as loss:
        result = flatness.top_hessian_eigenvalue(loss, model, 200, 1e-12, seed=1, method=method)
    assert_bit_equal(model, before)
    assert result["converged"]
    assert result["eigenvalue"] == pytest.approx(top, rel=1e-6)
    assert result["history"][-1] == result["eigenvalue"]
    assert result["method"] == ("double_backward" if method == "auto" else method)


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


def test_analyse_is_deterministic_restores_parameters_and_plots(tmp_path):
    def run(seed: int) -> dict:
        return flatness.analyse(
            model, NO_BATCH, [0.05, 0.2], 4, [-0.5, 0.0, 0.5], iterations=20, seed=seed
        )

    model = Quadratic([2.0, 1.0])
    before = snapshot(model)
    first, second, other = run(7), run(7), run(8)
    assert_bit_equal(model, before)
    assert json.loads(json.dumps(first)) == first == second
    assert first["sharpness"]["increases"] != other["sharpness"]["increases"]
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
    model, _, _ = build_golden_model(name, summary, tmp_path)
    state = checkpoint.read(GOLDEN / "reference" / f"{name}.pth")["state_dict"]
    checkpoint.load_strict(model, state, name)
    stored = torch.load(GOLDEN / "reference" / f"{name}-batch.pth", weights_only=True)
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


@pytest.mark.parametrize("name", ["FREEDOM", "DualGNN"])
def test_analyse_golden_checkpoint(name, summary, tmp_path):
    model, batch, reference = golden(name, summary, tmp_path)
    before = snapshot(model)
    alphas = [-0.1, -0.05, 0.0, 0.05, 0.1]
    result = flatness.analyse(model, [batch], [1e-3, 1e-2], 2, alphas, iterations=3, seed=0)
    assert_bit_equal(model, before)
    json.dumps(result)
    assert result["base_loss"] == pytest.approx(reference, rel=1e-5)
    assert all(math.isfinite(x) for x in result["sharpness"]["mean"] + result["sharpness"]["std"])
    curve = result["curve"]["loss"]
    assert all(math.isfinite(x) for x in curve)
    assert curve[2] == result["base_loss"]
    if name == "DualGNN":
        # Three epochs of training: not a minimum, but α = 0 is the lowest point sampled here.
        # (FREEDOM's checkpoint sits at negative curvature along this direction, its curve at
        # 0 a local maximum: nothing is claimed for it.)
        assert curve[2] <= min(curve) + 0.1 * (max(curve) - min(curve))
    hessian = result["hessian"]
    assert hessian["method"] == "double_backward" and len(hessian["history"]) == 3
    assert math.isfinite(hessian["eigenvalue"])


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
