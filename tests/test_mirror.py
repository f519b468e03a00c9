"""``mgrec.MirrorGradient`` in plain PyTorch loops (no mgrec trainer): the reference trainer's
golden trace, the step rule by hand, clipping where the reference clips, Algorithm 1, exact
continuation from ``state_dict``, and the README's example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import GOLDEN, build_golden_model
from mgrec import MirrorGradient, PlainStep

README = Path(__file__).parents[1] / "README.md"


@pytest.mark.parametrize("mg", [True, False])
def test_the_reference_trainer_trace_in_a_plain_loop(mg, summary, tmp_path):
    stored = torch.load(GOLDEN / "reference" / "mg-trainer.pth", weights_only=True)
    model, _, _ = build_golden_model("VBPR", summary, tmp_path, reg_weight=0.01)
    model.load_state_dict(stored["init"])
    optimizer = torch.optim.Adam(model.parameters(), lr=stored["learning_rate"])
    if mg:
        wrapper: PlainStep = MirrorGradient(
            optimizer, alpha1=stored["alpha1"], alpha2=stored["alpha2"], beta=stored["beta"]
        )
    else:
        wrapper = PlainStep(optimizer)
    model.train()
    wrapper.start_epoch()
    total = 0.0
    for batch in stored["batches"]:
        total += float(wrapper.step(lambda batch=batch: model.calculate_loss(batch)))
    expected = stored["final_mg" if mg else "final_plain"]
    for key, value in expected.items():
        error = (model.state_dict()[key] - value).abs().max()
        assert error <= 1e-5 * value.abs().max(), key
    assert total == pytest.approx(stored["epoch_loss_mg" if mg else "epoch_loss_plain"], rel=1e-6)


class Quadratic(nn.Module):
    """L(w) = (w - c)^2, counting how often the loss is computed."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([start]))
        self.calls = 0

    def loss(self, c: float = 0.0) -> torch.Tensor:
        self.calls += 1
        return ((self.w - c) ** 2).sum()


def test_mirror_batches_take_two_steps_by_hand():
    # SGD makes each step explicit: gradient 2w, lr 0.1, alpha1 1.0, alpha2 0.25, beta 2
    model = Quadratic(3.0)
    mg = MirrorGradient(torch.optim.SGD(model.parameters(), lr=0.1), 1.0, 0.25, 2)
    mg.start_epoch()
    first = mg.step(model.loss)  # batch 0: a mirror batch
    w1 = 3.0 - 0.1 * 1.0 * 6.0
    w2 = w1 + 0.1 * 0.25 * 2 * w1
    assert model.w.item() == pytest.approx(w2) and first.item() == pytest.approx(9.0)
    assert model.calls == 2
    mg.step(model.loss)  # batch 1: one ordinary step
    assert model.w.item() == pytest.approx(w2 - 0.1 * 2 * w2) and model.calls == 3
    mg.start_epoch()  # the index restarts: batch 0 mirrors again
    assert mg.mirrors_next()


def test_clipping_where_the_reference_clips():
    # a mirror batch's first step is not clipped; its mirror step and ordinary steps are
    model = Quadratic(100.0)
    mg = MirrorGradient(
        torch.optim.SGD(model.parameters(), lr=1.0), 1.0, 0.5, 2, clip={"max_norm": 0.5}
    )
    mg.start_epoch()
    mg.step(model.loss)
    w1 = 100.0 - 1.0 * 200.0  # unclipped: -100
    w2 = w1 - 0.5  # the mirror step climbs the loss, clipped to norm 0.5
    assert model.w.item() == pytest.approx(w2)
    mg.step(model.loss)
    assert model.w.item() == pytest.approx(w2 + 0.5)  # gradient 2 * w2 < 0: a clipped step up


def test_algorithm1_counts_steps_across_epochs():
    model = Quadratic(1.0)
    mg = MirrorGradient(
        torch.optim.Adam(model.parameters(), lr=0.1), 0.5, 0.2, 2, mode="algorithm1"
    )
    mg.start_epoch()
    mg.step(model.loss)  # t = 1: a plain gradient step (not Adam's rule)
    w1 = 1.0 - 0.1 * 2.0
    assert model.w.item() == pytest.approx(w1)
    mg.start_epoch()
    mg.step(model.loss)  # t = 2: the mirror pair
    w_prime = w1 - 0.5 * 0.1 * 2 * w1
    assert model.w.item() == pytest.approx(w_prime + 0.2 * 0.1 * 2 * w_prime)


def test_bad_settings_are_refused():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="beta"):
        MirrorGradient(optimizer, beta=0)
    with pytest.raises(ValueError, match="mode"):
        MirrorGradient(optimizer, mode="other")
    with pytest.raises(ValueError, match="alpha1 > alpha2"):
        MirrorGradient(optimizer, alpha1=0.1, alpha2=0.2, mode="algorithm1")


@pytest.mark.parametrize("mode", ["reference", "algorithm1"])
def test_state_dict_continues_exactly(mode):
    def fresh() -> tuple[nn.Module, MirrorGradient]:
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        return model, MirrorGradient(
            torch.optim.Adam(model.parameters(), lr=0.05), 1.0, 0.3, 3, mode=mode
        )

    x, y = torch.randn(7, 5, 4), torch.randn(7, 5, 1)

    def epoch(model: nn.Module, mg: MirrorGradient, batches: range) -> None:
        mg.start_epoch()
        for b in batches:
            mg.step(lambda b=b: ((model(x[b]) - y[b]) ** 2).mean())

    straight, mg = fresh()
    for _ in range(3):
        epoch(straight, mg, range(7))
    resumed, mg2 = fresh()
    epoch(resumed, mg2, range(7))
    saved = {"model": resumed.state_dict(), "mg": mg2.state_dict()}
    resumed, mg3 = fresh()  # a new process: everything rebuilt, then loaded
    resumed.load_state_dict(saved["model"])
    mg3.load_state_dict(saved["mg"])
    for _ in range(2):
        epoch(resumed, mg3, range(7))
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_readme_example_runs():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- snippet: mirror-gradient -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README's MirrorGradient example is missing its marker"
    done = subprocess.run(
        [sys.executable, "-c", match.group(1)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.rsplit(":", 1)[1]) < 0.5  # it learned the toy preferences
