"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) and its adaptive form (ASAM, Kwon
et al., ICML 2021) as a training strategy beside ``PlainStep`` and ``MirrorGradient``.

One batch takes two forward-backward passes::

    g   = grad L(w)                                   # first pass
    e   = rho * g / ||g||                             # SAM
    e   = rho * w^2 * g / || |w| * g ||               # ASAM (elementwise; T_w = |w|, no eta)
    g'  = grad L(w + e)                               # second pass, at the perturbed point
    w   <- base optimizer's step from w with g'       # Adam, SGD, ...: its own update rule

The perturbation and the restore are ``pytorch_optimizer.SAM``'s (the optional extra
``pip install -e ".[sam]"``): its ``first_step`` moves to ``w + e`` and its ``second_step`` puts
``w`` back and steps the base optimizer. That class builds its base optimizer itself from a class
and the parameter groups, so ``SAM`` here rebuilds the learner mgrec built (same class, same
groups: learning rate, weight decay, betas, fused/foreach) inside it; ``optimizer`` is then the
base optimizer that steps (the one a learning-rate scheduler must drive).

Gradient clipping (``clip_grad_norm``) applies to the second pass's gradient, before the base
step, as ``PlainStep`` clips before every step. Clipping the first gradient would change nothing:
its global norm cancels in ``e`` (both forms divide by a norm that scales with it).

BatchNorm caveat: SAM usually freezes BatchNorm's running statistics in the second pass (the
perturbed point's batch statistics should not be recorded); mgrec's models have no BatchNorm, so
nothing is done about it here. A model that adds one would need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn.utils import clip_grad_norm_

from mgrec.errors import UserError
from mgrec.optim.mirror import Closure, PlainStep

INSTALL_HINT = 'pip install -e ".[sam]"'


def package_sam(strategy: str = "sam") -> Any:
    """``pytorch_optimizer``'s SAM class, or a one-line user error saying how to install it."""
    try:
        from pytorch_optimizer.optimizer.sam import SAM as PackageSAM
    except ImportError as exc:
        raise UserError(f"strategy: {strategy} needs pytorch-optimizer: {INSTALL_HINT}") from exc
    return PackageSAM


def _has_stepped(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` holds state from steps (Adagrad fills its state, step 0, when built;
    SGD's momentum buffers appear with the first step)."""
    for state in optimizer.state.values():
        step = state.get("step")
        if (step is None and state) or (step is not None and float(step) > 0):
            return True
    return False


class SAM(PlainStep):
    """SAM (or ASAM with ``adaptive``) around an optimizer mgrec built.

    Args:
        optimizer: a freshly built ``torch.optim.Optimizer`` (no steps taken yet); its class and
            parameter groups are rebuilt as the base optimizer of ``pytorch_optimizer.SAM``.
        rho: the neighbourhood radius (> 0).
        adaptive: ASAM's scale-invariant perturbation ``rho * w^2 * g / || |w| * g ||``.
        clip: ``clip_grad_norm_`` arguments (``{"max_norm": 5.0}``) or None: applied to the
            second pass's gradient, before the base step.

    Attributes:
        optimizer: the base optimizer that steps (drive a scheduler with this one).
        sam: the ``pytorch_optimizer.SAM`` instance (perturbation, restore, state).
        mirror_nan: whether a second pass since ``start_epoch`` gave a NaN loss.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        clip: Mapping[str, Any] | None = None,
    ) -> None:
        if not float(rho) > 0:
            raise ValueError(f"rho must be a number > 0, got {rho!r}")
        if _has_stepped(optimizer):
            # its moments would be lost in the rebuild: SAM wraps an optimizer before training
            raise ValueError("SAM wraps a freshly built optimizer (this one has taken steps)")
        package = package_sam("asam" if adaptive else "sam")
        # Copies of the groups (every setting the learner was built with), so the optimizer
        # passed in is left as it was; the package's SAM and its base share these dicts.
        groups = [{**group, "params": list(group["params"])} for group in optimizer.param_groups]
        self.sam = package(
            groups, base_optimizer=type(optimizer), rho=float(rho), adaptive=adaptive
        )
        super().__init__(self.sam.base_optimizer, clip)
        self.rho, self.adaptive = float(rho), bool(adaptive)

    def mirrors_next(self) -> bool:
        """Always: every SAM batch calls its closure twice (at ``w`` and at ``w + e``)."""
        return True

    def step(self, closure: Closure) -> torch.Tensor:
        """One SAM batch; returns the first pass's loss (at the unperturbed weights)."""
        self.sam.zero_grad()
        loss = closure()
        loss.backward()
        self.sam.first_step(zero_grad=True)  # w -> w + e, the gradients cleared
        perturbed = closure()
        perturbed.backward()
        flag = torch.isnan(perturbed.detach()).any()
        self.mirror_nan = self.mirror_nan.to(flag.device) | flag
        if self.clip:
            clip_grad_norm_(list(self.parameters()), **self.clip)
        self.sam.second_step()  # back to w, then the base optimizer's step
        self._advance()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (through the package's SAM) and the counters."""
        return {
            "optimizer": self.sam.state_dict(),
            "batch_index": self.batch_index,
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # Through the package's SAM: it re-links its base optimizer to the restored groups.
        self.sam.load_state_dict(state["optimizer"])
        self.batch_index = int(state["batch_index"])
        self.global_step = int(state["global_step"])
