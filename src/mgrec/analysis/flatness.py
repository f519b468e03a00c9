"""Flatness of the training loss around a checkpoint: does Mirror Gradient find flatter minima?

Three measurements of the same deterministic training loss L(θ) (``FixedLoss``: the mean
``calculate_loss`` over a fixed list of batches, with training-time randomness removed):

- ``sharpness``: E[L(θ + δ) - L(θ)] under random, layer-normalised perturbations of relative
  size ρ (per parameter tensor W: δ_W = ρ ‖W‖_F u / ‖u‖_F, u Gaussian);
- ``loss_curve``: the 1-D curve L(θ + α d) along a filter-normalised Gaussian direction d
  (Li et al., 2018, "Visualizing the loss landscape of neural nets");
- ``top_hessian_eigenvalue``: the largest-magnitude Hessian eigenvalue, by power iteration
  with Hessian-vector products (double backward; a central finite difference of gradients as
  the fallback).

``analyse`` bundles the three into a JSON-serialisable dict and ``plot`` draws several of them
("MG" vs "no MG") side by side. Every random draw comes from a CPU ``torch.Generator`` seeded
from ``seed``, so the numbers are the same for a seed on any device (up to the device's
arithmetic), and every function restores the parameters bit-exactly (copies, not add/subtract).

"Parameters" are the model's trainable parameters (``requires_grad``), each shared tensor once
(DualGNN/DRAGON's ``v_preference`` aliases are the branch preferences); frozen buffers
(MMGCN's random tensors) are not perturbed.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgrec.data.sampler import TrainBatches
from mgrec.models.base import Recommender

HVP_METHODS = ("auto", "double_backward", "finite_difference")
ONE_D_MODES = ("zero", "normalise")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs that are measured: trainable, each shared tensor once."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with Python, NumPy and torch seeded to ``seed``; the caller's RNG states are
    restored afterwards (a measurement must not shift the training streams)."""
    devices = [device] if device.type == "cuda" else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        # Only the generators in use: torch.manual_seed also queues every CUDA device's seed,
        # which records a stack trace per call on CPU-only runs (most of a small model's time).
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


