"""Training strategies chosen per run (issue 21, part 1): ``--strategy=plain|mg|sam|asam``.

SAM and ASAM come from pytorch-optimizer (the ``sam`` extra) through ``mgrec.optim.SAM``: one
step is checked against the two-pass rule computed by hand, on SGD and on each learner mgrec
builds (fused/foreach); then the config keys, the run folder's name, the command line (a SAM
run differs from a plain one, a grid over ``rho``, ``--resume`` of a SAM checkpoint), exact
continuation from a saved state, and every model training with SAM.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mgrec import checkpoint
from mgrec.cli import main
from mgrec.config import (
    LEARNERS,
    grid,
    load_config,
    resolve_strategy,
    settings_warnings,
    strategy_name,
    validate,
)
from mgrec.errors import UserError
from mgrec.models import registry
from mgrec.optim import SAM, MirrorGradient, PlainStep, strategy_for
from mgrec.runs.folder import run_name
from mgrec.trainer import Trainer, build_optimizer

pytest.importorskip("pytorch_optimizer")  # the `sam` extra (scripts/setup.sh installs it)


class TwoWeights(nn.Module):
    """L(w) = w1^2 + 3 w2^2 over two separate parameters (the norm in SAM's rule is global)."""

    def __init__(self, w1: float = 1.0, w2: float = 2.0) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor([w1], dtype=torch.float64))
        self.w2 = nn.Parameter(torch.tensor([w2], dtype=torch.float64))
        self.calls = 0

    def loss(self) -> torch.Tensor:
        self.calls += 1
        return (self.w1**2 + 3 * self.w2**2).sum()

    def weights(self) -> tuple[float, float]:
        return self.w1.item(), self.w2.item()


def gradient(w1: float, w2: float) -> tuple[float, float]:
    return 2 * w1, 6 * w2


# --- one step against the two-pass rule, by hand ---------------------------------------------


def test_one_sam_step_is_the_two_pass_rule_by_hand():
    # w = (1, 2), g = (2, 12), |g| = sqrt(148); rho 0.1, SGD lr 0.1
    model = TwoWeights()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1)
    loss = sam.step(model.loss)
    g = gradient(1.0, 2.0)
    norm = math.sqrt(g[0] ** 2 + g[1] ** 2)
    perturbed = (1.0 + 0.1 * g[0] / norm, 2.0 + 0.1 * g[1] / norm)  # (1.0164399, 2.0986394)
    g2 = gradient(*perturbed)  # (2.0328798, 12.5918364)
    expected = (1.0 - 0.1 * g2[0], 2.0 - 0.1 * g2[1])  # (0.7967120, 0.7408164)
    assert model.weights() == pytest.approx(expected, rel=1e-7)  # the package: float32 norm
    assert expected == pytest.approx((0.79671202, 0.74081636), abs=1e-8)
    assert loss.item() == pytest.approx(13.0)  # the first pass's loss, at w
    assert model.calls == 2 and sam.mirrors_next()  # every SAM batch takes two passes
    # a plain step would land elsewhere: w - lr * g = (0.8, 0.8)
    assert model.weights()[1] != pytest.approx(0.8, abs=1e-3)


def test_one_asam_step_is_the_adaptive_rule_by_hand():
    # ASAM: e = rho * w^2 * g / || |w| * g ||; |w| * g = (2, 24), its norm sqrt(580)
    model = TwoWeights()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, adaptive=True)
    sam.step(model.loss)
    w, g = (1.0, 2.0), gradient(1.0, 2.0)
    norm = math.sqrt((abs(w[0]) * g[0]) ** 2 + (abs(w[1]) * g[1]) ** 2)
    perturbed = tuple(wi + 0.1 * wi**2 * gi / norm for wi, gi in zip(w, g, strict=True))
    g2 = gradient(*perturbed)
    expected = (w[0] - 0.1 * g2[0], w[1] - 0.1 * g2[1])
    assert expected == pytest.approx((0.79833909, 0.68041451), abs=1e-8)
    assert model.weights() == pytest.approx(expected, rel=1e-7)  # the package: float32 norm


