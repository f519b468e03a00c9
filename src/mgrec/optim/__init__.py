"""Training strategies as optimizer wrappers: ``PlainStep`` (one step per batch),
``MirrorGradient`` and ``SAM`` (sharpness-aware minimisation, or ASAM). Each wraps an optimizer
and exposes ``step(closure)``, ``start_epoch()``, ``mirrors_next()`` and ``state_dict()``, so the
trainer (or any training loop) uses one interface; ``optimizer`` is the one that steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mgrec.config import STRATEGIES, strategy_name
from mgrec.optim.mirror import MirrorGradient, PlainStep
from mgrec.optim.sam import SAM


def strategy_for(optimizer: torch.optim.Optimizer, config: Mapping[str, Any]) -> PlainStep:
    """The wrapper a combination's config asks for (``strategy_name``): ``MirrorGradient`` (its
    ``alpha1``, ``alpha2``, ``beta``, ``mg_mode``), ``SAM`` (``rho``; adaptive for asam) or
    ``PlainStep``; ``clip_grad_norm`` for each. SAM rebuilds ``optimizer`` inside the package's
    SAM: drive schedulers with the returned wrapper's ``optimizer``."""
    clip = config.get("clip_grad_norm") or None
    strategy = strategy_name(config)
    if strategy == "plain":
        return PlainStep(optimizer, clip)
    if strategy in ("sam", "asam"):
        return SAM(optimizer, rho=float(config["rho"]), adaptive=strategy == "asam", clip=clip)
    if strategy != "mg":
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return MirrorGradient(
        optimizer,
        alpha1=float(config["alpha1"]),
        alpha2=float(config["alpha2"]),
        beta=int(config["beta"]),
        mode=str(config.get("mg_mode") or "reference"),
        clip=clip,
    )


__all__ = ["SAM", "STRATEGIES", "MirrorGradient", "PlainStep", "strategy_for", "strategy_name"]
