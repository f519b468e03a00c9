"""Item-feature shifts for the robustness protocol (ours, not the paper's).

A trained model is re-evaluated with shifted image and/or text features:

- ``"noise"`` (:func:`gaussian_noise`): every entry of column j gets N(0, (σ·s_j)²) noise,
  s_j being the column's standard deviation over items (ddof=0), so σ is a level relative to
  each feature's own spread. Constant columns stay unchanged.
- ``"adjust"`` (:func:`information_adjustment`): a fraction p of the items get the feature row
  of another item, i.e. wrong but realistic content.

Both return new arrays and never modify their input; level 0 returns a bit-identical copy and
draws no random numbers. :func:`shifted_features` applies one shift to the modalities asked for,
seeded so that the same seed gives the same features.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_LEVELS = (0.1, 0.2, 0.5, 1.0)
ADJUST_FRACTIONS = (0.1, 0.3, 0.5)
KINDS = ("noise", "adjust")
MODALITY_CHOICES = ("image", "text", "both")
# Each modality's stream is child k of SeedSequence(seed), fixed per modality, so the image shift
# for "image" and for "both" is the same, and image and text never share random numbers.
STREAM = {"image": 0, "text": 1}


def _check_features(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-d [n_items, dim], got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.floating):
        raise TypeError(f"features must be floating point, got {features.dtype}")
    return features


def gaussian_noise(features: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``features`` plus N(0, (sigma·s_j)²) noise in column j; s_j = column std (ddof=0).

    The dtype is kept (float32 in, float32 out); the noise is drawn and added in float64 and
    the sum rounded once. ``sigma == 0`` returns a bit-identical copy without using ``rng``.
    """
    features = _check_features(features)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return features.copy()
    base = features.astype(np.float64)
    scale = sigma * base.std(axis=0)  # ddof=0: spread over the items actually present
    noisy = base + rng.standard_normal(base.shape) * scale
    return noisy.astype(features.dtype)


def _count(fraction: float, n: int) -> int:
    # floor(p·n), rounded first so that decimal fractions such as 0.29·100 = 28.999999999999996
    # give the intended 29 rather than 28
    return math.floor(round(fraction * n, 9))


def information_adjustment(
    features: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Give ``floor(fraction·n)`` items (drawn without replacement) another item's feature row.

    Donor rule: each changed item's donor is drawn uniformly from *all other* items (never the
    item itself; a donor may itself be a changed item), and rows are copied from the *original*
    array, so the result does not depend on the order of replacement and each changed row equals
    some other item's original row. Returns ``(new_features, changed)``, ``changed`` being the
    sorted int64 indices of the reassigned items (if two items had identical rows, a reassigned
    row can be equal to its old value). ``fraction == 0`` returns a bit-identical copy and an
    empty index array without using ``rng``.
    """
    features = _check_features(features)
    if not (math.isfinite(fraction) and 0 <= fraction <= 1):
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    n = features.shape[0]
    k = _count(fraction, n)
    out = features.copy()
    if k == 0:
        return out, np.empty(0, dtype=np.int64)
    if n < 2:
        raise ValueError("information_adjustment needs at least two items to swap content")
    changed = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    # uniform over the n-1 other items: draw from 0..n-2 and skip the item's own index
    donors = rng.integers(0, n - 1, size=k)
    donors += donors >= changed
    out[changed] = features[donors]
    return out, changed


def shifted_features(
    v_feat: np.ndarray | None,
    t_feat: np.ndarray | None,
    kind: str,
    level: float,
    modalities: str,
    seed: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Apply one shift to the image (``v_feat``) and/or text (``t_feat``) features.

    ``kind`` is ``"noise"`` (``level`` = σ) or ``"adjust"`` (``level`` = fraction p);
    ``modalities`` is ``"image"``, ``"text"`` or ``"both"``. Returns ``(v_feat, t_feat)``: the
    modalities named are replaced by shifted copies; the others, and any feature that is
    ``None``, are returned as given (the same objects, unmodified). Each modality draws from its
    own stream of ``SeedSequence(seed)`` (:data:`STREAM`): same seed, same output, and a
    modality's shift does not depend on whether the other one is shifted too.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if modalities not in MODALITY_CHOICES:
        raise ValueError(f"modalities must be one of {MODALITY_CHOICES}, got {modalities!r}")
    streams = np.random.SeedSequence(seed).spawn(len(STREAM))
    chosen = ("image", "text") if modalities == "both" else (modalities,)
    result = {"image": v_feat, "text": t_feat}
    for modality in chosen:
        features = result[modality]
        if features is None:
            continue
        rng = np.random.default_rng(streams[STREAM[modality]])
        if kind == "noise":
            result[modality] = gaussian_noise(features, level, rng)
        else:
            result[modality] = information_adjustment(features, level, rng)[0]
    return result["image"], result["text"]