def test_clipping_applies_to_the_second_gradient():
    # the perturbed point's gradient is clipped to norm 1 before the base step
    model = TwoWeights()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, clip={"max_norm": 1.0})
    sam.step(model.loss)
    g = gradient(1.0, 2.0)
    norm = math.sqrt(g[0] ** 2 + g[1] ** 2)
    g2 = gradient(1.0 + 0.1 * g[0] / norm, 2.0 + 0.1 * g[1] / norm)
    norm2 = math.sqrt(g2[0] ** 2 + g2[1] ** 2)
    scale = 1.0 / (norm2 + 1e-6)  # clip_grad_norm_'s own rule
    assert model.weights() == pytest.approx((1.0 - 0.1 * g2[0] * scale, 2.0 - 0.1 * g2[1] * scale))


@pytest.mark.parametrize("learner", LEARNERS)
def test_sam_wraps_each_learner_mgrec_builds(learner):
    """The learner built by ``build_optimizer`` (fused or foreach) is rebuilt inside the
    package's SAM: two steps equal the rule done by hand with a second, identical learner."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    data = torch.randn(5, 3)
    built = build_optimizer(model.parameters(), learner, 0.05, 0.01)
    sam = strategy_for(built, {"strategy": "sam", "rho": 0.2, "mg": False})
    assert isinstance(sam, SAM) and type(sam.optimizer) is type(built)
    assert sam.optimizer.param_groups[0]["lr"] == 0.05  # the built settings carried over
    assert sam.optimizer.param_groups[0]["weight_decay"] == 0.01

    twin = copy.deepcopy(model)
    by_hand = build_optimizer(twin.parameters(), learner, 0.05, 0.01)
    for _ in range(2):
        sam.step(lambda: model(data).pow(2).mean())
        twin.zero_grad()
        twin(data).pow(2).mean().backward()
        grads = [p.grad.clone() for p in twin.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        saved = [p.detach().clone() for p in twin.parameters()]
        with torch.no_grad():
            for p, g in zip(twin.parameters(), grads, strict=True):
                p.add_(0.2 * g / (norm + 1e-12))
        twin.zero_grad()
        twin(data).pow(2).mean().backward()
        with torch.no_grad():
            for p, w in zip(twin.parameters(), saved, strict=True):
                p.copy_(w)
        by_hand.step()
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_nan_second_pass_is_flagged():
    model = TwoWeights()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1)
    sam.start_epoch()
    losses = iter([model.loss, lambda: model.loss() * torch.tensor(float("nan"))])
    sam.step(lambda: next(losses)())
    assert bool(sam.mirror_nan)
    sam.start_epoch()
    assert not bool(sam.mirror_nan)


def test_strategy_for_picks_by_config_and_refuses_a_used_optimizer():
    params = [nn.Parameter(torch.ones(2))]
    sgd = torch.optim.SGD(params, lr=0.1)
    assert type(strategy_for(sgd, {"mg": False})) is PlainStep
    mg = {"mg": True, "alpha1": 1.0, "alpha2": 0.2, "beta": 3}
    assert type(strategy_for(sgd, mg)) is MirrorGradient
    asam = strategy_for(sgd, {"mg": False, "strategy": "asam", "rho": 0.5})
    assert isinstance(asam, SAM) and asam.adaptive and asam.rho == 0.5
    adam = torch.optim.Adam(params, lr=0.1)
    params[0].grad = torch.ones(2)
    adam.step()
    with pytest.raises(ValueError, match="freshly built"):
        SAM(adam, rho=0.1)
    with pytest.raises(ValueError, match="rho must be a number > 0"):
        SAM(torch.optim.SGD(params, lr=0.1), rho=0.0)


def test_a_missing_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_optimizer.optimizer.sam", None)
    with pytest.raises(UserError) as error:
        SAM(torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1), rho=0.1)
    assert str(error.value) == 'strategy: sam needs pytorch-optimizer: pip install -e ".[sam]"'
    # and the run is refused before anything trains (config.validate, at preflight)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "pytorch_optimizer" else real(name, *rest),
    )
    combo = grid(load_config("VBPR", "baby", strategy="asam"))[0]
    with pytest.raises(UserError) as refused:
        validate(combo)
    assert str(refused.value) == 'strategy: asam needs pytorch-optimizer: pip install -e ".[sam]"'


# --- exact continuation ----------------------------------------------------------------------


class Toy(nn.Module):
    """A recommender-shaped toy for the trainer: ``calculate_loss(batch)`` over rows [B, 2]."""

    trainable = True

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.layer = nn.Linear(2, 3)

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        return (self.layer(batch) - 1).pow(2).mean()

    def pre_epoch_processing(self) -> None:
        pass


def toy_config(strategy: str = "sam") -> dict:
    return {
        "epochs": 4, "eval_step": 1, "stopping_step": 10, "valid_metric": "recall@5",
        "learner": "adam", "learning_rate": 0.05, "weight_decay": 0.001,
        "learning_rate_scheduler": [0.5, 1.0], "clip_grad_norm": {"max_norm": 5.0},
        "mg": False, "strategy": strategy, "rho": 0.3,
    }  # fmt: skip


@pytest.mark.parametrize("strategy", ["sam", "asam"])
def test_a_saved_sam_state_continues_exactly(strategy):
    batches = [torch.randn(4, 2, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    model = Toy()
    trainer = Trainer(model, toy_config(strategy))
    trainer.train_epoch(batches)
    trainer.scheduler.step()
    saved_model = copy.deepcopy(model.state_dict())
    buffer = io.BytesIO()  # through a file, as a killed run's training_state.pth
    torch.save(trainer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    for _ in range(2):
        trainer.train_epoch(batches)
        trainer.scheduler.step()

    again = Toy()
    again.load_state_dict(saved_model)
    resumed = Trainer(again, toy_config(strategy))
    resumed.load_state_dict(saved)
    for _ in range(2):
        resumed.train_epoch(batches)
        resumed.scheduler.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    # the scheduler drives the optimizer SAM steps with, also after a restore: 0.05 * 0.5^3
    for wrapper in (trainer.strategy, resumed.strategy):
        assert isinstance(wrapper, SAM)
        assert wrapper.sam.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)
        assert wrapper.optimizer.param_groups is wrapper.sam.param_groups
    assert resumed.strategy.global_step == 9 and trainer.strategy.state_dict()["global_step"] == 9


def test_the_trainer_gives_sam_an_untouched_second_batch():
    seen = []

    class Recording(Toy):
        def calculate_loss(self, batch):
            seen.append(batch.clone())
            loss = self.layer.weight.sum() * batch.sum()
            batch.mul_(0)  # a model that changes its batch in place (as some sample negatives)
            return loss

    trainer = Trainer(Recording(), toy_config())
    trainer.train_epoch([torch.ones(2, 2)])
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])


# --- configuration, names, the command line ---------------------------------------------------


def test_config_keys_grid_and_folder_names():
    sam = load_config("VBPR", "baby", strategy="sam")
    assert sam["strategy"] == "sam" and sam["mg"] is False and sam["rho"] == [0.01, 0.05, 0.1]
    assert sam["hyper_parameters"][-1] == "rho" and "alpha2" not in sam
    assert len(grid(sam)) == 3 * len(grid(load_config("VBPR", "baby", mg=False)))
    assert run_name(sam).startswith("VBPR-sam-baby-")
    assert run_name(load_config("VBPR", "baby", strategy="asam")).startswith("VBPR-asam-baby-")
    # MG and plain configs carry no strategy key: their identities and folders stay as they were
    for mg, tag in ((True, "mg"), (False, "plain")):
        config = load_config("VBPR", "baby", mg=mg)
        assert "strategy" not in config and "rho" not in config
        assert strategy_name(config) == tag and run_name(config).startswith(f"VBPR-{tag}-baby-")
        assert load_config("VBPR", "baby", strategy=tag) == config
    # a model that trains nothing runs plain
    assert strategy_name(load_config("ItemKNNCBF", "baby", strategy="sam")) == "plain"
    # Python callers may name it as a keyword (mgrec.train(..., strategy="sam"))
    assert load_config("VBPR", "baby", overrides={"strategy": "asam", "rho": 1.0})["rho"] == 1.0


def test_validation_of_rho_and_the_strategy():
    combo = grid(load_config("VBPR", "baby", strategy="sam"))[0]
    validate(combo)
    for bad in (0, -0.1, "big", True, None):
        with pytest.raises(UserError, match="'rho' must be a number > 0"):
            validate({**combo, "rho": bad})
    with pytest.raises(UserError, match="the strategy must be one of plain, mg, sam, asam"):
        load_config("VBPR", "baby", strategy="adam")


def test_the_command_line_strategy_and_its_contradictions():
    assert resolve_strategy(False, {}, {}) == "mg"  # the reference's default
    assert resolve_strategy(True, {}, {}) == "plain"  # --not_mg keeps meaning plain
    assert resolve_strategy(False, {"mg": False}, {}) == "plain"
    assert resolve_strategy(True, {"mg": True}, {}) == "plain"  # --not_mg wins, as before
    assert resolve_strategy(False, {"strategy": "SAM"}, {}) == "sam"
    assert resolve_strategy(False, {"strategy": "mg", "mg": True}, {}) == "mg"
    # a saved config.yaml runs what it ran; the command line wins over it
    assert resolve_strategy(False, {}, {"mg": False, "strategy": "asam"}) == "asam"
    assert resolve_strategy(True, {}, {"mg": False, "strategy": "asam"}) == "plain"
    assert resolve_strategy(False, {}, {"mg": False}) == "plain"
    for overrides, not_mg, message in (
        ({"strategy": "sam"}, True, "--not_mg means --strategy=plain, not sam"),
        ({"strategy": "sam", "mg": True}, False, "--mg=True contradicts --strategy=sam"),
        ({"strategy": "plain", "mg": True}, False, "contradicts"),
        ({"strategy": ["sam", "mg"]}, False, "one per run"),
        ({"strategy": "sma"}, False, "did you mean"),
    ):
        with pytest.raises(UserError, match=message):
            resolve_strategy(not_mg, dict(overrides), {})
    with pytest.raises(UserError, match="contradict"):
        resolve_strategy(False, {}, {"mg": True, "strategy": "sam"})


def test_keys_of_a_strategy_not_run_are_warned_about():
    def warnings(strategy, **given):
        return settings_warnings(
            [], given, mg=strategy == "mg", gpu_visible=lambda: False, model="VBPR",
            strategy=strategy,
        )  # fmt: skip

    assert warnings("mg", rho=0.1) == ["strategy mg: rho given but ignored (SAM is off)"]
    assert warnings("plain", rho=0.1) == ["strategy plain: rho given but ignored (SAM is off)"]
    assert warnings("sam", alpha2=0.3) == [
        "--strategy=sam: alpha2 given but ignored (Mirror Gradient is off)"
    ]
    assert warnings("plain", alpha2=0.3) == [
        "--not_mg: alpha2 given but ignored (Mirror Gradient is off)"
    ]
    assert warnings("sam", rho=0.1) == []
    with pytest.raises(UserError, match="ItemKNNCBF trains nothing, so SAM"):
        settings_warnings([], {"rho": 0.1}, False, lambda: False, "ItemKNNCBF", "plain")
    assert settings_warnings([], {}, False, lambda: False, "ItemKNNCBF", "sam")[0].startswith(
        "ItemKNNCBF trains nothing, so sam has nothing to act on"
    )
    # and the run drops them: no rho in an MG run, no alpha2 in a SAM run
    assert "rho" not in load_config("VBPR", "baby", mg=True, overrides={"rho": 0.1})
    sam = load_config("VBPR", "baby", strategy="sam", overrides={"alpha2": 0.3})
    assert "alpha2" not in sam and "alpha2" not in sam["hyper_parameters"]


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1"]  # fmt: skip


def run_args(tmp_path: Path, data: Path, model: str = "VBPR", *extra: str) -> list[str]:
    return ["--model", model, "--dataset", "tiny", f"--data_path={data}", "--epochs=2",
            *outputs(tmp_path), *extra]  # fmt: skip


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_sam_through_the_command_line_a_grid_and_resume(tiny, tmp_path, capsys):
    args = run_args(tmp_path, tiny, "VBPR", "--reg_weight=0.1")
    assert main([*args, "--strategy=sam", "--rho=[0.05,0.5]"]) == 0
    assert main([*args, "--not_mg"]) == 0
    (sam_dir,) = (tmp_path / "results" / "tiny").glob("VBPR-sam-tiny-*")
    (plain_dir,) = (tmp_path / "results" / "tiny").glob("VBPR-plain-tiny-*")
    rows = results(sam_dir)
    assert [r["params"]["rho"] for r in rows] == [0.05, 0.5]  # a grid over rho
    assert "with SAM" in (sam_dir / "summary.md").read_text()
    (plain,) = results(plain_dir)
    sam_state = checkpoint.read(Path(rows[0]["checkpoint"]))["state_dict"]
    plain_state = checkpoint.read(Path(plain["checkpoint"]))["state_dict"]
    assert sam_state.keys() == plain_state.keys()
    assert any(not torch.equal(sam_state[k], plain_state[k]) for k in sam_state)
    losses = [json.loads(x)["loss"] for x in (sam_dir / "combo-000" / "metrics.jsonl").open()]
    plain_losses = [
        json.loads(x)["loss"] for x in (plain_dir / "combo-000" / "metrics.jsonl").open()
    ]
    assert losses[0] == plain_losses[0] and losses[1] != plain_losses[1]  # one batch per epoch
    saved = json.loads(json.dumps(checkpoint.read(Path(rows[0]["checkpoint"]))["config"]))
    assert saved["strategy"] == "sam" and saved["rho"] == 0.05
    # the tables name the strategy: `mgrec table` has a SAM row, `mgrec runs` says SAM
    capsys.readouterr()
    assert main(["table", "--dataset", "tiny", f"--results_dir={tmp_path / 'results'}"]) == 0
    table = capsys.readouterr().out
    sam_row = next(x for x in table.splitlines() if x.startswith("| VBPR + SAM |"))
    winner = max(rows, key=lambda r: r["valid"]["recall@5"])
    assert sam_row.endswith(f"| 2 | {sam_dir.name} combo-{winner['index']:03d} |")
    assert (
        f"| 1 | {plain_dir.name} combo-000 |" in table
        and "| VBPR + MG | no finished run |" in table
    )
    assert main(["runs", f"--results_dir={tmp_path / 'results'}"]) == 0
    listing = capsys.readouterr().out
    assert any("| VBPR | tiny | SAM |" in x and sam_dir.name in x for x in listing.splitlines())

    # re-running finds the finished combinations (same folder, nothing trained again)
    capsys.readouterr()
    assert main([*args, "--strategy=sam", "--rho=[0.05,0.5]"]) == 0
    assert results(sam_dir) == rows
    # the run's saved config.yaml runs the same strategy again
    assert main([*outputs(tmp_path), f"--data_path={tiny}", "--config",
                 str(sam_dir / "config.yaml")]) == 0  # fmt: skip
    assert len(list((tmp_path / "results" / "tiny").glob("VBPR-sam-tiny-*"))) == 1

    capsys.readouterr()
    output = tmp_path / "resumed.json"
    resume = ["--resume", rows[0]["checkpoint"], f"--data_path={tiny}", f"--output={output}"]
    assert main([*resume, *outputs(tmp_path)]) == 0
    resumed = json.loads(output.read_text())
    assert resumed["valid"] == rows[0]["valid"] and resumed["test"] == rows[0]["test"]
    assert "match the recomputed ones exactly" in capsys.readouterr().out


def test_contradicting_flags_are_one_line(tiny, tmp_path, capsys):
    assert main([*run_args(tmp_path, tiny), "--not_mg", "--strategy=sam"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--not_mg means --strategy=plain, not sam: give one of them")
    )
    assert main([*run_args(tmp_path, tiny), "--strategy=sam", "--rho=0"]) == 2
    assert "'rho' must be a number > 0" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def one_combination(model: str, data: Path) -> list[str]:
    """Overrides that fix every grid key of ``model`` under SAM to its first value."""
    config = load_config(model, "tiny", strategy="sam", overrides={"data_path": str(data)})
    first = grid(config)[0]
    keys = [k for k in config["hyper_parameters"] if k != "seed"]
    return [f"--{k}={json.dumps(first[k])}" for k in keys]


TRAINED = [name for name in registry.builtin() if registry.trains(name)]


@pytest.mark.slow
@pytest.mark.parametrize("model", TRAINED)
def test_every_model_trains_with_sam(model, tiny, tmp_path, capsys):
    # three batches an epoch: Adam's first step is about lr * sign(g), so one batch an epoch
    # would hide SAM's different gradient behind equal signs for a step
    fixed = [x for x in one_combination(model, tiny) if not x.startswith("--rho=")]
    args = run_args(tmp_path, tiny, model, *fixed, "--train_batch_size=64")
    assert main([*args, "--strategy=sam", "--rho=0.01"]) == 0, capsys.readouterr().err
    assert main([*args, "--not_mg"]) == 0, capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err
    (sam_dir,) = (tmp_path / "results" / "tiny").glob(f"{model}-sam-tiny-*")
    (plain_dir,) = (tmp_path / "results" / "tiny").glob(f"{model}-plain-tiny-*")
    sam, plain = results(sam_dir)[0], results(plain_dir)[0]
    assert sam["params"]["rho"] == 0.01 and "rho" not in plain["params"]
    curves = [
        [json.loads(x)["loss"] for x in (d / "combo-000" / "metrics.jsonl").open()]
        for d in (sam_dir, plain_dir)
    ]
    assert all(math.isfinite(x) for x in curves[0]), curves
    assert curves[0] != curves[1], model  # SAM's steps differ from plain ones