class FixedLoss:
    """The mean training loss over fixed batches, deterministic: L(θ) = mean_b calculate_loss(b).

    The model is in train mode (the training loss, with its regularisers), but every source of
    training-time randomness is fixed, found by attribute so no model file is edited:

    - a pruned training graph (``masked_adj`` next to ``norm_adj``: FREEDOM, LayerGCN): the full
      normalised graph is used (``masked_adj = norm_adj``) and ``pre_epoch_processing`` is not
      called again;
    - any other per-epoch draw (an overridden ``pre_epoch_processing``: DualGNN/DRAGON's
      neighbour table, padded with NumPy's global RNG): drawn once here with NumPy, Python and
      torch seeded to ``seed`` (the caller's RNG states are restored), then kept;
    - a float ``dropout`` attribute (BM3's target dropout inside ``calculate_loss``): set to 0
      during each evaluation and restored after it (FREEDOM's and LayerGCN's ``dropout`` is only
      read by the pruning, which no longer runs, so zeroing it changes nothing);
    - ``nn.Dropout`` submodules (none of the nine models has one): eval mode during evaluation;
    - the stale-score cache (``training_cache``, written by MMGCN, GRCN, DualGNN, SLMRec's
      training forward) is restored after each evaluation, so later scoring is unaffected.

    VBPR, MMGCN, GRCN and SLMRec have no training-time randomness besides the batches.
    Before each batch's loss, Python, NumPy and torch are re-seeded with ``seed`` (inside a fork
    of the caller's RNG state), so any remaining draw repeats and repeated calls are
    bit-identical. ``restore()`` (or leaving the ``with`` block) puts back what was fixed.

    Args:
        model: a ``Recommender`` (or any module with ``calculate_loss(batch)``).
        batches: int64 tensors [3, B] (users, positives, negatives) or [2, B]; copied to the
            model's device.
        seed: the seed of every draw made while measuring.
    """

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor], seed: int = 0) -> None:
        if not batches:
            raise ValueError("FixedLoss needs at least one batch")
        self.model = model
        self.device = _model_device(model)
        self.batches = [b.detach().to(self.device).clone() for b in batches]
        self.seed = int(seed)
        self.fixed: list[str] = []
        self._restore_attributes: dict[str, Any] = {}
        self._fix_training_randomness()

    # --- what is fixed ------------------------------------------------------------------------

    def _fix_training_randomness(self) -> None:
        model = self.model
        if hasattr(model, "masked_adj") and hasattr(model, "norm_adj"):
            self._restore_attributes["masked_adj"] = model.masked_adj
            model.masked_adj = model.norm_adj
            self.fixed.append("masked_adj = norm_adj (full normalised graph, no edge pruning)")
        elif self._draws_per_epoch():
            before = {k: v for k, v in vars(model).items() if not k.startswith("_")}
            with _seeded(self.seed, self.device):
                model.pre_epoch_processing()
            for key, value in vars(model).items():
                if not key.startswith("_") and (key not in before or before[key] is not value):
                    self._restore_attributes[key] = before.get(key, _ABSENT)
            self.fixed.append(
                f"pre_epoch_processing drawn once with seed {self.seed} and kept "
                f"({', '.join(sorted(self._restore_attributes)) or 'nothing changed'})"
            )
        if isinstance(getattr(model, "dropout", None), float):
            self.fixed.append(f"dropout {model.dropout} -> 0 while measuring")
        if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
            self.fixed.append("nn.Dropout modules in eval mode while measuring")

    def _draws_per_epoch(self) -> bool:
        """Whether the model overrides ``pre_epoch_processing`` (the base's draws nothing)."""
        hook = getattr(type(self.model), "pre_epoch_processing", None)
        return hook is not None and hook is not Recommender.pre_epoch_processing

    def restore(self) -> None:
        """Put back what the constructor replaced (the pruned graph, the neighbour table)."""
        for key, value in self._restore_attributes.items():
            if value is _ABSENT:
                delattr(self.model, key)
            else:
                setattr(self.model, key, value)
        self._restore_attributes = {}

    def __enter__(self) -> FixedLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    # --- evaluation -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _measuring(self) -> Iterator[None]:
        """Train mode without its randomness; the model's own state is put back afterwards."""
        model = self.model
        was_training = model.training
        dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        dropout = getattr(model, "dropout", None)
        cache = getattr(model, "training_cache", None)
        model.train()
        for module in dropouts:
            module.eval()
        if isinstance(dropout, float):
            model.dropout = 0.0
        try:
            yield
        finally:
            if isinstance(dropout, float):
                model.dropout = dropout
            if hasattr(model, "training_cache"):
                model.training_cache = cache
            model.train(was_training)

    def batch_loss(self, index: int) -> torch.Tensor:
        """The loss of batch ``index`` (0-d, differentiable), seeds reset first."""
        with self._measuring(), _seeded(self.seed, self.device):
            return self.model.calculate_loss(self.batches[index]).reshape(())

    def __call__(self) -> torch.Tensor:
        """L(θ): the mean of the batch losses, 0-d, differentiable w.r.t. the parameters."""
        total = self.batch_loss(0)
        for index in range(1, len(self.batches)):
            total = total + self.batch_loss(index)
        return total / len(self.batches)

    def value(self) -> float:
        """L(θ) as a float, without building a graph."""
        with torch.no_grad():
            return float(self())

    def gradient(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """∇L(θ) w.r.t. ``params`` (zeros where a parameter gets no gradient), batch by batch so
        only one batch's graph is alive."""
        total = [torch.zeros_like(p) for p in params]
        for index in range(len(self.batches)):
            grads = torch.autograd.grad(self.batch_loss(index), params, allow_unused=True)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g)
        return [g / len(self.batches) for g in total]


class _Absent:
    """Marker: the attribute did not exist before ``pre_epoch_processing`` made it."""


_ABSENT = _Absent()


# --- directions ---------------------------------------------------------------------------------


def _generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for (seed, stream...): independent streams for each draw."""
    state = np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _gaussian_like(
    weights: Sequence[torch.Tensor], generator: torch.Generator
) -> list[torch.Tensor]:
    """One standard normal tensor per weight (drawn on the CPU in the weight's dtype)."""
    return [torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device) for w in weights]


def layer_normalised_perturbation(
    weights: Sequence[torch.Tensor], rho: float, seed: int, draw: int
) -> list[torch.Tensor]:
    """δ for draw ``draw``: per tensor W, δ_W = ρ ‖W‖_F u / ‖u‖_F with u ~ N(0, I) [shape of W].

    The unit direction depends on (seed, draw) only, not on ρ: every ρ uses the same K
    directions (common random numbers), so the sharpness-vs-ρ curve is smooth.
    """
    deltas = []
    for w, u in zip(weights, _gaussian_like(weights, _generator(seed, 1, draw)), strict=True):
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
    for w, d in zip(weights, _gaussian_like(weights, _generator(seed, 2)), strict=True):
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
        _set(params, saved)


