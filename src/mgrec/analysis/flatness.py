"""Flatness of the training loss around a trained point: does Mirror Gradient find flatter minima?

Every measure is taken on one deterministic function L(θ) (``FixedLoss``): the training loss of
the model's own training procedure, regularisers included, over a fixed sample of training
batches, with the model's training-time randomness (edge pruning, target dropout, sampled
neighbours) either fixed to K draws (common random numbers: the same K draws at every θ, so L is
the Monte-Carlo estimate of the expected training loss that training minimised) or switched off
(labelled as such: not the loss training minimised, for a model that has such randomness).

- ``sharpness``: the mean increase E[L(θ + δ) − L(θ)] under random perturbations of relative
  size ρ per tensor (δ_W = ρ ‖W‖ u / ‖u‖, u Gaussian), and ``worst_sharpness``: the largest
  increase within that relative ball, found by projected gradient ascent (as SAM/ASAM);
- ``loss_curve``: L(θ + α d) along a filter-normalised Gaussian direction d (Li et al., 2018);
- ``curvature``: the largest and smallest *algebraic* Hessian eigenvalues λ_max and λ_min
  (Lanczos), the top-k with deflation, and the trace by Hutchinson's estimator with its standard
  error (``mgrec.analysis.hessian``), all from Hessian-vector products by double backward.

At an exact local minimum the Hessian is positive semi-definite. The points training reaches are
not exact minima, and a model scoring by dot products of embeddings (a bilinear form) has
directions of strongly negative curvature as soon as its per-example gradients do not all
vanish, so λ_min < 0 is the rule: read λ_max beside λ_min, and the trace as their net.

``analyse`` bundles the measures into JSON-serialisable data, ``descend`` moves to a nearby point
of small gradient of L (the sanity check's point), and ``plot`` draws labelled results side by
side. Every random draw comes from a CPU ``torch.Generator`` seeded from ``seed``, and every
function restores the parameters bit-exactly (copies, not add/subtract).

"Parameters" are the model's trainable parameters (``requires_grad``), each shared tensor once
(DualGNN/DRAGON's ``v_preference`` aliases are the branch preferences); frozen buffers
(MMGCN's random tensors) are not perturbed.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgrec.analysis import hessian, vectors
from mgrec.data.sampler import TrainBatches
from mgrec.models.base import Recommender
from mgrec.rng import seeded

ONE_D_MODES = ("zero", "normalise")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs that are measured: trainable, each shared tensor once."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


class FixedLoss:
    """A deterministic training loss L(θ) over fixed batches, regularisers included.

    ``draws`` says how the model's training-time randomness (edge pruning, target dropout,
    sampled neighbours) is treated:

    - ``draws=0``: switched off (``model.deterministic()``: full graphs, no dropout, neighbour
      lists padded without drawing): L(θ) = mean_b calculate_loss(b). This is *not* the loss
      training minimised when the model has such randomness.
    - ``draws=K >= 1``: the expected training loss, estimated with K fixed draws (common random
      numbers: the same K draws at every θ): L(θ) = mean_k mean_b calculate_loss(b) under
      ``model.training_draw(seed + k, k)``.

    A model without training randomness gives the same loss either way (and is measured once).
    The model is in train mode while measuring; its state (graphs, neighbour tables, stale-score
    cache, train/eval mode) is put back after every evaluation. Before each term the global
    generators are seeded (inside a fork of the caller's state), so repeated calls are
    bit-identical.

    Args:
        model: a ``Recommender`` (or any module with ``calculate_loss``, ``deterministic``,
            ``training_draw`` and ``randomness``).
        batches: int64 tensors [3, B] or [2, B]; copied to the model's device.
        seed: the seed of every draw made while measuring.
        draws: 0 for no randomness, else the number of fixed draws.
    """

    def __init__(
        self, model: Recommender, batches: Sequence[torch.Tensor], seed: int = 0, draws: int = 0
    ) -> None:
        if not batches:
            raise ValueError("FixedLoss needs at least one batch")
        if draws < 0:
            raise ValueError(f"draws must be >= 0, got {draws}")
        self.model = model
        self.device = _model_device(model)
        self.batches = [b.detach().to(self.device).clone() for b in batches]
        self.seed = int(seed)
        randomness = model.randomness
        self.draws = draws if randomness else 0
        if not randomness:
            self.fixed = "no training-time randomness besides the batches"
        elif self.draws == 0:
            self.fixed = f"training-time randomness switched off ({randomness})"
        else:
            self.fixed = (
                f"expected over {self.draws} fixed draws (seeds {self.seed}..{self.seed + self.draws - 1}) of: "
                f"{randomness}"
            )
        # (draw, batch index) pairs: one term of the mean each
        self.terms = [(k, b) for k in range(max(self.draws, 1)) for b in range(len(self.batches))]

    def __enter__(self) -> FixedLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to undo: every evaluation restores the model's state itself."""

    @contextlib.contextmanager
    def _measuring(self, draw: int) -> Iterator[None]:
        """Train mode with the draw's randomness fixed; the model's state put back afterwards."""
        model = self.model
        was_training = model.training
        fixing = (
            model.deterministic()
            if self.draws == 0
            else model.training_draw(self.seed + draw, draw)
        )
        model.train()
        try:
            with fixing, seeded(self.seed + draw, self.device):
                yield
        finally:
            model.train(was_training)

    def term_loss(self, term: int) -> torch.Tensor:
        """Term ``term`` of the mean (a (draw, batch) pair), 0-d and differentiable."""
        draw, index = self.terms[term]
        with self._measuring(draw):
            return self.model.calculate_loss(self.batches[index]).reshape(())

    def batch_loss(self, index: int) -> torch.Tensor:
        """The loss of batch ``index`` under the first draw (or with randomness off)."""
        return self.term_loss(index)

    def __call__(self) -> torch.Tensor:
        """L(θ): the mean of the terms, 0-d, differentiable w.r.t. the parameters."""
        total = self.term_loss(0)
        for term in range(1, len(self.terms)):
            total = total + self.term_loss(term)
        return total / len(self.terms)

    def value(self) -> float:
        """L(θ) as a float, without building a graph."""
        with torch.no_grad():
            return float(self())

    def gradient(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """∇L(θ) w.r.t. ``params`` (zeros where a parameter gets no gradient), term by term so
        only one term's graph is alive."""
        total = [torch.zeros_like(p) for p in params]
        for term in range(len(self.terms)):
            grads = torch.autograd.grad(self.term_loss(term), params, allow_unused=True)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g)
        return [g / len(self.terms) for g in total]


# --- directions ---------------------------------------------------------------------------------


def layer_normalised_perturbation(
    weights: Sequence[torch.Tensor], rho: float, seed: int, draw: int
) -> list[torch.Tensor]:
    """δ for draw ``draw``: per tensor W, δ_W = ρ ‖W‖_F u / ‖u‖_F with u ~ N(0, I) [shape of W].

    The unit direction depends on (seed, draw) only, not on ρ: every ρ uses the same K
    directions (common random numbers), so the sharpness-vs-ρ curve is smooth.
    """
    deltas = []
    units = vectors.gaussian_like(weights, vectors.generator(seed, 1, draw))
    for w, u in zip(weights, units, strict=True):
        u_norm = u.norm()
        scale = rho * w.detach().norm() / u_norm if u_norm > 0 else torch.zeros((), dtype=w.dtype)
        deltas.append(u * scale)
    return deltas


def filter_normalised_direction(
    weights: Sequence[torch.Tensor], seed: int, one_d: str = "zero"
) -> list[torch.Tensor]:
    """Li et al.'s direction d: Gaussian, then every filter rescaled to its weight's filter norm.

    A filter is a row (index along dim 0) of a weight with >= 2 dimensions: an output unit of a
    ``Linear`` [out, in], one user's or item's embedding [n, d], one slot pair of ``weight_u``
    [U, 2, 1]: d_i <- d_i ‖W_i‖ / ‖d_i‖. 1-D (and 0-d) parameters, biases here: ``one_d="zero"``
    sets d to 0 as Li et al. do for biases; ``"normalise"`` rescales the whole vector to ‖W‖.
    """
    if one_d not in ONE_D_MODES:
        raise ValueError(f"one_d must be one of {ONE_D_MODES}, got {one_d!r}")
    directions = []
    gaussian = vectors.gaussian_like(weights, vectors.generator(seed, 2))
    for w, d in zip(weights, gaussian, strict=True):
        w = w.detach()
        if w.dim() <= 1:
            if one_d == "zero":
                d = torch.zeros_like(d)
            else:
                d = d * (w.norm() / d.norm().clamp_min(torch.finfo(d.dtype).tiny))
        else:
            rows, w_rows = d.reshape(len(d), -1), w.reshape(len(w), -1)
            scale = w_rows.norm(dim=1) / rows.norm(dim=1).clamp_min(torch.finfo(d.dtype).tiny)
            d = (rows * scale.unsqueeze(1)).reshape(w.shape)
        directions.append(d)
    return directions


@contextlib.contextmanager
def _perturbable(model: nn.Module) -> Iterator[tuple[list[nn.Parameter], list[torch.Tensor]]]:
    """The trainable parameters and bit-exact copies of them, copied back on exit."""
    params = [p for _, p in trainable_parameters(model)]
    saved = [p.detach().clone() for p in params]
    try:
        yield params, saved
    finally:
        vectors.set_to(params, saved)


# --- the three measurements ---------------------------------------------------------------------


def sharpness(
    loss: FixedLoss, model: nn.Module, rhos: Sequence[float], draws: int, seed: int
) -> dict[str, Any]:
    """Mean and std of the increase ½ (L(θ + δ) + L(θ − δ)) − L(θ) over ``draws``
    layer-normalised perturbations per ρ (antithetic pairs: E[L(θ + δ)] − L(θ) for a symmetric
    δ, with the first-order term g·δ cancelled in every draw rather than only on average, so a
    small sample does not mistake a gradient for curvature).

    See ``layer_normalised_perturbation`` for δ; the same ``draws`` unit directions serve every
    ρ. ``std`` is the sample standard deviation over draws (0 for one draw).

    Returns:
        ``{"rho": [R], "mean": [R], "std": [R], "increases": [R][K], "base_loss": float,
        "draws": K}``.
    """
    if draws < 1:
        raise ValueError("draws must be >= 1")
    increases: list[list[float]] = []
    with _perturbable(model) as (params, saved):
        base = loss.value()
        for rho in rhos:
            row = []
            for draw in range(draws):
                delta = layer_normalised_perturbation(saved, float(rho), seed, draw)
                vectors.shift(params, saved, delta, 1.0)
                plus = loss.value()
                vectors.shift(params, saved, delta, -1.0)
                row.append(0.5 * (plus + loss.value()) - base)
            increases.append(row)
    return {
        "rho": [float(r) for r in rhos],
        "mean": [float(np.mean(row)) for row in increases],
        "std": [float(np.std(row, ddof=1)) if len(row) > 1 else 0.0 for row in increases],
        "increases": increases,
        "base_loss": base,
        "draws": int(draws),
    }


def loss_curve(
    loss: FixedLoss, model: nn.Module, alphas: Sequence[float], seed: int, one_d: str = "zero"
) -> dict[str, Any]:
    """L(θ + α d) for each α, d the filter-normalised direction (``filter_normalised_direction``).

    Returns:
        ``{"alpha": [A], "loss": [A], "base_loss": L(θ), "one_d": one_d}``.
    """
    values = []
    with _perturbable(model) as (params, saved):
        base = loss.value()
        direction = filter_normalised_direction(saved, seed, one_d)
        for alpha in alphas:
            vectors.shift(params, saved, direction, float(alpha))
            values.append(loss.value())
    return {
        "alpha": [float(a) for a in alphas],
        "loss": values,
        "base_loss": base,
        "one_d": one_d,
    }


def default_fd_step(saved: Sequence[torch.Tensor]) -> float:
    """The finite-difference step ε along a unit vector: eps^(1/3) · max(1, rms(θ)).

    eps^(1/3) (about 5e-3 in float32) balances the O(ε²) truncation error of the central
    difference against its O(eps/ε) rounding error; rms(θ) = ‖θ‖ / sqrt(n) scales it to the
    typical weight size.
    """
    n = sum(w.numel() for w in saved)
    rms = math.sqrt(sum(float(w.double().pow(2).sum()) for w in saved) / max(n, 1))
    eps = torch.finfo(saved[0].dtype).eps if saved else torch.finfo(torch.float32).eps
    return eps ** (1.0 / 3.0) * max(1.0, rms)


def _finite_difference_hvp(
    loss: FixedLoss,
    params: Sequence[torch.Tensor],
    saved: Sequence[torch.Tensor],
    vector: Sequence[torch.Tensor],
    step: float,
) -> list[torch.Tensor]:
    """H v ≈ (∇L(θ + εv) - ∇L(θ - εv)) / 2ε (central difference, error O(ε²) + rounding)."""
    vectors.shift(params, saved, vector, step)
    plus = loss.gradient(params)
    vectors.shift(params, saved, vector, -step)
    minus = loss.gradient(params)
    vectors.set_to(params, saved)
    return [(a - b) / (2.0 * step) for a, b in zip(plus, minus, strict=True)]


def hessian_vector_product(
    loss: FixedLoss,
    model: nn.Module,
    vector: Sequence[torch.Tensor],
    method: str = "double_backward",
    fd_step: float | None = None,
) -> list[torch.Tensor]:
    """H v for ``vector`` (one tensor per trainable parameter), by double backward or by a
    central finite difference of gradients (step ``fd_step``, default ``default_fd_step``, scaled
    by 1/‖v‖ so the parameters move by ε). Parameters are restored bit-exactly."""
    with _perturbable(model) as (params, saved):
        if method == "double_backward":
            return hvp_of(loss, params)(list(vector))
        if method == "finite_difference":
            norm = vectors.norm(vector)
            step = (fd_step or default_fd_step(saved)) / (norm if norm > 0 else 1.0)
            return _finite_difference_hvp(loss, params, saved, vector, step)
    raise ValueError(f"method must be 'double_backward' or 'finite_difference', got {method!r}")


def hvp_of(
    loss: FixedLoss, params: Sequence[torch.Tensor]
) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """H v of L at the current parameters, by double backward term by term (one term's double
    graph alive at a time)."""
    terms = [functools.partial(loss.term_loss, term) for term in range(len(loss.terms))]
    return vectors.mean_double_backward_hvp(terms, params)


def curvature(
    loss: FixedLoss,
    model: nn.Module,
    iterations: int,
    top_k: int,
    probes: int,
    seed: int,
    tol: float = 1e-3,
) -> dict[str, Any]:
    """λ_max and λ_min (Lanczos, ``iterations`` products), the ``top_k`` largest eigenvalues
    (Lanczos with deflation) and the trace (Hutchinson, ``probes`` Rademacher probes) of ∇²L(θ).

    Returns:
        ``{"lambda_max", "lambda_min", "top_eigenvalues", "trace", "trace_stderr", "lanczos":
        {converged flags, residuals, products}, "top": {...}, "probes"}``.
    """
    with _perturbable(model) as (params, _):
        product = hvp_of(loss, params)
        extremes = hessian.lanczos(product, params, iterations, seed=seed, tol=tol)
        top = hessian.top_eigenvalues(product, params, top_k, iterations, tol=tol, seed=seed)
        trace = hessian.hutchinson_trace(product, params, probes, seed=seed)
    return {
        "lambda_max": extremes["lambda_max"],
        "lambda_min": extremes["lambda_min"],
        "top_eigenvalues": top["eigenvalues"],
        "trace": trace["trace"],
        "trace_stderr": trace["trace_stderr"],
        "lanczos": {
            k: extremes[k]
            for k in (
                "converged_max",
                "converged_min",
                "residual_max",
                "residual_min",
                "iterations",
            )
        },
        "top": {k: top[k] for k in ("converged", "verified", "hvps")},
        "probes": int(probes),
    }


def worst_sharpness(
    loss: FixedLoss, model: nn.Module, rhos: Sequence[float], steps: int, seed: int
) -> dict[str, Any]:
    """The largest increase of L within the relative per-tensor ball ‖δ_W‖ ≤ ρ ‖W‖, for each ρ,
    by ``steps`` steps of projected gradient ascent (``hessian.worst_case_sharpness``)."""
    with _perturbable(model) as (params, _):
        runs = [
            hessian.worst_case_sharpness(
                params,
                loss.value,
                lambda: loss.gradient(params),
                float(rho),
                steps=steps,
                seed=seed,
            )
            for rho in rhos
        ]
    return {
        "rho": [float(r) for r in rhos],
        "increase": [run["increase"] for run in runs],
        "steps": int(steps),
        "stalled": [bool(run["stalled"]) for run in runs],
    }


def descend(loss: FixedLoss, model: nn.Module, steps: int, reduce: float = 1e-2) -> dict[str, Any]:
    """Full-batch gradient descent on L with a backtracking (Armijo) step, from the current
    parameters: at most ``steps`` steps, stopping once the gradient norm is ``reduce`` times
    its starting value (a point of small gradient near the start, not a march towards a
    far-away infimum). The parameters are left at the end point (the sanity check measures
    there).

    Returns ``{"losses": [...], "gradient_norms": [...]}`` (one entry per point visited).
    """
    params = [p for _, p in trainable_parameters(model)]
    step = 1.0
    losses, norms = [loss.value()], []
    for _ in range(int(steps)):
        grad = loss.gradient(params)
        norm2 = vectors.dot(grad, grad)
        norms.append(math.sqrt(norm2))
        if norms[-1] <= reduce * norms[0]:
            break
        start = [p.detach().clone() for p in params]
        while True:  # shrink until the decrease is at least a tenth of the linear prediction
            vectors.set_to(params, [w - step * g for w, g in zip(start, grad, strict=True)])
            value = loss.value()
            if value <= losses[-1] - 0.1 * step * norm2 or step < 1e-12:
                break
            step *= 0.5
        losses.append(value)
        step *= 2.0  # try a longer step next time
    return {"losses": losses, "gradient_norms": norms}


# --- bundling and drawing -----------------------------------------------------------------------


def fixed_batches(sampler: TrainBatches, count: int, seed: int) -> list[torch.Tensor]:
    """The first ``count`` batches of one epoch of ``sampler`` seeded with ``seed`` (its
    generator state is restored afterwards): a fixed sample of training batches [3, B]/[2, B]."""
    state = sampler.generator.get_state()
    sampler.seed(seed)
    try:
        batches: list[torch.Tensor] = []
        for batch in sampler:
            if len(batches) == count:
                break
            batches.append(batch.clone())
        return batches
    finally:
        sampler.generator.set_state(state)


SETTINGS: dict[str, Any] = {
    "draws": 4,  # K fixed draws of the training randomness (0: switched off)
    "batches": 4,  # fixed training batches
    "rhos": [0.01, 0.02, 0.05, 0.1],  # relative perturbation sizes
    "sharpness_draws": 10,  # random perturbations per rho (mean sharpness)
    "worst_steps": 10,  # projected gradient-ascent steps per rho (worst-case sharpness)
    "alphas": [round(float(a), 2) for a in np.linspace(-1.0, 1.0, 21)],  # 1-D curve points
    "lanczos_iterations": 20,  # Hessian-vector products per Lanczos run
    "top_k": 3,  # top eigenvalues, by Lanczos with deflation
    "probes": 20,  # Hutchinson probes for the trace
    "one_d": "zero",  # 1-D parameters (biases) in the curve direction: zero, as Li et al.
}


def analyse(
    model: Recommender, sample: Sequence[torch.Tensor], seed: int, **settings: Any
) -> dict[str, Any]:
    """Every measure of the fixed training loss over the batches ``sample`` (see ``FixedLoss`` and
    ``SETTINGS`` for the knobs, overridable here), as plain JSON-serialisable data. The model is
    left as it was (parameters, graphs, neighbour tables, train/eval mode, RNG states).

    Returns:
        ``{"model", "n_parameters", "settings" (K draws, batches and their rows, seed, ...),
        "fixed", "base_loss", "gradient_norm", "lambda_max", "lambda_min", "top_eigenvalues",
        "trace", "trace_stderr", "rho", "sharpness_mean", "sharpness_worst", "alpha", "loss",
        "details": {sharpness, worst, curvature, curve}}``.
    """
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown flatness settings: {sorted(unknown)}")
    knobs = {**SETTINGS, **settings}
    loss = FixedLoss(model, sample, seed, draws=int(knobs["draws"]))
    rhos, alphas = [float(r) for r in knobs["rhos"]], [float(a) for a in knobs["alphas"]]
    with _perturbable(model) as (params, _):
        base = loss.value()
        gradient_norm = math.sqrt(vectors.dot(*[loss.gradient(params)] * 2))
    mean = sharpness(loss, model, rhos, int(knobs["sharpness_draws"]), seed)
    worst = worst_sharpness(loss, model, rhos, int(knobs["worst_steps"]), seed)
    curve = loss_curve(loss, model, alphas, seed, str(knobs["one_d"]))
    curv = curvature(
        loss,
        model,
        int(knobs["lanczos_iterations"]),
        int(knobs["top_k"]),
        int(knobs["probes"]),
        seed,
    )
    return {
        "model": type(model).__name__,
        "n_parameters": sum(p.numel() for _, p in trainable_parameters(model)),
        "settings": {
            **knobs,
            "draws": loss.draws,
            "seed": int(seed),
            "batch_rows": [int(b.shape[1]) for b in loss.batches],
        },
        "fixed": loss.fixed,
        "base_loss": base,
        "gradient_norm": gradient_norm,
        "lambda_max": curv["lambda_max"],
        "lambda_min": curv["lambda_min"],
        "top_eigenvalues": curv["top_eigenvalues"],
        "trace": curv["trace"],
        "trace_stderr": curv["trace_stderr"],
        "rho": rhos,
        "sharpness_mean": mean["mean"],
        "sharpness_worst": worst["increase"],
        "alpha": alphas,
        "loss": curve["loss"],
        "details": {"sharpness": mean, "worst": worst, "curvature": curv, "curve": curve},
    }


def plot(results: Mapping[str, Mapping[str, Any]], path: Path | str, title: str = "") -> None:
    """A PNG with three panels for labelled ``analyse`` results (e.g. "MG seed 1 winner"):
    mean (solid) and worst-case (dashed) sharpness vs ρ, the 1-D loss curves L(θ + α d) − L(θ),
    and λ_min, λ_max per result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mgrec.report import save_figure

    fig, (sharp_axis, curve_axis, eigen_axis) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, result) in enumerate(results.items()):
        color = colors[index % len(colors)]
        sharp_axis.plot(result["rho"], result["sharpness_mean"], "o-", color=color, label=label)
        sharp_axis.plot(result["rho"], result["sharpness_worst"], "s--", color=color)
        curve = [v - result["base_loss"] for v in result["loss"]]
        curve_axis.plot(result["alpha"], curve, ".-", color=color, label=label)
        eigen_axis.plot(
            [result["lambda_min"], result["lambda_max"]], [index, index], "-|", color=color
        )
    if results and min(r for result in results.values() for r in result["rho"]) > 0:
        sharp_axis.set_xscale("log")
    sharp_axis.set_xlabel("ρ (relative perturbation size)")
    sharp_axis.set_ylabel("L(θ + δ) − L(θ)")
    sharp_axis.set_title("sharpness: mean (solid) and worst-case (dashed)", fontsize=9)
    curve_axis.set_xlabel("α")
    curve_axis.set_ylabel("L(θ + α d) − L(θ)")
    curve_axis.set_title("1-D loss curve, filter-normalised direction", fontsize=9)
    eigen_axis.set_yticks(range(len(results)), list(results), fontsize=7)
    eigen_axis.axvline(0.0, color="grey", linewidth=0.5)
    eigen_axis.set_xscale("symlog")
    eigen_axis.set_xlabel("Hessian eigenvalue")
    eigen_axis.set_title("[λ_min, λ_max]", fontsize=9)
    for axis in (sharp_axis, curve_axis):
        axis.grid(alpha=0.3)
    if results:
        curve_axis.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(path))


__all__: list[str] = [
    "SETTINGS",
    "FixedLoss",
    "analyse",
    "curvature",
    "default_fd_step",
    "descend",
    "filter_normalised_direction",
    "fixed_batches",
    "hessian_vector_product",
    "layer_normalised_perturbation",
    "loss_curve",
    "plot",
    "sharpness",
    "trainable_parameters",
    "worst_sharpness",
]
