"""Training a study's winner on to a plateau of its training loss, through the trainer's own
epoch loop (``Trainer.fit`` with a stopping rule and no evaluation): the flatness study's
"converged" point."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from mgrec.experiment import Experiment
from mgrec.models import Recommender
from mgrec.rng import init_seed
from mgrec.trainer import Trainer

CONVERGE = {
    "max_epochs": 50,  # training continued for at most this many epochs ...
    "window": 3,  # ... until the epoch loss fell by less than
    "tol": 1e-3,  # tol (relative) over the last `window` epochs
}


def plateau(window: int, tol: float) -> Callable[[list[float]], bool]:
    """The stopping rule on the epoch losses L[0..e]: true at the first epoch e >= window with
    (L[e - window] - L[e]) / |L[e - window]| < tol, or with a non-finite L[e]."""

    def reached(losses: list[float]) -> bool:
        if len(losses) <= window:
            return False
        before = losses[-1 - window]
        return not math.isfinite(losses[-1]) or (before - losses[-1]) < tol * abs(before)

    return reached


def continue_to_plateau(
    built: Experiment,
    model: Recommender,
    combo: Mapping[str, Any],
    seed: int,
    rule: Mapping[str, Any],
) -> dict[str, Any]:
    """Continue training ``model`` with its combination's own procedure (optimizer, learning rate
    schedule, MG setting and training-time randomness; a fresh optimizer state) until the epoch
    training loss plateaus (``plateau``), the loss is NaN, or after ``rule["max_epochs"]``
    epochs. The model scores from its parameters afterwards. Returns the rule and the epoch
    losses."""
    init_seed(seed)
    built.batches.seed(seed)
    max_epochs = int(rule["max_epochs"])
    trainer = Trainer(model, {**combo, "epochs": max_epochs})
    fit = trainer.fit(
        built.batches, None, None, stop_when=plateau(int(rule["window"]), float(rule["tol"]))
    )
    model.prepare_scoring()
    losses = [record.loss for record in fit.history]
    return {
        **dict(rule),
        "epochs": len(losses),
        "losses": losses,
        "plateau": len(losses) < max_epochs,
    }
