"""FREEDOM's and LayerGCN's pruning state: which scheme a fixed draw uses, what is put back after
an analysis, what a saved training state restores, and when no pruning happens at all.

Written against mutants of ``mgrec/models/pruning.py`` that survived the suite (see
benchmarks/MUTATION.md)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_golden_model
from mgrec import graphs
from mgrec.rng import seeded


def pruned(model, seed: int, uniform: bool) -> torch.Tensor:
    """The dense pruned graph of one draw with ``seed``, made here from the graph functions."""
    n_edges = len(model.edge_weights)
    n_keep = int(n_edges * (1.0 - model.dropout))
    with seeded(seed):
        if uniform:
            keep = graphs.uniform_keep(n_edges, n_keep, "cpu")
        else:
            keep = graphs.degree_sensitive_keep(model.edge_weights, n_keep)
    return graphs.pruned_adj(
        model.edge_users, model.edge_items, keep, model.n_users, model.n_items
    ).to_dense()


@pytest.mark.parametrize(("name", "alternate"), [("LayerGCN", True), ("FREEDOM", False)])
def test_a_fixed_draw_uses_the_scheme_of_its_epoch(name, alternate, summary, tmp_path):
    model, _, _ = build_golden_model(name, summary, tmp_path, dropout=0.5)
    for draw in range(4):
        with model.training_draw(11, draw):
            got = model.masked_adj.to_dense()
        # LayerGCN: even draws degree-sensitive, odd draws uniform (as its epochs); FREEDOM:
        # degree-sensitive every time
        uniform = alternate and draw % 2 == 1
        assert torch.equal(got, pruned(model, 11, uniform)), draw


def test_a_fixed_draw_puts_the_alternation_back(summary, tmp_path):
    model, _, _ = build_golden_model("LayerGCN", summary, tmp_path, dropout=0.5)
    assert model.training_state() == {"prune_uniformly": False}  # degree-sensitive first
    model.pre_epoch_processing()
    assert model.training_state() == {"prune_uniformly": True}  # the next epoch is uniform
    graph = model.masked_adj
    model.prune_uniformly = False  # (as two epochs later)
    with model.training_draw(3, 0):  # a draw for an analysis (it moves the flag) ...
        assert model.prune_uniformly is True
    assert model.prune_uniformly is False and model.masked_adj is graph  # ... then as it was
    with model.deterministic():
        assert model.masked_adj is model.norm_adj
    assert model.prune_uniformly is False and model.masked_adj is graph


@pytest.mark.parametrize("flag", [True, False])
def test_the_training_state_round_trips(flag, summary, tmp_path):
    model, _, _ = build_golden_model("LayerGCN", summary, tmp_path, dropout=0.5)
    model.prune_uniformly = flag
    state = model.training_state()
    other, _, _ = build_golden_model("LayerGCN", summary, tmp_path, dropout=0.5)
    other.prune_uniformly = not flag
    other.load_training_state(state)
    assert other.prune_uniformly is flag
    other.load_training_state({})  # a state saved before the flag existed: degree-sensitive
    assert other.prune_uniformly is False


@pytest.mark.parametrize("name", ["FREEDOM", "LayerGCN"])
def test_no_pruning_without_dropout_or_inside_deterministic(name, summary, tmp_path):
    model, _, _ = build_golden_model(name, summary, tmp_path, dropout=0.0)
    model.pre_epoch_processing()
    assert model.masked_adj is model.norm_adj and model.training_state() == {
        "prune_uniformly": False
    }  # the alternation does not move either
    model, _, _ = build_golden_model(name, summary, tmp_path, dropout=0.5)
    with model.deterministic():
        model.pre_epoch_processing()  # an epoch inside an analysis: the full graph
        assert model.masked_adj is model.norm_adj
