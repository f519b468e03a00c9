"""``MirrorGradient``'s defaults, counters and flags as a user of the class sees them, without the
trainer's ``start_epoch`` calls: the paper's defaults, which batches mirror in either mode, the
counters a ``state_dict`` carries (mid-epoch too), the NaN flag of the mirror pass from the first
step on.

Written against mutants of ``mgrec/optim/mirror.py`` that survived the suite (see
benchmarks/MUTATION.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mgrec import MirrorGradient, PlainStep


class Counter(nn.Module):
    """L(w) = (w - 1)^2; records, per ``step``, how many times its loss was computed."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0]))
        self.calls = 0

    def loss(self) -> torch.Tensor:
        self.calls += 1
        return ((self.w - 1.0) ** 2).sum()


def schedule(mg: PlainStep, model: Counter, steps: int) -> list[int]:
    """Which of ``steps`` steps computed the loss twice (mirror batches), by index."""
    mirrored = []
    for index in range(steps):
        before = model.calls
        mg.step(model.loss)
        if model.calls - before == 2:
            mirrored.append(index)
    return mirrored


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01)


def test_the_defaults_are_the_papers():
    mg = MirrorGradient(sgd(Counter()))
    assert (mg.alpha1, mg.alpha2, mg.beta, mg.mode) == (1.0, 0.2, 3, "reference")
    assert mg.clip is None


def test_settings_are_checked_and_the_messages_name_the_choices():
    optimizer = sgd(Counter())
    with pytest.raises(ValueError, match="mode must be one of reference, algorithm1, got 'x'"):
        MirrorGradient(optimizer, mode="x")
    with pytest.raises(ValueError, match=r"algorithm1 needs alpha1 > alpha2, got 0.2 and 0.2"):
        MirrorGradient(optimizer, alpha1=0.2, alpha2=0.2, mode="algorithm1")
    MirrorGradient(optimizer, alpha1=0.3, alpha2=0.2, mode="algorithm1")  # strictly larger: fine


def test_which_batches_mirror_in_each_mode_from_a_fresh_wrapper():
    # The reference rule: batch index % beta == 0, so a fresh wrapper mirrors its first batch.
    model = Counter()
    reference = MirrorGradient(sgd(model), beta=3)
    assert schedule(reference, model, 7) == [0, 3, 6]
    # Algorithm 1: the global step t (from 1) with t % beta == 0, across epochs.
    model = Counter()
    algorithm1 = MirrorGradient(sgd(model), alpha1=1.0, alpha2=0.2, beta=3, mode="algorithm1")
    assert schedule(algorithm1, model, 7) == [2, 5]
    algorithm1.start_epoch()  # a new epoch does not restart the count
    assert schedule(algorithm1, model, 3) == [1]  # t = 9
    # The ablation never mirrors.
    model = Counter()
    plain = PlainStep(sgd(model))
    assert plain.mirrors_next() is False and schedule(plain, model, 4) == []


@pytest.mark.parametrize("mode", ["reference", "algorithm1"])
def test_the_counters_count_steps_and_continue_mid_epoch(mode):
    def fresh() -> tuple[Counter, MirrorGradient]:
        model = Counter()
        return model, MirrorGradient(sgd(model), 1.0, 0.5, 3, mode=mode)

    straight, mg = fresh()
    mg.start_epoch()
    for _ in range(7):
        mg.step(straight.loss)
    stopped, mg2 = fresh()
    mg2.start_epoch()
    for _ in range(4):
        mg2.step(stopped.loss)
    state = mg2.state_dict()
    assert (state["batch_index"], state["global_step"]) == (4, 4)
    resumed, mg3 = fresh()  # rebuilt and loaded in the middle of an epoch, no start_epoch
    resumed.load_state_dict(stopped.state_dict())
    mg3.load_state_dict(state)
    assert (mg3.batch_index, mg3.global_step) == (4, 4)
    for _ in range(3):
        mg3.step(resumed.loss)
    assert torch.equal(resumed.w, straight.w)
    assert (mg3.state_dict()["batch_index"], mg3.state_dict()["global_step"]) == (7, 7)


@pytest.mark.parametrize("mode", ["reference", "algorithm1"])
def test_the_nan_flag_of_the_mirror_pass_is_a_bool_from_the_start(mode):
    model = Counter()
    mg = MirrorGradient(sgd(model), 1.0, 0.5, 1, mode=mode)  # every batch mirrors
    assert mg.mirror_nan.dtype == torch.bool and not bool(mg.mirror_nan)
    calls = {"n": 0}

    def nan_on_the_mirror_pass() -> torch.Tensor:
        calls["n"] += 1
        loss = model.loss()
        return loss * math.nan if calls["n"] == 2 else loss

    mg.step(nan_on_the_mirror_pass)  # no start_epoch: the flag works from construction
    assert mg.mirror_nan.dtype == torch.bool and bool(mg.mirror_nan)
    plain = PlainStep(sgd(Counter()))
    assert plain.mirror_nan.dtype == torch.bool and not bool(plain.mirror_nan)
