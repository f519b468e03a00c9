"""Models own their training-time randomness: what it is, switching it off, fixing one draw; and
two quirks of the reference that hinge on it (LayerGCN's alternating pruning, FREEDOM's
reg_weight == 0 shortcut)."""

from __future__ import annotations

import pytest
import torch

from conftest import golden_batch, trained
from mgrec import graphs
from mgrec.models import names

RANDOM = {  # model -> the overrides that give it training-time randomness
    "FREEDOM": {"dropout": 0.5},
    "LayerGCN": {"dropout": 0.5},
    "BM3": {"dropout": 0.5},
    "DualGNN": {},  # padding of short neighbour lists (none on the golden data: see below)
    "DRAGON": {},
    "MVGAE": {},  # reparameterisation noise and message dropout
    "SELFCFED_LGN": {},  # edge dropout at a random rate, target dropout
}


def test_models_say_what_is_random_in_their_training(summary, tmp_path):
    for name in names():
        model = trained(name, summary, tmp_path, **RANDOM.get(name, {}))
        assert bool(model.randomness) == (name in RANDOM), name
    assert trained("FREEDOM", summary, tmp_path, dropout=0.0).randomness == ""


def losses(model, batch, context, times=2):
    out = []
    for _ in range(times):
        with context():
            model.train()
            out.append(model.calculate_loss(batch).item())
    return out


@pytest.mark.parametrize("name", ["FREEDOM", "LayerGCN", "BM3"])
def test_deterministic_and_fixed_draws_repeat_and_restore(name, summary, tmp_path):
    model = trained(name, summary, tmp_path, **RANDOM[name])
    batch = golden_batch(name)["batch"]
    model.pre_epoch_processing()  # a pruned training graph, as in an epoch
    kept = {k: getattr(model, k) for k in ("masked_adj", "training_cache") if hasattr(model, k)}
    off = losses(model, batch, model.deterministic)
    assert off[0] == off[1]
    if name != "BM3":  # deterministic() trains on the full graph: the golden fixture's loss
        assert off[0] == pytest.approx(golden_batch(name)["loss"], rel=1e-5)
    first = losses(model, batch, lambda: model.training_draw(7))
    other = losses(model, batch, lambda: model.training_draw(8))
    assert first[0] == first[1]  # one draw is a fixed function of the parameters
    assert first[0] != other[0] and first[0] != off[0]  # other draws, other losses
    for key, value in kept.items():  # the model's own state is put back on exit
        assert getattr(model, key) is value, key
    assert not model.is_deterministic


def test_user_graph_padding_is_drawn_or_repeated(summary, tmp_path):
    model = trained("DualGNN", summary, tmp_path)
    # Shorten user 0's list to 3 neighbours: positions 3..39 get padded.
    model.user_graph.lengths[0] = 3
    with model.deterministic():
        ids = model.neighbour_ids[0].tolist()
        assert ids == [ids[k % 3] for k in range(40)]  # repeated, not drawn
    with model.training_draw(1):
        one = model.neighbour_ids[0].clone()
    with model.training_draw(1):
        assert torch.equal(model.neighbour_ids[0], one)
    with model.training_draw(2):
        assert not torch.equal(model.neighbour_ids[0], one)
    assert set(one.tolist()) <= set(ids[:3])


def test_layergcn_pruning_alternates_degree_sensitive_and_uniform(summary, tmp_path, monkeypatch):
    calls = []
    for kind in ("degree_sensitive_keep", "uniform_keep"):
        original = getattr(graphs, kind)

        def record(*args, _original=original, _kind=kind):
            calls.append(_kind)
            return _original(*args)

        monkeypatch.setattr(graphs, kind, record)
    model = trained("LayerGCN", summary, tmp_path, dropout=0.5)
    n_edges = len(model.edge_weights)
    for _ in range(4):
        model.pre_epoch_processing()
    assert calls == ["degree_sensitive_keep", "uniform_keep"] * 2  # degree-sensitive first [R]
    assert model.masked_adj.coo._nnz() == 2 * int(n_edges * 0.5)  # both directions of each kept row
    assert model.training_state() == {"prune_uniformly": False}
    freedom = trained("FREEDOM", summary, tmp_path, dropout=0.5)
    calls.clear()
    for _ in range(3):
        freedom.pre_epoch_processing()
    assert calls == ["degree_sensitive_keep"] * 3  # FREEDOM never prunes uniformly


def test_freedom_zero_reg_weight_shortcut_changes_nothing_that_reaches_the_scores(
    summary, tmp_path
):
    model = trained("FREEDOM", summary, tmp_path, reg_weight=0.0)
    users, pos, neg = golden_batch("FREEDOM")["batch"]
    model.train()
    loss = model.calculate_loss(torch.stack([users, pos, neg]))
    loss.backward()
    shortcut = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    # The full formula, written out: the feature terms times reg_weight = 0.
    user_all, item_all = model.forward(model.masked_adj)

    def bpr(u, p, n):
        return -torch.nn.functional.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()

    e_u = user_all[users]
    text = model.text_trs(model.text_embedding.weight)
    image = model.image_trs(model.image_embedding.weight)
    features = bpr(e_u, text[pos], text[neg]) + bpr(e_u, image[pos], image[neg])
    full = bpr(e_u, item_all[pos], item_all[neg]) + 0.0 * features
    full.backward()
    assert full.item() == loss.item()
    for key, param in model.named_parameters():
        if key.startswith(("image_", "text_")):  # the feature branch: unused by the scores
            assert shortcut[key] is None and not param.grad.any(), key
        else:
            assert torch.allclose(param.grad, shortcut[key], rtol=1e-6, atol=1e-9), key
