"""The Mirror Gradient trainer: the reference's trace, the step schedule, stopping rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import GOLDEN, build_golden_model
from mgrec.trainer import Trainer


def base_config(**extra):
    config = {
        "epochs": 5, "eval_step": 1, "stopping_step": 2, "valid_metric": "Recall@5",
        "clip_grad_norm": None, "mg": False, "learner": "adam", "learning_rate": 0.01,
        "weight_decay": 0.0, "learning_rate_scheduler": [1.0, 50],
    }  # fmt: skip
    config.update(extra)
    return config


class Recorder(nn.Module):
    """A model whose loss is a quadratic; it records every batch it sees and edits it in place."""

    def __init__(self, start: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([start]))
        self.seen: list[torch.Tensor] = []
        self.epochs_prepared = 0

    def pre_epoch_processing(self):
        self.epochs_prepared += 1

    def calculate_loss(self, batch):
        self.seen.append(batch.clone())
        batch += 1000  # like DualGNN/DRAGON's in-place offset: the mirror pass must not see it
        return (self.w - batch[0, 0].float() % 1000) ** 2


@pytest.mark.parametrize("mg", [True, False])
def test_reproduces_reference_trainer_trace(mg, summary, tmp_path):
    stored = torch.load(GOLDEN / "reference" / "mg-trainer.pth", weights_only=True)
    extra = {"reg_weight": 0.01, "learning_rate": stored["learning_rate"]}
    if not mg:
        extra = {**extra, "alpha1": None, "alpha2": None, "beta": None}
    model, _, combo = build_golden_model("VBPR", summary, tmp_path, **extra)
    combo = {
        **combo,
        "mg": mg,
        "alpha1": stored["alpha1"],
        "alpha2": stored["alpha2"],
        "beta": stored["beta"],
    }
    model.load_state_dict(stored["init"])
    loss = Trainer(model, combo).train_epoch([b.clone() for b in stored["batches"]])
    expected = stored["final_mg" if mg else "final_plain"]
    for key, value in expected.items():
        error = (model.state_dict()[key] - value).abs().max()
        assert error <= 1e-5 * value.abs().max(), key
    assert loss == pytest.approx(stored["epoch_loss_mg" if mg else "epoch_loss_plain"], rel=1e-6)


def test_mirror_schedule_and_batch_copy():
    model = Recorder()
    trainer = Trainer(model, base_config(mg=True, alpha1=1.0, alpha2=0.5, beta=3))
    batches = [torch.full((3, 2), i) for i in range(7)]
    trainer.train_epoch(batches)
    # batches 0, 3, 6 are seen twice (first pass, then the mirror pass on an untouched copy)
    firsts = [int(b[0, 0]) for b in model.seen]
    assert firsts == [0, 0, 1, 2, 3, 3, 4, 5, 6, 6]


def test_mirror_step_is_a_sign_flipped_scaled_step():
    # SGD makes the two steps explicit: w1 = w0 - lr*a1*g(w0); w2 = w1 + lr*a2*g(w1)
    model = Recorder(start=3.0)
    trainer = Trainer(
        model,
        base_config(mg=True, alpha1=1.0, alpha2=0.25, beta=1, learner="sgd", learning_rate=0.1),
    )
    loss = trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])
    w0 = 3.0
    w1 = w0 - 0.1 * 1.0 * 2 * w0
    w2 = w1 + 0.1 * 0.25 * 2 * w1
    assert model.w.item() == pytest.approx(w2)
    assert loss == pytest.approx(w0**2)  # only the first pass counts


def fit_with_scores(scores, **extra):
    model = Recorder()
    trainer = Trainer(model, base_config(epochs=len(scores), **extra))
    calls = {"valid": 0, "test": 0}
    sequence = iter(scores)

    def validate():
        calls["valid"] += 1
        return {"recall@5": next(sequence)}

    def test():
        calls["test"] += 1
        return {"recall@5": -calls["test"]}

    result = trainer.fit([torch.zeros(3, 1, dtype=torch.long)], validate, test)
    return result, calls, model


def test_early_stopping_and_test_only_on_improvement():
    result, calls, model = fit_with_scores([0.1, 0.2, 0.2, 0.15, 0.19, 0.3, 0.4], stopping_step=2)
    # improvements at epochs 0 and 1; three evaluations without improvement stop the run
    assert result.stopped == "early-stopping"
    assert len(result.history) == 5 and model.epochs_prepared == 5
    assert result.best_epoch == 1 and result.best_valid == {"recall@5": 0.2}
    assert calls == {"valid": 5, "test": 2}
    assert result.test_at_best == {"recall@5": -2}


def test_improvement_is_judged_at_four_decimals():
    result, calls, _ = fit_with_scores([0.12341, 0.12344, 0.12346])
    assert result.best_epoch == 2  # 0.1234 == 0.1234 is not an improvement; 0.1235 is
    assert calls["test"] == 2


def test_eval_step():
    result, calls, _ = fit_with_scores([0.1, 0.2], eval_step=2)
    assert calls["valid"] == 1 and [r.valid is not None for r in result.history] == [False, True]


def test_nan_loss_ends_the_combination_keeping_best():
    class Exploding(Recorder):
        def calculate_loss(self, batch):
            loss = super().calculate_loss(batch)
            return loss * (math.nan if self.epochs_prepared >= 3 else 1.0)

    model = Exploding()
    trainer = Trainer(model, base_config(epochs=10))
    result = trainer.fit(
        [torch.zeros(3, 1, dtype=torch.long)], lambda: {"recall@5": 0.5}, lambda: {"recall@5": 0.4}
    )
    assert result.stopped == "nan-loss" and "NaN" in result.message
    assert len(result.history) == 3 and result.best_epoch == 0
    assert result.test_at_best == {"recall@5": 0.4}


def test_learning_rate_schedule():
    model = Recorder()
    trainer = Trainer(model, base_config(learning_rate=0.1, learning_rate_scheduler=[0.5, 2]))
    for _ in range(4):
        trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])
        trainer.scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** (4 / 2))


def test_gradient_clipping():
    model = Recorder(start=100.0)
    trainer = Trainer(
        model, base_config(learner="sgd", learning_rate=1.0, clip_grad_norm={"max_norm": 0.5})
    )
    trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])
    assert model.w.item() == pytest.approx(99.5)


# One step from w = 2 on (w - 0)^2 (gradient 4) with lr 0.1, by each learner's update rule.
@pytest.mark.parametrize(
    ("learner", "after"),
    [
        ("sgd", 2 - 0.1 * 4),  # w - lr g
        ("adam", 2 - 0.1),  # bias-corrected first step: lr g / |g|
        ("adagrad", 2 - 0.1),  # lr g / sqrt(g^2)
        ("rmsprop", 2 - 0.1 * 4 / 0.4),  # lr g / sqrt((1 - 0.99) g^2)
    ],
)
def test_learners(learner, after):
    model = Recorder(start=2.0)
    trainer = Trainer(model, base_config(learner=learner, learning_rate=0.1))
    trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])
    assert model.w.item() == pytest.approx(after, rel=1e-6)


def test_algorithm1_two_step_update_by_hand():
    # L(w) = (w - c)^2 with c = 0: grad 2w. lr 0.1, alpha1 0.5, alpha2 0.2, beta 2.
    model = Recorder(start=1.0)
    config = base_config(
        mg=True, mg_mode="algorithm1", alpha1=0.5, alpha2=0.2, beta=2, learning_rate=0.1
    )
    trainer = Trainer(model, config)
    trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])  # t = 1: a plain step
    w1 = 1.0 - 0.1 * 2 * 1.0
    assert model.w.item() == pytest.approx(w1)
    # t = 2 (in the next epoch: t does not restart): the mirror pair
    trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])
    w_prime = w1 - 0.5 * 0.1 * 2 * w1
    w2 = w_prime + 0.2 * 0.1 * 2 * w_prime
    assert model.w.item() == pytest.approx(w2)
    assert [int(b[0, 0]) for b in model.seen] == [0, 0, 0]  # batch 2 seen twice, untouched


def test_reference_mode_restarts_the_trigger_each_epoch():
    model = Recorder()
    trainer = Trainer(model, base_config(mg=True, alpha1=1.0, alpha2=0.1, beta=2))
    for _ in range(2):
        trainer.train_epoch([torch.full((3, 1), i) for i in range(3)])
    assert [int(b[0, 0]) for b in model.seen] == [0, 0, 1, 2, 2] * 2


def test_a_stopping_rule_on_the_epoch_losses_without_evaluation():
    model = Recorder(start=3.0)
    trainer = Trainer(model, base_config(epochs=10, learner="sgd", learning_rate=0.1))
    seen: list[list[float]] = []

    def rule(losses: list[float]) -> bool:
        seen.append(list(losses))
        return len(losses) == 4

    result = trainer.fit([torch.zeros(3, 1, dtype=torch.long)], None, None, stop_when=rule)
    assert result.stopped == "stop-rule" and len(result.history) == 4
    assert model.epochs_prepared == 4
    losses = [r.loss for r in result.history]
    assert seen == [losses[:k] for k in range(1, 5)]  # the losses so far, after every epoch
    assert losses == sorted(losses, reverse=True) and losses[0] == pytest.approx(9.0)
    assert all(r.valid is None and r.test is None for r in result.history)
    assert result.best_epoch is None
    # no rule and no evaluation: every epoch is trained
    plain = Trainer(Recorder(), base_config(epochs=3)).fit(
        [torch.zeros(3, 1, dtype=torch.long)], None, None
    )
    assert plain.stopped == "max-epochs" and len(plain.history) == 3