def _set(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


def _shift(
    params: Sequence[torch.Tensor],
    saved: Sequence[torch.Tensor],
    direction: Sequence[torch.Tensor],
    step: float,
) -> None:
    """θ <- θ₀ + step · direction, from the saved θ₀ (never cumulative)."""
    with torch.no_grad():
        for p, w, d in zip(params, saved, direction, strict=True):
            p.copy_(w + step * d)


# --- the three measurements ---------------------------------------------------------------------


def sharpness(
    loss: FixedLoss, model: nn.Module, rhos: Sequence[float], draws: int, seed: int
) -> dict[str, Any]:
    """Mean and std of L(θ + δ) - L(θ) over ``draws`` layer-normalised perturbations per ρ.

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
                _shift(params, saved, delta, 1.0)
                row.append(loss.value() - base)
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
            _shift(params, saved, direction, float(alpha))
            values.append(loss.value())
    return {
        "alpha": [float(a) for a in alphas],
        "loss": values,
        "base_loss": base,
        "one_d": one_d,
    }


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def _double_backward_hvp(
    loss: FixedLoss, params: Sequence[torch.Tensor], vector: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """H v = ∇(∇L · v), batch by batch (one batch's double graph alive at a time)."""
    total = [torch.zeros_like(p) for p in params]
    for index in range(len(loss.batches)):
        grads = torch.autograd.grad(
            loss.batch_loss(index), params, create_graph=True, allow_unused=True
        )
        used = [(g, v) for g, v in zip(grads, vector, strict=True) if g is not None]
        if not used:
            continue
        inner = sum((g * v).sum() for g, v in used)
        if not inner.requires_grad:  # the gradient does not depend on θ (a linear loss)
            continue
        hv = torch.autograd.grad(inner, params, allow_unused=True)
        for acc, h in zip(total, hv, strict=True):
            if h is not None:
                acc.add_(h.detach())
    return [h / len(loss.batches) for h in total]


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
    _shift(params, saved, vector, step)
    plus = loss.gradient(params)
    _shift(params, saved, vector, -step)
    minus = loss.gradient(params)
    _set(params, saved)
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
            return _double_backward_hvp(loss, params, vector)
        if method == "finite_difference":
            norm = math.sqrt(_dot(vector, vector))
            step = (fd_step or default_fd_step(saved)) / (norm if norm > 0 else 1.0)
            return _finite_difference_hvp(loss, params, saved, vector, step)
    raise ValueError(f"method must be 'double_backward' or 'finite_difference', got {method!r}")


def top_hessian_eigenvalue(
    loss: FixedLoss,
    model: nn.Module,
    iterations: int,
    tol: float,
    seed: int,
    method: str = "auto",
    fd_step: float | None = None,
) -> dict[str, Any]:
    """The largest-magnitude eigenvalue of ∇²L(θ) over all trainable parameters, by power
    iteration: v <- Hv / ‖Hv‖ from a seeded Gaussian v, estimate λ = vᵀHv (Rayleigh quotient,
    so its sign is kept), stopping when |λ_k - λ_{k-1}| <= tol |λ_k| or after ``iterations``.

    ``method``: "double_backward" (exact HVPs through autograd), "finite_difference" (central
    difference of gradients with step ``fd_step``, see ``default_fd_step``), or "auto" (double
    backward, falling back to the finite difference if autograd cannot differentiate twice).
    Parameters with no gradient contribute zero rows. Double backward works through the
    project's custom ops (``graphs._SparseMatmul``, ``models.ops._Linear``: their backward
    passes are built from differentiable ops on saved inputs). BM3: its targets are computed
    without gradient, so double backward gives the Hessian with the targets held at their
    current values (symmetric), which is what its training gradient sees; a finite difference
    would also move the targets (a non-symmetric Jacobian), so the two differ for BM3 only.

    Returns:
        ``{"eigenvalue": float, "history": [λ_1, ...], "converged": bool, "iterations": int,
        "method": str, "fd_step": float | None, "fallback_reason": str | None}``.
    """
    if method not in HVP_METHODS:
        raise ValueError(f"method must be one of {HVP_METHODS}, got {method!r}")
    history: list[float] = []
    converged, reason = False, None
    with _perturbable(model) as (params, saved):
        vector = _gaussian_like(saved, _generator(seed, 3))
        norm = math.sqrt(_dot(vector, vector))
        vector = [v / norm for v in vector]
        chosen = "double_backward" if method == "auto" else method
        step = fd_step or default_fd_step(saved)

        def product(v: list[torch.Tensor]) -> list[torch.Tensor]:
            if chosen == "double_backward":
                return _double_backward_hvp(loss, params, v)
            return _finite_difference_hvp(loss, params, saved, v, step)  # ‖v‖ = 1

        for _ in range(int(iterations)):
            try:
                hv = product(vector)
            except RuntimeError as exc:
                if method != "auto" or chosen != "double_backward":
                    raise
                chosen, reason = "finite_difference", f"{type(exc).__name__}: {exc}"
                hv = product(vector)
            estimate = _dot(vector, hv)
            history.append(estimate)
            hv_norm = math.sqrt(_dot(hv, hv))
            if hv_norm == 0.0:  # v lies in the null space: nothing to iterate on
                converged = True
                break
            vector = [h / hv_norm for h in hv]
            if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
                converged = True
                break
    return {
        "eigenvalue": history[-1] if history else float("nan"),
        "history": history,
        "converged": converged,
        "iterations": len(history),
        "method": chosen,
        "fd_step": step if chosen == "finite_difference" else None,
        "fallback_reason": reason,
    }


# --- bundling and drawing -----------------------------------------------------------------------


def fixed_batches(sampler: TrainBatches, count: int, seed: int) -> list[torch.Tensor]:
    """The first ``count`` batches of one epoch of ``sampler`` seeded with ``seed`` (its
    generator state is restored afterwards): a fixed sample of training batches [3, B]/[2, B]."""
    state = sampler.generator.get_state()
    sampler.seed(seed)
    try:
        batches = []
        for batch in sampler:
            if len(batches) == count:
                break
            batches.append(batch.clone())
        return batches
    finally:
        sampler.generator.set_state(state)


def analyse(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    rhos: Sequence[float],
    draws: int,
    alphas: Sequence[float],
    iterations: int,
    seed: int,
    tol: float = 1e-3,
    one_d: str = "zero",
    hvp_method: str = "auto",
) -> dict[str, Any]:
    """Sharpness, the 1-D loss curve and the top Hessian eigenvalue of the fixed training loss
    over ``batches`` (see ``FixedLoss``), as plain JSON-serialisable data. The model is left as
    it was (parameters, graphs, neighbour tables, train/eval mode, RNG states).

    Returns:
        ``{"model", "n_parameters", "n_batches", "batch_rows", "seed", "fixed", "base_loss",
        "sharpness", "curve", "hessian"}`` (the last three as returned by ``sharpness``,
        ``loss_curve`` and ``top_hessian_eigenvalue``).
    """
    with FixedLoss(model, batches, seed) as loss:
        base = loss.value()
        result = {
            "model": type(model).__name__,
            "n_parameters": sum(p.numel() for _, p in trainable_parameters(model)),
            "n_batches": len(loss.batches),
            "batch_rows": [int(b.shape[1]) for b in loss.batches],
            "seed": int(seed),
            "fixed": list(loss.fixed),
            "base_loss": base,
            "sharpness": sharpness(loss, model, rhos, draws, seed),
            "curve": loss_curve(loss, model, alphas, seed, one_d),
            "hessian": top_hessian_eigenvalue(
                loss, model, iterations, tol, seed, method=hvp_method
            ),
        }
    return result


def plot(results: Mapping[str, Mapping[str, Any]], path: Path | str, title: str = "") -> None:
    """A PNG with two panels for several labelled ``analyse`` results (e.g. "MG", "no MG"):
    mean sharpness ± std vs ρ (log x when every ρ > 0) and the 1-D loss curves L(θ + α d); the
    top Hessian eigenvalue is given in each label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (sharp_axis, curve_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for label, result in results.items():
        eigen = result.get("hessian", {}).get("eigenvalue")
        name = label if eigen is None else f"{label} (λ_max {eigen:.4g})"
        sharp = result.get("sharpness")
        if sharp:
            sharp_axis.errorbar(
                sharp["rho"], sharp["mean"], yerr=sharp["std"], marker="o", capsize=3, label=name
            )
        curve = result.get("curve")
        if curve:
            curve_axis.plot(curve["alpha"], curve["loss"], marker=".", label=name)
    rhos = [r for result in results.values() for r in result.get("sharpness", {}).get("rho", [])]
    if rhos and min(rhos) > 0:
        sharp_axis.set_xscale("log")
    sharp_axis.set_xlabel("ρ (relative perturbation size)")
    sharp_axis.set_ylabel("L(θ + δ) − L(θ)")
    sharp_axis.set_title("sharpness (mean ± std over draws)", fontsize=9)
    curve_axis.set_xlabel("α")
    curve_axis.set_ylabel("training loss L(θ + α d)")
    curve_axis.set_title("1-D loss curve, filter-normalised direction", fontsize=9)
    for axis in (sharp_axis, curve_axis):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


__all__: list[str] = [
    "FixedLoss",
    "analyse",
    "default_fd_step",
    "filter_normalised_direction",
    "fixed_batches",
    "hessian_vector_product",
    "layer_normalised_perturbation",
    "loss_curve",
    "plot",
    "sharpness",
    "top_hessian_eigenvalue",
    "trainable_parameters",
]
