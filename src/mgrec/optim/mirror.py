"""Mirror Gradient as a wrapper around any ``torch.optim.Optimizer``.

The reference trainer's rule (``mode="reference"``), for the batch index ``b`` of an epoch
(restarting at 0 with ``start_epoch``)::

    b % beta == 0 (a mirror batch):
        (alpha1 * L(theta)).backward(); step(); zero_grad()
        (-alpha2 * L(theta')).backward(); [clip]; step()      # the mirror step: sign flipped
    otherwise:
        L(theta).backward(); [clip]; step()

where the optimizer's own update rule (Adam, SGD, ...) makes each step. The paper's Algorithm 1
(``mode="algorithm1"``) instead takes plain gradient steps at the optimizer's learning rate and
triggers on the global step ``t % beta == 0`` (``t`` counting batches from 1 across epochs)::

    theta' = theta - alpha1 * lr * grad L(theta);   theta = theta' + alpha2 * lr * grad L(theta')

Usage, in any training loop::

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mg = MirrorGradient(optimizer, alpha1=1.0, alpha2=0.2, beta=3)
    for epoch in range(epochs):
        mg.start_epoch()
        for batch in loader:
            loss = mg.step(lambda: model.loss(batch))   # the closure computes, never backwards

``step`` zeroes the gradients, back-propagates and steps; on a mirror batch it calls the
closure a second time (after the first step) for the mirror pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.nn.utils import clip_grad_norm_

MODES = ("reference", "algorithm1")
Closure = Callable[[], torch.Tensor]


class PlainStep:
    """One optimizer step per batch (the ablation, ``--not_mg``), with the same interface as
    ``MirrorGradient`` so a training loop need not know which it has."""

    def __init__(self, optimizer: torch.optim.Optimizer, clip: Mapping[str, Any] | None = None):
        self.optimizer = optimizer
        self.clip = dict(clip) if clip else None
        self.batch_index = 0
        self.global_step = 0
        # whether a second pass (MG's mirror pass) gave a NaN loss since ``start_epoch``: a 0-d
        # bool tensor on the loss's device, read once per epoch (no per-batch host sync)
        self.mirror_nan = torch.zeros((), dtype=torch.bool)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def parameters(self) -> Iterator[torch.Tensor]:
        """Every parameter the optimizer updates."""
        for group in self.optimizer.param_groups:
            yield from group["params"]

    def start_epoch(self) -> None:
        """Restart the per-epoch batch index (and the NaN flag of the second passes)."""
        self.batch_index = 0
        self.mirror_nan = torch.zeros((), dtype=torch.bool)

    def mirrors_next(self) -> bool:
        """Whether the next ``step`` calls its closure twice (a mirror batch)."""
        return False

    def _advance(self) -> None:
        self.batch_index += 1
        self.global_step += 1

    def _clipped_step(self) -> None:
        if self.clip:
            clip_grad_norm_(list(self.parameters()), **self.clip)
        self.optimizer.step()

    def step(self, closure: Closure) -> torch.Tensor:
        """Zero the gradients, back-propagate ``closure()``, [clip,] step; return the loss."""
        self.optimizer.zero_grad()
        loss = closure()
        loss.backward()
        self._clipped_step()
        self._advance()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state and the counters, so a resumed run continues exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "batch_index": self.batch_index,
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.batch_index = int(state["batch_index"])
        self.global_step = int(state["global_step"])


class MirrorGradient(PlainStep):
    """Mirror Gradient (Zhong et al., WWW 2024) around an optimizer.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (already built over the model's parameters).
        alpha1: the scale of the first step's loss on a mirror batch.
        alpha2: the scale of the mirror step's (sign-flipped) loss.
        beta: every ``beta``-th batch is a mirror batch.
        mode: "reference" (the released code's rule, the default) or "algorithm1" (the paper's
            Algorithm 1: plain gradient steps, a global-step trigger, alpha1 > alpha2).
        clip: ``clip_grad_norm_`` arguments (``{"max_norm": 5.0}``) or None; applied where the
            reference applies them: before every ordinary step and before the mirror step (not
            before a mirror batch's first step). Algorithm 1 does not clip.

    Attributes:
        mirror_nan: whether a mirror pass since ``start_epoch`` gave a NaN loss.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        alpha1: float = 1.0,
        alpha2: float = 0.2,
        beta: int = 3,
        mode: str = "reference",
        clip: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer, clip)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if int(beta) < 1:
            raise ValueError(f"beta must be an integer >= 1, got {beta!r}")
        if mode == "algorithm1" and not alpha1 > alpha2:
            raise ValueError(f"algorithm1 needs alpha1 > alpha2, got {alpha1} and {alpha2}")
        self.alpha1, self.alpha2 = float(alpha1), float(alpha2)
        self.beta, self.mode = int(beta), mode

    def mirrors_next(self) -> bool:
        if self.mode == "algorithm1":
            return (self.global_step + 1) % self.beta == 0
        return self.batch_index % self.beta == 0

    def _note_mirror(self, mirror_loss: torch.Tensor) -> None:
        flag = torch.isnan(mirror_loss.detach()).any()
        self.mirror_nan = self.mirror_nan.to(flag.device) | flag

    def step(self, closure: Closure) -> torch.Tensor:
        """One batch under Mirror Gradient; returns the first pass's loss."""
        if self.mode == "algorithm1":
            return self._algorithm1_step(closure)
        if not self.mirrors_next():
            return super().step(closure)
        self.optimizer.zero_grad()
        loss = closure()
        (self.alpha1 * loss).backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        mirror_loss = closure()
        (-self.alpha2 * mirror_loss).backward()
        self._note_mirror(mirror_loss)
        self._clipped_step()
        self._advance()
        return loss

    def _gradient_step(self, scale: float) -> None:
        """``theta <- theta - scale * lr * grad``: a plain gradient step."""
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for param in self.parameters():
                if param.grad is not None:
                    param.add_(param.grad, alpha=-scale * lr)

    def _algorithm1_step(self, closure: Closure) -> torch.Tensor:
        mirror = self.mirrors_next()
        self.optimizer.zero_grad()
        loss = closure()
        loss.backward()
        if not mirror:
            self._gradient_step(1.0)
        else:
            self._gradient_step(self.alpha1)
            self.optimizer.zero_grad()
            mirror_loss = closure()
            mirror_loss.backward()
            self._note_mirror(mirror_loss)
            self._gradient_step(-self.alpha2)
        self._advance()
        return loss
