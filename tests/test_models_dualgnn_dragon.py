"""DualGNN and DRAGON: the reference's quirks, asserted directly (parity is in test_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import build_golden_model, golden_batch, golden_combo, trained
from mgrec import checkpoint
from mgrec.data.user_graph import UserGraph
from mgrec.errors import UserError
from mgrec.models import get
from mgrec.models.modality_gcn import propagate

MODELS = ["DualGNN", "DRAGON"]


def neighbour_sum(x, ids, weights):
    """sum_k weights[u, k] x[ids[u, k]], written independently of the model (a gather)."""
    return (weights.unsqueeze(-1) * x[ids]).sum(dim=1)


@pytest.mark.parametrize("name", MODELS)
def test_batch_is_not_modified(name, summary, tmp_path):
    model = trained(name, summary, tmp_path)
    batch = golden_batch(name)["batch"]
    before = batch.clone()
    first = model.calculate_loss(batch)
    assert torch.equal(batch, before)
    # the MG trainer's second pass on the same tensor sees the same items (no double offset)
    assert torch.allclose(model.calculate_loss(batch), first)


def test_dualgnn_user_rep_uses_the_in_place_sum(summary, tmp_path):
    model = trained("DualGNN", summary, tmp_path)
    u = model.n_users
    with torch.no_grad():
        r_v, r_t = model.modality_representations().split(64, dim=1)
        users, items = model.inference_embeddings()
    w0, w1 = model.weight_u[:, 0], model.weight_u[:, 1]
    base = w0 * (r_v[:u] + r_t[:u]) + w1 * r_t[:u]
    expected = base + neighbour_sum(base, model.neighbour_ids, model.neighbour_weights)
    torch.testing.assert_close(users, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(items, r_v[u:] + r_t[u:])
    textbook = w0 * r_v[:u] + w1 * r_t[:u]
    assert not torch.allclose(base, textbook, rtol=1e-2, atol=1e-3)


def test_dragon_cat_construction_and_item_graph(summary, tmp_path):
    model = trained("DRAGON", summary, tmp_path)
    assert model.n_mm_layers == 1
    u = model.n_users
    with torch.no_grad():
        r = model.modality_representations()
        users, items = model.inference_embeddings()
    r_v, r_t = r.split(64, dim=1)
    base = torch.cat([model.weight_u[:, 0] * r_v[:u], model.weight_u[:, 1] * r_t[:u]], dim=1)
    expected = base + neighbour_sum(base, model.neighbour_ids, model.neighbour_weights)
    torch.testing.assert_close(users, expected, rtol=1e-5, atol=1e-6)
    item_base = r[u:]
    torch.testing.assert_close(items, item_base + model.mm_adj.to_dense() @ item_base)
    assert users.shape == (u, 128) and items.shape == (model.n_items, 128)


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_base_2_bpr_plus_mean_square_regulariser(name, summary, tmp_path):
    model = trained(name, summary, tmp_path)
    users, pos, neg = golden_batch(name)["batch"]
    with torch.no_grad():
        loss = model.calculate_loss(torch.stack([users, pos, neg]))
        user_e, item_e = model.inference_embeddings()
    margin = (user_e[users] * (item_e[pos] - item_e[neg])).sum(dim=1)
    bpr = -torch.log2(torch.sigmoid(margin)).mean()
    reg = (
        (model.v_gcn.preference[users] ** 2).mean()
        + (model.t_gcn.preference[users] ** 2).mean()
        + (model.weight_u**2).mean()
    )
    if name == "DualGNN":  # DRAGON has no weight_i term
        reg = reg + (model.weight_i**2).mean()
    torch.testing.assert_close(loss, bpr + model.reg_weight * reg)
    assert loss.dim() == 0


@pytest.mark.parametrize("name", MODELS)
def test_alias_keys_share_storage_and_are_optional_on_load(name, summary, tmp_path):
    model = trained(name, summary, tmp_path)
    for alias, canonical in (("v_preference", "v_gcn"), ("t_preference", "t_gcn")):
        assert getattr(model, alias) is getattr(model, canonical).preference
        state = model.state_dict()
        assert state[alias].data_ptr() == state[f"{canonical}.preference"].data_ptr()
    assert "result_embed" not in model.state_dict()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fresh, _, _ = build_golden_model(name, summary, tmp_path / "fresh")
    without = {k: v for k, v in state.items() if k not in ("v_preference", "t_preference")}
    checkpoint.load_strict(fresh, without, "test")
    torch.testing.assert_close(fresh.v_preference, state["v_gcn.preference"], rtol=0, atol=0)
    torch.testing.assert_close(fresh.t_gcn.preference, state["t_gcn.preference"], rtol=0, atol=0)
    fresh.v_gcn.preference.data.add_(1.0)  # still one tensor after loading
    assert torch.equal(fresh.v_preference, fresh.v_gcn.preference)
    fresh.to(torch.float64)  # and after moving the model (as .to(device) does)
    assert fresh.v_preference is fresh.v_gcn.preference
    assert fresh.state_dict()["t_preference"].dtype == torch.float64
    assert [k for k, _ in fresh.named_parameters()][:4] == [
        "weight_u",
        "weight_i",
        "v_preference",
        "t_preference",
    ]


def test_dualgnn_scores_stale_cache_unless_fresh_eval(summary, tmp_path):
    model = trained("DualGNN", summary, tmp_path)
    assert model.stale_scores
    users = torch.arange(10)
    model.calculate_loss(golden_batch("DualGNN")["batch"])
    cached_user, cached_item = model.training_cache
    with torch.no_grad():  # the cache is the training forward's representation, as it was
        fresh_user, fresh_item = model.inference_embeddings()
    torch.testing.assert_close(cached_user, fresh_user)
    torch.testing.assert_close(cached_item, fresh_item)
    with torch.no_grad():
        before = model.full_sort_predict(users)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # one "optimizer step" after the cached forward
        stale = model.scorer()(users)
        now = model.full_sort_predict(users)
    torch.testing.assert_close(stale, before)
    torch.testing.assert_close(stale, cached_user[users] @ cached_item.T)
    assert not torch.allclose(stale, now)
    model.fresh_eval = True
    with torch.no_grad():
        torch.testing.assert_close(model.scorer()(users), now)


def test_dragon_always_recomputes(summary, tmp_path):
    model = trained("DRAGON", summary, tmp_path)
    assert not model.stale_scores
    users = torch.arange(10)
    model.calculate_loss(golden_batch("DRAGON")["batch"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        torch.testing.assert_close(model.scorer()(users), model.full_sort_predict(users))


def sparse_user_graph(n_users):
    """User 0: no neighbours; user 1: one; user 2: three; everyone else: 45 (no padding)."""
    width = 45
    neighbours = np.zeros((n_users, width), dtype=np.int64)
    weights = np.zeros((n_users, width), dtype=np.float32)
    lengths = np.full(n_users, width, dtype=np.int64)
    rng = np.random.default_rng(0)
    for u in range(3, n_users):
        neighbours[u] = rng.choice(np.delete(np.arange(n_users), u), width, replace=False)
        weights[u] = np.sort(rng.integers(1, 6, width))[::-1]
    lengths[0] = 0
    neighbours[1, 0], weights[1, 0], lengths[1] = 7, 2.0, 1
    neighbours[2, :3], weights[2, :3], lengths[2] = [5, 9, 11], [3.0, 2.0, 1.0], 3
    return UserGraph(neighbours, weights, lengths)


@pytest.mark.parametrize("name", MODELS)
def test_neighbour_table_padding_and_empty_users(name, summary, tmp_path):
    model = trained(name, summary, tmp_path)
    model.user_graph = sparse_user_graph(model.n_users)
    saved = np.random.get_state()
    np.random.seed(3)
    model.pre_epoch_processing()
    ids, weights = model.neighbour_ids, model.neighbour_weights
    assert ids.shape == weights.shape == (model.n_users, 40)
    assert ids.device == weights.device == model.device
    # no neighbours: ids 0, weights 0, so the neighbour term is 0
    assert not ids[0].any() and not weights[0].any()
    # one neighbour: padded with itself 40 times, weights softmax of 40 equal values
    assert (ids[1] == 7).all()
    torch.testing.assert_close(weights[1], torch.full((40,), 1 / 40))
    # three neighbours: the first three kept, the rest drawn from them, softmax over the list
    assert ids[2, :3].tolist() == [5, 9, 11] and set(ids[2].tolist()) <= {5, 9, 11}
    raw = torch.tensor([{5: 3.0, 9: 2.0, 11: 1.0}[int(i)] for i in ids[2]])
    torch.testing.assert_close(weights[2], raw.softmax(0))
    # at least 40: the first 40, softmax weights
    row = torch.from_numpy(model.user_graph.weights[3, :40])
    assert ids[3].tolist() == model.user_graph.neighbours[3, :40].tolist()
    torch.testing.assert_close(weights[3], row.softmax(0))

    x = torch.randn(model.n_users, 16)
    out = model.aggregate_users(x)
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], x[1] + x[7])
    torch.testing.assert_close(out, x + neighbour_sum(x, ids, weights))
    # the padding comes from NumPy's global RNG, redrawn every epoch
    np.random.seed(3)
    model.pre_epoch_processing()
    np.random.set_state(saved)
    assert torch.equal(model.neighbour_ids, ids)


@pytest.mark.parametrize("name", MODELS)
def test_scoring_before_the_first_epoch_draws_a_table(name, summary, tmp_path):
    model, _, _ = build_golden_model(name, summary, tmp_path)
    model.user_graph = sparse_user_graph(model.n_users)  # short lists: the padding is drawn
    saved = np.random.get_state()
    try:
        model.neighbours = None
        np.random.seed(5)
        with torch.no_grad():
            scores = model.full_sort_predict(torch.arange(4))
        assert model.neighbours is not None
        drawn = model.neighbour_ids.clone()
        np.random.seed(5)  # the same draw as an epoch's, then the same scores
        model.pre_epoch_processing()
        with torch.no_grad():
            expected = model.full_sort_predict(torch.arange(4))
    finally:
        np.random.set_state(saved)
    assert torch.equal(model.neighbour_ids, drawn)
    assert scores.shape == (4, model.n_items)
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_aggr_mode_other_than_add_is_rejected(name, summary):
    combo = golden_combo(name, summary)
    get(name).check_config(combo)
    with pytest.raises(UserError, match="aggr_mode"):
        get(name).check_config({**combo, "aggr_mode": "mean"})


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_exactly_the_used_parameters(name, summary, tmp_path):
    model = trained(name, summary, tmp_path)
    model.calculate_loss(golden_batch(name)["batch"]).backward()
    got = {k for k, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    used = {"weight_u", "v_preference", "t_preference"} | {
        f"{m}_gcn.{layer}.{p}"
        for m in "vt"
        for layer in ("MLP", "MLP_1")
        for p in ("weight", "bias")
    }
    assert got == (used | {"weight_i"} if name == "DualGNN" else used)


def test_propagation_is_symmetric_normalised_over_both_directions(summary, tmp_path):
    model = trained("DualGNN", summary, tmp_path)
    dense = model.propagation.to_dense()
    torch.testing.assert_close(dense, dense.T)
    x = F.normalize(torch.randn(dense.shape[0], 4))
    h = dense @ x
    torch.testing.assert_close(propagate(model.propagation, x), h + x + dense @ h)
