"""Parity with the reference implementation, on the golden fixtures it produced.

Tolerances are those of tests/fixtures/golden/README.md (the reference meets them itself).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from conftest import GOLDEN, build_golden_model, golden_batch, reference_state
from mgrec import checkpoint
from mgrec.evaluator import Evaluator
from mgrec.metrics import round4
from mgrec.models import names

MODELS_UNDER_TEST = names()


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_state_dict_keys_and_shapes(name, summary, tmp_path):
    model, _, _ = build_golden_model(name, summary, tmp_path)
    expected = {k: list(v) for k, v in summary["models"][name]["state_dict_keys"].items()}
    # MMGCN's frozen random tensors are buffers here (the reference keeps them out of its dict).
    ours = {
        k: list(v.shape) for k, v in model.state_dict().items() if k not in model.optional_state
    }
    assert list(ours) == list(expected)
    assert ours == expected


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_scores(name, summary, tmp_path):
    model, _, _ = build_golden_model(name, summary, tmp_path)
    checkpoint.load_strict(model, reference_state(name), name)
    stored = np.load(GOLDEN / "reference" / f"{name}-scores.npz")
    model.eval()
    with torch.no_grad():
        ours = model.full_sort_predict(torch.from_numpy(stored["users"])).numpy()
    reference = stored["scores"]
    assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_batch_loss_and_gradients(name, summary, tmp_path):
    # Training-time randomness off, as when the fixtures were made: full graphs (the masked
    # graph starts as the full one), BM3's target dropout at 0, SELFCFED_LGN's edge and target
    # dropout off (it has no setting for its edge dropout), MVGAE in eval mode (no noise).
    extra = {"dropout": 0.0} if name == "BM3" else {}
    model, _, _ = build_golden_model(name, summary, tmp_path, **extra)
    checkpoint.load_strict(model, reference_state(name), name)
    stored = golden_batch(name)
    model.train(name != "MVGAE")
    batch = stored["batch"].clone()
    with model.deterministic() if name == "SELFCFED_LGN" else contextlib.nullcontext():
        loss = model.calculate_loss(batch)
    if loss.requires_grad:  # ItemKNNCBF's loss is a constant 0.0 without a graph
        loss.backward()
    assert abs(loss.item() - stored["loss"]) <= 1e-5 * abs(stored["loss"])
    assert torch.equal(batch, stored["batch"]), "the model must not edit its batch"
    reference = stored["grads"]
    largest = max((g.abs().max().item() for g in reference.values()), default=0.0)
    for key, param in model.named_parameters():
        if key in reference:
            assert param.grad is not None, f"{key} got no gradient"
            error = (param.grad - reference[key]).abs().max().item()
            assert error <= 1e-4 * reference[key].abs().max().item() + 1e-6 * largest, key
        else:
            assert param.grad is None or not param.grad.any(), (
                f"{key} has a gradient the reference lacks"
            )


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
@pytest.mark.parametrize("split", ["valid", "test"])
def test_metrics_from_reference_scores(name, split, summary, tmp_path):
    """Our evaluator, ranking the reference's scores (train items masked), gives its metrics."""
    _, data, combo = build_golden_model(name, summary, tmp_path)
    stored = np.load(GOLDEN / "reference" / f"{name}-scores.npz")
    row_of = {int(u): r for r, u in enumerate(stored["users"])}
    scores = torch.from_numpy(stored["scores"])
    evaluator = Evaluator(
        getattr(data, split),
        data.train,
        data.n_items,
        combo["topk"],
        combo["metrics"],
        batch_size=100,
    )
    ours = evaluator.evaluate(lambda users: scores[[row_of[int(u)] for u in users]].clone())
    expected = summary["models"][name][split]
    assert {k: round4(v) for k, v in ours.items()} == expected
