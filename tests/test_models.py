"""Behaviour every model shares: training through the CLI, stale or fresh scoring, no batch edits."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import GOLDEN, GOLDEN_DATA, build_golden_model
from mgrec.cli import main
from mgrec.config import load_config
from mgrec.models import get, names
from mgrec.trainer import Trainer

STALE = {"MMGCN", "GRCN", "DualGNN", "SLMRec", "MVGAE"}  # score from the last training forward [R]


def test_stale_models_are_exactly_the_reference_ones():
    assert {name for name in names() if get(name).stale_scores} == STALE


@pytest.mark.parametrize("name", names())
def test_scoring_after_a_step_stale_or_fresh(name, summary, tmp_path):
    if not get(name).trainable:
        pytest.skip(f"{name} trains nothing")
    model, data, combo = build_golden_model(name, summary, tmp_path)
    users = torch.arange(20)
    trainer = Trainer(model, {**combo, "mg": False})
    batch = torch.stack([data_row[:64] for data_row in torch.load(
        GOLDEN / "reference" / f"{name}-batch.pth", weights_only=True)["batch"]])  # fmt: skip
    model.train()
    before = batch.clone()
    loss = model.calculate_loss(batch)
    assert torch.equal(batch, before), "calculate_loss must not edit the batch"
    with torch.no_grad():
        if name in STALE:
            user_e, item_e = model.training_cache
            cached = user_e[users] @ item_e.T  # the representation of that forward
    loss.backward()
    trainer.optimizer.step()
    model.eval()
    with torch.no_grad():
        scored = model.scorer()(users)
        fresh = model.full_sort_predict(users)
        if name == "SLMRec":
            fresh = torch.logit(fresh.double()).float()  # its predictions carry a final sigmoid
        if name in STALE:
            assert torch.allclose(scored, cached) and not torch.allclose(scored, fresh, atol=1e-6)
            model.fresh_eval = True
            scored = model.scorer()(users)
        assert torch.allclose(scored, fresh, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", names())
def test_every_model_trains_and_evaluates_with_mg(name, tmp_path):
    output = tmp_path / "out.json"
    args = [
        "--model", name, "--dataset", "golden11", f"--data_path={GOLDEN_DATA}", "--epochs=2",
        "--train_batch_size=512", f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
        f"--cache_dir={tmp_path / 'cache'}", f"--output={output}", "--fresh_eval=True",
    ]  # fmt: skip
    # one combination: the first value of every grid key
    config = load_config(name, "golden11", mg=True)
    for key in config["hyper_parameters"]:
        if isinstance(config[key], list):
            args.append(f"--{key}={json.dumps(config[key][0])}")
    assert main(args) == 0
    written = json.loads(output.read_text())
    assert set(written) == {"valid", "test", "test_mask"} and written["test_mask"] == "train"
    (row,) = [json.loads(line) for line in next((tmp_path / "r").rglob("results.jsonl")).open()]
    assert written["valid"] == row["valid"] and written["test"] == row["test"]
    assert len(written["test"]) == 16 and row["best_epoch"] in (0, 1)
    # The checkpoint, evaluated from its parameters, reproduces the metrics of its best epoch
    # (fresh_eval: training scored from the parameters too).
    (ckpt,) = (tmp_path / "c").rglob("*.pth")
    resumed = tmp_path / "resumed.json"
    args = [
        "--resume",
        str(ckpt),
        f"--cache_dir={tmp_path / 'cache'}",
        f"--data_path={GOLDEN_DATA}",
    ]
    assert main([*args, f"--output={resumed}"]) == 0
    assert json.loads(resumed.read_text()) == written


@pytest.mark.parametrize("name", ["DualGNN", "DRAGON"])
def test_user_graph_models_train_without_a_user_graph_file(name, tiny, tmp_path):
    folder = tiny / "tiny"
    before = sorted(p.name for p in folder.iterdir())
    assert "user_graph_dict.npy" not in before
    args = [
        "--model", name, "--dataset", "tiny", f"--data_path={tiny}", "--epochs=1", "--not_mg",
        "--learning_rate=0.001", "--reg_weight=0.001", f"--results_dir={tmp_path / 'r'}",
        f"--checkpoint_dir={tmp_path / 'c'}", f"--cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    assert main(args) == 0
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written there
    assert len(list((tmp_path / "cache").glob("user-graph-*.npz"))) == 1
    assert "built from the training split" in next((tmp_path / "r").rglob("train.log")).read_text()
