"""MMGCN's and GRCN's reference quirks, checked directly on the golden fixtures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import (
    GOLDEN,
    build_golden_model,
    golden_batch,
    golden_combo,
    reference_state,
    trained,
)
from mgrec import checkpoint
from mgrec.data.dataset import load_dataset
from mgrec.errors import UserError
from mgrec.models import ModelData, get

FROZEN = ("id_embedding", "v_gcn.preference", "t_gcn.preference")


def reference_batch(name: str) -> torch.Tensor:
    return golden_batch(name)["batch"]


def model_data(name: str, summary: dict, tmp_path, **features) -> tuple[dict, ModelData]:
    """The golden ModelData, with ``v_feat``/``t_feat`` replaced as given (e.g. None)."""
    combo = golden_combo(name, summary)
    data = load_dataset(combo, get(name).modalities)
    base = ModelData.from_dataset(data, torch.device("cpu"))
    return combo, dataclasses.replace(base, **features)


# --- MMGCN ---------------------------------------------------------------------------------


def test_mmgcn_frozen_tensors_are_untrained_buffers(summary, tmp_path):
    model = trained("MMGCN", summary, tmp_path)
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for key in FROZEN:
        assert key in model.state_dict() and key in buffers and key not in parameters
    model.train()
    loss = model.calculate_loss(reference_batch("MMGCN"))
    assert loss.shape == () and loss.item() == pytest.approx(
        golden_batch("MMGCN")["loss"], rel=1e-5
    )
    loss.backward()
    assert all(buffers[key].grad is None and not buffers[key].requires_grad for key in FROZEN)


def test_mmgcn_regulariser_moves_the_loss_but_no_gradient(summary, tmp_path):
    losses, grads = [], []
    for reg_weight in (0.0, 0.1):
        model = trained("MMGCN", summary, tmp_path, reg_weight=reg_weight)
        model.train()
        loss = model.calculate_loss(reference_batch("MMGCN"))
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert losses[1] > losses[0]
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])


def test_mmgcn_reference_checkpoint_loads_with_a_warning(summary, tmp_path):
    model, _, _ = build_golden_model("MMGCN", summary, tmp_path)
    notes = checkpoint.load_strict(model, reference_state("MMGCN", frozen=False), "MMGCN.pth")
    warned = [note for note in notes if note.startswith("warning")]
    assert len(warned) == 3 and all("frozen random tensors" in note for note in warned)
    # Built from the reference's seed in its RNG order, the redrawn tensors are its own.
    frozen = checkpoint.read(GOLDEN / "reference" / "MMGCN-frozen.pth")["state_dict"]
    state = model.state_dict()
    assert all(torch.equal(state[key], frozen[key]) for key in FROZEN)


def test_mmgcn_always_three_layers(summary, tmp_path):
    one, _, _ = build_golden_model("MMGCN", summary, tmp_path, n_layers=1)
    keys = list(one.state_dict())
    assert "v_gcn.g_layer3.weight" in keys and "t_gcn.conv_embed_3.weight" in keys


def test_mmgcn_text_only(summary, tmp_path):
    combo, data = model_data("MMGCN", summary, tmp_path, v_feat=None)
    model = get("MMGCN")(combo, data)
    assert not any(key.startswith("v_gcn.") for key in model.state_dict())
    # With the trained model's text branch and id embeddings, the representation is that
    # branch's output alone (a mean over one modality), not the two-modality mean.
    full = trained("MMGCN", summary, tmp_path)
    model.load_state_dict({k: v for k, v in full.state_dict().items() if k in model.state_dict()})
    with torch.no_grad():
        users, items = model.inference_embeddings()
        text = full.t_gcn(full.id_embedding, full.mean_agg)
        both = full.forward()
    assert users.shape == (data.n_users, 64) and items.shape == (data.n_items, 64)
    torch.testing.assert_close(torch.cat([users, items]), text)
    torch.testing.assert_close(both, (full.v_gcn(full.id_embedding, full.mean_agg) + text) / 2)


# --- GRCN ----------------------------------------------------------------------------------


def test_grcn_stale_scores_come_from_the_last_training_forward(summary, tmp_path):
    model = trained("GRCN", summary, tmp_path)
    users = torch.arange(model.n_users)
    with torch.no_grad():
        before = model.full_sort_predict(users)
    model.train()
    loss = model.calculate_loss(reference_batch("GRCN"))
    assert loss.shape == (1,)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    model.eval()
    with torch.no_grad():
        after = model.full_sort_predict(users)
        stale = model.scorer()(users)
        model.fresh_eval = True
        fresh = model.scorer()(users)
    assert not torch.allclose(before, after)
    assert torch.equal(stale, before)  # the cache of the forward before the step [R]
    assert torch.equal(fresh, after)


def test_grcn_routing_only_renormalises(summary, tmp_path):
    stored = np.load(GOLDEN / "reference" / "GRCN-scores.npz")
    users = torch.from_numpy(stored["users"])
    scores = []
    for n_layers in (0, 3):
        model = trained("GRCN", summary, tmp_path, n_layers=n_layers)
        model.eval()
        with torch.no_grad():
            scores.append(model.full_sort_predict(users))
    assert torch.allclose(scores[0], scores[1], rtol=0, atol=1e-6)


def test_grcn_needs_image_features(summary, tmp_path):
    combo, data = model_data("GRCN", summary, tmp_path, v_feat=None)
    with pytest.raises(UserError, match="image features"):
        get("GRCN")(combo, data)


def test_grcn_image_only(summary, tmp_path):
    combo, data = model_data("GRCN", summary, tmp_path, t_feat=None)
    model = get("GRCN")(combo, data)
    assert model.model_specific_conf.shape == (data.n_users + data.n_items, 1)
    assert not any(key.startswith("t_gcn.") for key in model.state_dict())
    # With the trained model's image branch, id embeddings and image confidence: [id || C_v],
    # the id part propagated with relu(image attention x image confidence) alone.
    full = trained("GRCN", summary, tmp_path)
    state = {k: v for k, v in full.state_dict().items() if k in model.state_dict()}
    state["model_specific_conf"] = full.model_specific_conf[:, :1]
    model.load_state_dict(state)
    with torch.no_grad():
        users, items = model.inference_embeddings()
        content, alpha = full.v_gcn(full.edges)
        weights = torch.relu(alpha * full.model_specific_conf[full.edges.source, 0])
        expected = torch.cat([full.id_gcn(full.edges, weights), content], dim=1)
    assert users.shape == (data.n_users, 128) and items.shape == (data.n_items, 128)
    torch.testing.assert_close(torch.cat([users, items]), expected)
