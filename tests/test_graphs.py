"""Shared graph machinery: the normalised bipartite graph, kNN item graphs, pruning, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrec import graphs
from mgrec.data.cache import Cache
from mgrec.experiment import frozen_item_graph
from mgrec.models.base import ModelData


def test_bipartite_norm_adj_by_hand():
    # users 0,1; items 0,1 (nodes 2,3); the duplicate (0, 0) collapses
    adj = graphs.bipartite_norm_adj(
        np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), 2, 2, "cpu"
    ).to_dense()
    d = {0: 2, 1: 1, 2: 1, 3: 2}
    expected = torch.zeros(4, 4)
    for u, i in [(0, 2), (0, 3), (1, 3)]:
        expected[u, i] = expected[i, u] = 1 / np.sqrt(d[u] * d[i])
    assert torch.allclose(adj, expected)


@pytest.mark.parametrize("chunk_bytes", [4 * 37, 1 << 28])
def test_knn_chunked_equals_dense(chunk_bytes):
    features = torch.randn(37, 9)
    indices, values = graphs.knn_item_graph(features, k=4, chunk_bytes=chunk_bytes)
    normed = features / features.norm(dim=1, keepdim=True)
    dense_top = torch.topk(normed @ normed.T, 4, dim=-1).indices
    assert torch.equal(indices[1].view(37, 4), dense_top)
    assert torch.equal(indices[0], torch.arange(37).repeat_interleave(4))
    assert torch.allclose(values, torch.full_like(values, 1 / 4))


def test_mixed_modality_graph_weights():
    v, t = torch.randn(20, 5), torch.randn(20, 3)
    mixed = graphs.mixed_modality_graph(v, t, 3, 0.1).to_dense()
    alone_v = graphs.sparse(*graphs.knn_item_graph(v, 3), 20).to_dense()
    alone_t = graphs.sparse(*graphs.knn_item_graph(t, 3), 20).to_dense()
    assert torch.allclose(mixed, 0.1 * alone_v + 0.9 * alone_t)
    assert torch.allclose(mixed.sum(1), torch.ones(20))  # k entries of 1/k per modality
    assert torch.equal(graphs.mixed_modality_graph(None, t, 3, 0.1).to_dense(), alone_t)


def test_pruning_keeps_count_and_renormalises():
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([0, 1, 1, 0, 1, 2])
    weights = graphs.edge_norm_values(users, items, 3, 3)
    assert torch.allclose(weights[0], torch.tensor(1 / np.sqrt(2 * 2), dtype=torch.float32))
    torch.manual_seed(0)
    keep = graphs.degree_sensitive_keep(weights, 4)
    assert len(set(keep.tolist())) == 4
    adj = graphs.pruned_adj(users, items, keep, 3, 3).to_dense()
    assert torch.equal(adj, adj.T)
    ku, ki = users[keep], items[keep]
    for u, i in zip(ku.tolist(), ki.tolist(), strict=True):
        du, di = (ku == u).sum().item(), (ki == i).sum().item()
        assert adj[u, 3 + i].item() == pytest.approx(1 / np.sqrt(du * di), rel=1e-5)


def test_item_graph_is_cached_by_its_inputs(tmp_path):
    cache = Cache(tmp_path)

    def model_data(v):
        return ModelData(4, 10, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                         v, None, torch.device("cpu"))  # fmt: skip

    v = torch.randn(10, 6)
    first = frozen_item_graph(model_data(v), 3, 0.1, cache, {"v": "file-hash-1"})
    assert len(list(tmp_path.glob("item-knn-*.npz"))) == 1
    again = frozen_item_graph(model_data(v.clone()), 3, 0.1, cache, {"v": "file-hash-1"})
    assert torch.equal(first.to_dense(), again.to_dense())
    assert len(list(tmp_path.glob("item-knn-*.npz"))) == 1  # served from the cache
    frozen_item_graph(model_data(v + 1), 3, 0.1, cache, {"v": "file-hash-2"})  # other file
    frozen_item_graph(model_data(v), 4, 0.1, cache, {"v": "file-hash-1"})  # another k
    assert len(list(tmp_path.glob("item-knn-*.npz"))) == 3
    uncached = frozen_item_graph(model_data(v), 3, 0.1, None, {})  # shifted features: not stored
    assert torch.equal(uncached.to_dense(), first.to_dense())
    assert len(list(tmp_path.glob("item-knn-*.npz"))) == 3


def test_edge_dots_with_repeated_entries_match_gathered_rows():
    # a sum of graphs (LATTICE's learned + frozen ones) repeats (row, col) entries; torch's
    # sampled product refuses such a pattern at some sizes, so they take the gathered path
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])
    cols = torch.tensor([1, 1, 2, 0, 3, 3, 0, 1])  # (0, 1) and (2, 3) twice
    edges = graphs.EdgeList(cols, rows, 4)
    assert edges.repeated
    a, b = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    expected = (a[edges.target] * b[edges.source]).sum(-1)
    assert torch.allclose(edges.sampled_dots(a, b), expected)
    unique = graphs.EdgeList(torch.tensor([1, 2, 0]), torch.tensor([0, 0, 1]), 4)
    assert not unique.repeated
    assert torch.allclose(
        unique.sampled_dots(a, b), (a[unique.target] * b[unique.source]).sum(-1), atol=1e-6
    )
