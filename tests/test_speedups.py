"""The fast code paths equal the plain maths they replace (the golden parity tests check the
models end to end; these pin each rewritten operation on random inputs, duplicates included)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import GOLDEN, build_golden_model, golden_batch, reference_state
from mgrec import checkpoint, graphs
from mgrec.evaluator import FactorScorer
from mgrec.models import names, ops
from mgrec.models.grcn import attention
from mgrec.models.layergcn import _plain_refine, refine
from mgrec.models.losses import cosine_to_target, gather_rows, info_nce
from mgrec.models.mmgcn import GatedModalityGCN
from mgrec.models.ops import _RowsLinear, distinct_rows, group_entries, linear, rows_linear


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_edges(n_nodes: int, n_edges: int, seed: int = 0) -> torch.Tensor:
    """[2, E] edges (source, target) with duplicated edges and nodes without in-edges."""
    g = generator(seed)
    edges = torch.randint(0, n_nodes - 2, (2, n_edges), generator=g)  # last nodes: isolated
    return torch.cat([edges, edges[:, : n_edges // 5]], dim=1)  # every 5th edge twice


# --- the reference formulations (what the models computed before) ----------------------------


def gathered_weighted_sum(x, edges, weights, n_nodes):
    """out_i = sum over edges (j -> i) of w_e x_j, as gathered messages and index_add."""
    source, target = edges
    messages = x[source] * weights.reshape(-1, 1)
    return torch.zeros(n_nodes, x.shape[1], dtype=x.dtype).index_add(0, target, messages)


def gathered_attention(x, edges):
    source, target = edges
    scores = (x[target] * x[source]).sum(dim=1)
    return graphs.segment_softmax(scores, target, x.shape[0])


def entry_order(edge_list: graphs.EdgeList, edges: torch.Tensor) -> torch.Tensor:
    """For each entry of ``edge_list``, an edge of ``edges`` with the same endpoints."""
    n = edge_list.n_nodes
    keys = edges[1] * n + edges[0]
    order = torch.argsort(keys, stable=True)
    return order[torch.searchsorted(keys[order], edge_list.target * n + edge_list.source)]


# --- GRCN's sparse edge products ---------------------------------------------------------------


def test_edge_list_keeps_every_edge_in_target_order():
    edges = random_edges(30, 200)
    edge_list = graphs.EdgeList.from_edges(edges, 30)
    assert len(edge_list) == edges.shape[1]
    keys = edge_list.target * 30 + edge_list.source
    assert torch.equal(keys, torch.sort(edges[1] * 30 + edges[0]).values)


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_weighted_sum_equals_gather_and_index_add(seed):
    n, d = 40, 7
    edges = random_edges(n, 300, seed)
    edge_list = graphs.EdgeList.from_edges(edges, n)
    g = generator(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
    weights = torch.rand(len(edge_list), dtype=torch.float64, generator=g, requires_grad=True)
    upstream = torch.randn(n, d, dtype=torch.float64, generator=g)

    ours = graphs.weighted_sum(edge_list, x, weights)
    grad_x, grad_w = torch.autograd.grad(ours, (x, weights), upstream)
    # the same weights on the original edge list: entry k of edge_list is edge (source_k ->
    # target_k), so gathering by source and adding by target in entry order is the reference
    reference_edges = torch.stack([edge_list.source, edge_list.target])
    expected = gathered_weighted_sum(x, reference_edges, weights, n)
    exp_x, exp_w = torch.autograd.grad(expected, (x, weights), upstream)
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(grad_x, exp_x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(grad_w, exp_w, rtol=1e-12, atol=1e-12)
    assert ours[-2:].abs().max() == 0  # nodes without in-edges receive nothing


def test_sparse_attention_equals_gathered_attention():
    n, d = 35, 6
    edges = random_edges(n, 250)
    edge_list = graphs.EdgeList.from_edges(edges, n)
    x = torch.randn(n, d, dtype=torch.float64, generator=generator(3), requires_grad=True)
    upstream = torch.randn(len(edge_list), dtype=torch.float64, generator=generator(4))

    ours = attention(x, edge_list)
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    # the reference's attention over the original edges, read in edge_list's entry order
    expected = gathered_attention(x, edges)[entry_order(edge_list, edges)]
    (grad_expected,) = torch.autograd.grad(expected, x, upstream)
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(grad_ours, grad_expected, rtol=1e-10, atol=1e-12)
    # each target's attention sums to one
    sums = torch.zeros(n, dtype=torch.float64).index_add(0, edge_list.target, ours.detach())
    assert torch.allclose(sums[edge_list.target.unique()], torch.ones(1, dtype=torch.float64))


def test_edge_products_support_double_backward():
    n = 8
    edge_list = graphs.EdgeList.from_edges(random_edges(n, 20), n)
    g = generator(5)
    x = torch.randn(n, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(n, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.rand(len(edge_list), dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x, w: graphs.weighted_sum(edge_list, x, w).tanh(), (x, w)
    )
    assert torch.autograd.gradgradcheck(
        lambda x, y: graphs.edge_dots(edge_list, x, y).tanh(), (x, y)
    )


# --- sparse operators: the embedding_bag product, the direct neighbour operator ----------------


def test_sparse_op_product_and_transpose_equal_dense():
    g = generator(6)
    dense = torch.rand(9, 7, dtype=torch.float64, generator=g)
    dense[dense < 0.6] = 0.0
    dense[4] = 0.0  # an empty row
    op = graphs.SparseOp(dense.to_sparse())
    x = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    upstream = torch.randn(9, 3, dtype=torch.float64, generator=g)
    out = op @ x
    (grad,) = torch.autograd.grad(out, x, upstream)
    assert torch.allclose(out, dense @ x, rtol=1e-12, atol=1e-14)
    assert torch.allclose(grad, dense.T @ upstream, rtol=1e-12, atol=1e-14)
    assert torch.equal(op.to_dense(), dense)
    assert op.csr._nnz() == int((dense != 0).sum())


def coalesced_neighbour_operator(ids, weights, n_users):
    """The operator as it was built before: a coalesced COO matrix (duplicates merged)."""
    rows = torch.arange(len(ids)).repeat_interleave(ids.shape[1])
    indices = torch.stack([rows, ids.flatten()])
    return graphs.SparseOp(graphs.sparse(indices, weights.flatten(), n_users))


def test_direct_neighbour_operator_equals_the_coalesced_one_with_padding():
    n_users, k = 25, 6
    g = generator(7)
    ids = torch.randint(0, n_users, (n_users, k), generator=g)
    ids[:5, 3:] = ids[:5, :3]  # padded rows: repeated neighbours
    ids[5:8, 1:] = ids[5:8, :1]  # a single neighbour repeated k times
    weights = torch.softmax(torch.randn(n_users, k, generator=g), dim=1)
    weights[8] = 0.0  # a user without neighbours: neighbour 0, weight 0
    ids[8] = 0
    direct = graphs.neighbour_sum(ids, weights, n_users)
    coalesced = coalesced_neighbour_operator(ids, weights, n_users)
    assert torch.equal(direct.to_dense(), coalesced.to_dense())  # the same matrix

    x = torch.randn(n_users, 4, generator=g, requires_grad=True)
    upstream = torch.randn(n_users, 4, generator=g)
    ours = direct @ x
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    before = coalesced @ x
    (grad_before,) = torch.autograd.grad(before, x, upstream)
    # merged duplicates are (w1 + w2) x, separate terms w1 x + w2 x: equal up to rounding
    assert torch.allclose(ours, before, rtol=1e-6, atol=1e-7)
    assert torch.allclose(grad_ours, grad_before, rtol=1e-6, atol=1e-7)
    # and exactly the reference's weighted sum over each user's list, term by term (float64)
    x64 = x.detach().double()
    per_entry = (weights.double().unsqueeze(2) * x64[ids]).sum(dim=1)
    assert torch.allclose(direct @ x64, per_entry, rtol=1e-13, atol=1e-15)
    assert ours[8].abs().max() == 0


def test_neighbour_operator_in_the_model_is_the_sampled_table(summary, tmp_path):
    model, _, _ = build_golden_model("DualGNN", summary, tmp_path)
    ids, weights = model.neighbour_ids, model.neighbour_weights
    x = torch.randn(model.n_users, 5, dtype=torch.float64, generator=generator(8))
    per_entry = (weights.double().unsqueeze(2) * x[ids]).sum(dim=1)
    assert torch.allclose(model.neighbours @ x, per_entry, rtol=1e-13, atol=1e-15)


def test_layer_mean_equals_stacked_mean():
    g = generator(9)
    dense = torch.rand(12, 12, generator=g)
    op = graphs.SparseOp(dense.to_sparse())
    x = torch.randn(12, 5, generator=g)
    for n_layers in (0, 1, 2, 3):
        layers, h = [x], x
        for _ in range(n_layers):
            h = op @ h
            layers.append(h)
        expected = torch.stack(layers, dim=1).mean(dim=1)
        assert torch.allclose(graphs.layer_mean(op, x, n_layers), expected, rtol=1e-6, atol=1e-7)


# --- losses and fused element-wise operations ----------------------------------------------


def test_gather_rows_equals_separate_indexing():
    g = generator(10)
    table = torch.randn(20, 4, generator=g, requires_grad=True)
    a, b = torch.randint(0, 20, (15,), generator=g), torch.randint(0, 20, (9,), generator=g)
    ra, rb = gather_rows(table, a, b)
    assert torch.equal(ra, table[a]) and torch.equal(rb, table[b])
    up_a, up_b = torch.randn(15, 4, generator=g), torch.randn(9, 4, generator=g)
    (ours,) = torch.autograd.grad((ra * up_a).sum() + (rb * up_b).sum(), table)
    (expected,) = torch.autograd.grad((table[a] * up_a).sum() + (table[b] * up_b).sum(), table)
    assert torch.allclose(ours, expected, rtol=1e-6, atol=1e-7)


def plain_info_nce(a, b, temperature):
    """The reference's in-batch loss: cross-entropy of a b^T / t with diagonal targets."""
    return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_info_nce_equals_cross_entropy(dtype):
    g = generator(11)
    a = torch.randn(50, 8, dtype=dtype, generator=g, requires_grad=True)
    b = torch.randn(50, 8, dtype=dtype, generator=g, requires_grad=True)
    ours = info_nce(a, b, 0.2)
    expected = plain_info_nce(a, b, 0.2)
    grads = torch.autograd.grad(ours, (a, b))
    expected_grads = torch.autograd.grad(expected, (a, b))
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert torch.allclose(ours, expected, rtol=tol, atol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, rtol=tol * 10, atol=tol * want.abs().max().item())


def test_info_nce_over_distinct_items_equals_the_batch_loss():
    """SLMRec's losses on a batch with repeated items: the [B, B] loss equals the loss over
    the distinct items with their counts (FAC: rows and columns; main: columns only)."""
    g = generator(12)
    n_items, batch, d = 15, 60, 6
    pos = torch.randint(0, n_items, (batch,), generator=g)
    users = torch.randint(0, 40, (batch,), generator=g)
    item_a = torch.randn(n_items, d, dtype=torch.float64, generator=g, requires_grad=True)
    item_b = torch.randn(n_items, d, dtype=torch.float64, generator=g, requires_grad=True)
    user_t = torch.randn(40, d, dtype=torch.float64, generator=g, requires_grad=True)
    items, column, counts = group_entries(pos)
    assert torch.equal(items[column], pos) and counts.sum() == batch

    fac = info_nce(item_a[items], item_b[items], 0.5, counts=counts, weights=counts)
    fac_batch = plain_info_nce(item_a[pos], item_b[pos], 0.5)
    main = info_nce(user_t[users], item_b[items], 0.2, targets=column, counts=counts)
    main_batch = plain_info_nce(user_t[users], item_b[pos], 0.2)
    assert torch.allclose(fac, fac_batch, rtol=1e-13) and torch.allclose(main, main_batch)
    params = (item_a, item_b, user_t)
    ours = torch.autograd.grad(fac + 0.3 * main, params)
    expected = torch.autograd.grad(fac_batch + 0.3 * main_batch, params)
    for got, want in zip(ours, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-11, atol=1e-14)


def test_info_nce_supports_double_backward():
    g = generator(13)
    pos = torch.tensor([0, 2, 2, 1, 0, 2])
    items, column, counts = group_entries(pos)
    a = torch.randn(len(pos), 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(len(items), 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda a, b: info_nce(a, b, 0.7, targets=column, counts=counts), (a, b)
    )
    c = torch.randn(len(items), 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda b, c: info_nce(b, c, 0.7, counts=counts, weights=counts), (b, c)
    )


def test_refine_equals_the_plain_formula_with_a_zero_row():
    g = generator(14)
    y = torch.randn(30, 5, dtype=torch.float64, generator=g)
    y[3] = 0.0  # |y| below the clamp: no norm gradient, as F.cosine_similarity's eps
    y.requires_grad_()
    ego = torch.randn(30, 5, dtype=torch.float64, generator=g)
    unit = (ego / ego.norm(dim=1, keepdim=True)).requires_grad_()
    upstream = torch.randn(30, 5, dtype=torch.float64, generator=g)
    ours = refine(y, unit)
    expected = _plain_refine(y, unit)
    # the reference's form: F.cosine_similarity of the layer output and the ego embeddings
    reference = F.cosine_similarity(y, unit, dim=1, eps=1e-8).unsqueeze(1) * y
    assert torch.allclose(ours, expected, rtol=1e-13) and torch.allclose(ours, reference)
    got = torch.autograd.grad(ours, (y, unit), upstream)
    want = torch.autograd.grad(expected, (y, unit), upstream)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    small = y.detach()[4:9].requires_grad_(), unit.detach()[4:9].requires_grad_()
    assert torch.autograd.gradgradcheck(refine, small)


def test_rows_linear_equals_projecting_the_table():
    """VBPR's batch projection: the rows of layer(table), with the full projection's bias
    gradient bit for bit (it is summed over the zero-padded table in the same order)."""
    g = generator(17)
    torch.manual_seed(0)
    layer = nn.Linear(40, 8)
    table = torch.randn(300, 40, generator=g)
    rows = torch.unique(torch.randint(0, 300, (200,), generator=g))
    upstream = torch.randn(len(rows), 8, generator=g)
    ours = rows_linear(layer, table, rows)
    got = torch.autograd.grad(ours, (layer.weight, layer.bias), upstream)
    full = linear(layer, table)[rows]
    want = torch.autograd.grad(full, (layer.weight, layer.bias), upstream)
    assert torch.allclose(ours, full, rtol=1e-6, atol=1e-6)
    assert torch.equal(got[1], want[1])  # the bias gradient
    assert torch.allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    inputs = [
        torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
        for shape in ((3, 5), (4, 5), (4,))
    ]
    rows3 = torch.tensor([1, 4, 7])
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: _RowsLinear.apply(x, w, b, rows3, 9).tanh(), inputs
    )


def test_batch_row_helpers_on_cpu():
    ids = torch.tensor([5, 1, 5, 3, 1, 5])
    rows, inverse = distinct_rows(ids, 8)
    assert torch.equal(rows, torch.tensor([1, 3, 5])) and torch.equal(rows[inverse], ids)
    groups, inverse, counts = group_entries(ids)
    assert torch.equal(groups[inverse], ids) and torch.equal(counts, torch.tensor([2, 1, 3]))


# --- MMGCN's first layer: rows split, aggregation re-associated --------------------------------


def plain_branch(branch: GatedModalityGCN, id_embedding, mean_agg):
    """The reference's branch: X_0 = norm([P ; F']), then the three gated layers."""
    items = branch.MLP(branch.features) if hasattr(branch, "MLP") else branch.features
    x = F.normalize(torch.cat([branch.preference, items], dim=0))
    for conv, lin, gate in branch.layers:
        h = F.leaky_relu(mean_agg @ (x @ conv.weight))
        x_hat = F.leaky_relu(lin(x)) + id_embedding
        x = F.leaky_relu(gate(torch.cat([h, x_hat], dim=1)))
    return x


@pytest.mark.parametrize("branch_name", ["v_gcn", "t_gcn"])
def test_mmgcn_branch_equals_the_plain_layers(branch_name, summary, tmp_path):
    model, _, _ = build_golden_model("MMGCN", summary, tmp_path)
    branch = getattr(model, branch_name)
    upstream = torch.randn(model.n_users + model.n_items, 64, generator=generator(15))
    params = [p for p in branch.parameters() if p.requires_grad]
    ours = branch(model.id_embedding, model.mean_agg)
    got = torch.autograd.grad(ours, params, upstream)
    expected = plain_branch(branch, model.id_embedding, model.mean_agg)
    want = torch.autograd.grad(expected, params, upstream)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6)
    largest = max(w.abs().max().item() for w in want)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-6 * largest


@pytest.mark.parametrize("name", ["SLMRec", "BM3"])
def test_golden_batches_repeat_items(name):
    """The golden batches repeat items (40 distinct of 64), so the golden gradient tests run
    SLMRec's and BM3's distinct-item paths with counts above one."""
    batch = golden_batch(name)["batch"]
    assert len(torch.unique(batch[1])) < batch.shape[1]


# --- second derivatives when the fused operations' inputs share their history ---------------


def hessian_vector(loss_of, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss_of(x), x, create_graph=True)
    (hv,) = torch.autograd.grad((grad * v).sum(), x)
    return hv


def test_double_backward_with_dependent_inputs():
    """The fused operations' second derivatives equal the plain formulas' when their inputs
    come from one tensor (LayerGCN's layers read the ego rows twice; SLMRec's logits have both
    sides from the same embeddings): a Hessian-vector product over the composition."""
    g = generator(16)
    dense = torch.rand(8, 8, dtype=torch.float64, generator=g)
    dense[dense < 0.5] = 0.0
    op = graphs.SparseOp((dense + dense.T).to_sparse(), symmetric=True)
    x = torch.randn(8, 4, dtype=torch.float64, generator=g)
    v = torch.randn(8, 4, dtype=torch.float64, generator=g)

    def layers(fn):
        def loss(x):
            unit = x / x.norm(dim=1, keepdim=True)
            h, out = x, 0.0
            for _ in range(3):
                h = fn(op @ h, unit)
                out = out + h
            return (out**2).sum()

        return loss

    def logits(fused):
        def loss(x):
            a, b = x.tanh(), x.sin()
            if fused:
                return info_nce(a, b, 0.5) + info_nce(b, a, 0.3, counts=torch.arange(1, 9))
            logits = b @ a.T / 0.3
            log_counts = torch.arange(1, 9, dtype=torch.float64).log()
            counted = torch.logsumexp(logits + log_counts, dim=1) - logits.diag()
            return plain_info_nce(a, b, 0.5) + counted.mean()

        return loss

    for fused, plain in ((layers(refine), layers(_plain_refine)), (logits(True), logits(False))):
        got, want = hessian_vector(fused, x, v), hessian_vector(plain, x, v)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())


# --- the paths other devices take (no host syncs, torch's CSR product), run on the CPU --------


@pytest.mark.parametrize("name", names())
def test_sync_free_paths_match_the_reference(name, summary, tmp_path, monkeypatch):
    """With rows never merged (every item projected, every batch entry its own group, as on a
    GPU) and torch's CSR products, each model still gives the reference's loss, gradients
    and scores at the parity tolerances."""
    monkeypatch.setattr(ops, "merges_repeated_rows", lambda device: False)
    monkeypatch.setattr(graphs, "uses_embedding_bag", lambda device: False)
    extra = {"dropout": 0.0} if name == "BM3" else {}
    model, _, _ = build_golden_model(name, summary, tmp_path, **extra)
    checkpoint.load_strict(model, reference_state(name), name)
    stored = golden_batch(name)
    model.train(name != "MVGAE")  # randomness off as in test_parity
    with model.deterministic() if name == "SELFCFED_LGN" else contextlib.nullcontext():
        loss = model.calculate_loss(stored["batch"].clone())
    if loss.requires_grad:  # ItemKNNCBF: a constant
        loss.backward()
    assert abs(loss.item() - stored["loss"]) <= 1e-5 * abs(stored["loss"])
    reference = stored["grads"]
    largest = max((g.abs().max().item() for g in reference.values()), default=0.0)
    for key, param in model.named_parameters():
        if key in reference:
            error = (param.grad - reference[key]).abs().max().item()
            assert error <= 1e-4 * reference[key].abs().max().item() + 1e-6 * largest, key
    scores = np.load(GOLDEN / "reference" / f"{name}-scores.npz")
    model.eval()
    with torch.no_grad():
        ours = model.full_sort_predict(torch.from_numpy(scores["users"])).numpy()
    assert np.abs(ours - scores["scores"]).max() <= 1e-5 * np.abs(scores["scores"]).max()


# --- kept memory, padded rows, closed-form cosine, dropout -----------------------------------


def test_reusable_buffer_never_overwrites_a_tensor_still_held():
    buffer, like = ops.ReusableBuffer(), torch.zeros(1)
    first = buffer.empty((64, 32), like).fill_(1.0)
    second = buffer.empty((64, 32), like).fill_(2.0)  # `first` is alive: fresh memory
    assert first.data_ptr() != second.data_ptr() and bool((first == 1.0).all())
    kept = second.data_ptr()
    del first, second  # released: the next request reuses the kept memory ...
    third = buffer.empty((16, 8), like)
    assert third.shape == (16, 8) and third.is_contiguous()
    if ops.counts_storage_users():
        assert third.data_ptr() == kept  # ... where torch can count its users


# ``ReusableBuffer`` reads a private torch counter, behind the check ``counts_storage_users``;
# every fast path built on it must give what the plain path (fresh memory) gives.


@pytest.fixture
def fresh_storage_check(monkeypatch):
    """``counts_storage_users`` computed anew in the test and again after it (its answer is
    cached per process), so a torch patched here leaves no trace."""
    ops.counts_storage_users.cache_clear()
    yield monkeypatch
    ops.counts_storage_users.cache_clear()


@pytest.fixture(params=["kept memory", "plain"])
def memory_path(request, monkeypatch):
    """Runs a test on the fast path (where this torch passes the check) and on the plain path
    forced as where the check fails."""
    if request.param == "plain":
        monkeypatch.setattr(ops, "counts_storage_users", lambda: False)
    elif not ops.counts_storage_users():
        pytest.skip("this torch has no working storage use count: only the plain path runs")
    return request.param


def test_storage_use_count_check_accepts_this_torch_and_refuses_changes(fresh_storage_check):
    monkeypatch = fresh_storage_check
    if hasattr(torch._C, "_storage_Use_Count"):
        assert ops.counts_storage_users()  # the torch this project pins counts as assumed
    for changed in (
        lambda cdata: 1,  # says "sole owner" while a tensor is over the memory
        lambda cdata: 2,  # never lets go
        lambda: 1,  # another signature
    ):
        monkeypatch.setattr(torch._C, "_storage_Use_Count", changed, raising=False)
        ops.counts_storage_users.cache_clear()
        assert not ops.counts_storage_users()
        buffer, like = ops.ReusableBuffer(), torch.zeros(1)
        first = buffer.empty((4, 4), like)
        del first
        assert buffer.empty((4, 4), like).shape == (4, 4)  # plain path: the counter unused
    monkeypatch.delattr(torch._C, "_storage_Use_Count", raising=False)
    ops.counts_storage_users.cache_clear()
    assert not ops.counts_storage_users()


def test_reusable_buffer_plain_path_keeps_nothing(monkeypatch):
    monkeypatch.setattr(ops, "counts_storage_users", lambda: False)
    buffer, like = ops.ReusableBuffer(), torch.zeros(1, dtype=torch.float64)
    first = buffer.empty((8, 3), like).fill_(1.0)
    second = buffer.empty((8, 3), like)
    assert second.dtype == torch.float64 and second.shape == (8, 3) and second.is_contiguous()
    assert first.data_ptr() != second.data_ptr() and bool((first == 1.0).all())
    assert buffer._storage is None  # no memory held for later


def test_weight_grad_equals_the_plain_product(memory_path):
    g = generator(5)
    x, grad = torch.randn(50, 1024, generator=g), torch.randn(50, 24, generator=g)
    buffers = (ops.ReusableBuffer(), ops.ReusableBuffer())
    expected = grad.t() @ x  # [out, in], as autograd computes F.linear's weight gradient
    with torch.no_grad():  # as inside a backward: over the kept memory
        first = ops.weight_grad(x, grad, buffers)
        kept = first.clone()
        second = ops.weight_grad(x, 2.0 * grad, buffers)  # `first` still held
    assert first.shape == (24, 1024) and first.is_contiguous()
    torch.testing.assert_close(first, expected)
    assert torch.equal(first, kept)  # not overwritten by the second product
    torch.testing.assert_close(second, 2.0 * expected)
    torch.testing.assert_close(ops.weight_grad(x, grad), expected)  # grad mode, no buffers
    del first, second
    with torch.no_grad():
        third = ops.weight_grad(x, grad, buffers)
    torch.testing.assert_close(third, expected)


def test_linear_equals_nn_linear_over_steps(memory_path):
    """``ops.linear``: the values and the input, weight and bias gradients of ``nn.Linear``,
    step after step; a weight gradient a caller still holds is never overwritten, and where the
    fast path runs a released one's memory is used again."""
    torch.manual_seed(0)
    layer = nn.Linear(1024, 16)
    plain = nn.Linear(1024, 16)
    plain.load_state_dict(layer.state_dict())
    g = generator(7)
    pointers, held = [], None
    for step in range(3):
        x = torch.randn(40, 1024, generator=g)
        upstream = torch.randn(40, 16, generator=g)
        x_fast, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
        fast_out = ops.linear(layer, x_fast)
        plain_out = plain(x_plain)
        assert torch.equal(fast_out, plain_out)  # the forward is F.linear itself
        fast_out.backward(upstream)
        plain_out.backward(upstream)
        torch.testing.assert_close(x_fast.grad, x_plain.grad)
        torch.testing.assert_close(layer.weight.grad, plain.weight.grad)
        assert torch.equal(layer.bias.grad, plain.bias.grad)
        pointers.append(layer.weight.grad.data_ptr())
        if step == 0:  # a caller keeps the first gradient (and a copy) across the next step
            held = (layer.weight.grad, layer.weight.grad.clone())
        layer.zero_grad(set_to_none=True), plain.zero_grad(set_to_none=True)
        if step == 1:
            assert torch.equal(*held)  # step 1 wrote elsewhere
            held = None  # released
    assert pointers[1] != pointers[0]  # the first was still held
    if memory_path == "kept memory":
        assert pointers[2] == pointers[1]  # released: the kept memory is used again
    double = [
        torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
        for shape in ((5, 4), (3, 4), (3,))
    ]
    buffers = (ops.ReusableBuffer(), ops.ReusableBuffer())
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: ops._Linear.apply(x, w, b, buffers).tanh(), double
    )


KEPT_MEMORY_MODELS = ("VBPR", "MMGCN", "GRCN", "DualGNN", "DRAGON", "SLMRec", "BM3", "FREEDOM")


@pytest.mark.parametrize("name", [n for n in KEPT_MEMORY_MODELS if n in names()])
def test_models_give_the_same_bits_on_the_plain_memory_path(name, summary, tmp_path, monkeypatch):
    """Every model using kept memory (``ops.linear``, ``project_rows``, ``info_nce``'s logits)
    computes the same losses and gradients, bit for bit, when the storage check fails."""
    if not ops.counts_storage_users():
        pytest.skip("this torch has no working storage use count: only the plain path runs")
    model, _, _ = build_golden_model(name, summary, tmp_path)
    checkpoint.load_strict(model, reference_state(name), name)
    batch = golden_batch(name)["batch"]
    model.train()

    def steps() -> list[torch.Tensor]:
        out = []
        for step in range(2):  # the second step reuses the memory the first released
            torch.manual_seed(step)
            loss = model.calculate_loss(batch.clone())
            loss.backward()
            out += [loss.detach().clone()] + [
                p.grad.clone() for p in model.parameters() if p.grad is not None
            ]
            model.zero_grad(set_to_none=True)
        return out

    fast = steps()
    monkeypatch.setattr(ops, "counts_storage_users", lambda: False)
    plain = steps()
    assert len(fast) == len(plain)
    assert all(torch.equal(a, b) for a, b in zip(fast, plain, strict=True))


def test_factor_scorer_blocks_over_kept_memory_equal_the_product(memory_path):
    """The evaluator's score blocks: the same values as the plain product, a block still held
    is never written, and a released block's memory is reused (where torch counts users)."""
    g = generator()
    users_e, items_e = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g)
    scorer = FactorScorer(users_e, items_e, ops.ReusableBuffer())
    users = torch.tensor([3, 0, 17, 39, 3])
    first = scorer.block(users, 0, 12)
    assert torch.equal(first, users_e[users] @ items_e[:12].T)
    held = first.clone()
    second = scorer.block(users, 12, 30)  # `first` is alive: fresh memory
    assert torch.equal(first, held) and torch.equal(second, users_e[users] @ items_e[12:].T)
    kept = second.data_ptr()
    del first, second
    third = scorer.block(users[:2], 5, 9)
    assert torch.equal(third, users_e[users[:2]] @ items_e[5:9].T)
    assert (third.data_ptr() == kept) == (memory_path == "kept memory")


def test_gemm_rows_keeps_values_and_pads_wide_rows():
    x = torch.randn(10, 1024, generator=generator())
    padded = ops.gemm_rows(x)
    assert torch.equal(padded, x)
    assert padded.stride(0) == 1024 + ops.ROW_PAD
    narrow = torch.randn(10, 384)
    assert ops.gemm_rows(narrow) is narrow


def test_table_rows_projection_equals_the_plain_formula(memory_path):
    torch.manual_seed(0)
    table, layer = nn.Embedding(40, 1024), nn.Linear(1024, 16)
    rows = torch.tensor([3, 0, 17, 39, 8])
    for _ in range(2):  # the second step reuses the kept memory
        fast = ops.project_rows(table, layer, rows)
        fast.square().sum().backward()
        got = [table.weight.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
        table.zero_grad(set_to_none=True), layer.zero_grad(set_to_none=True)
        plain = layer(table.weight.index_select(0, rows))
        plain.square().sum().backward()
        want = [table.weight.grad, layer.weight.grad, layer.bias.grad]
        torch.testing.assert_close(fast, plain)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
        table.zero_grad(set_to_none=True), layer.zero_grad(set_to_none=True)


def test_cosine_to_target_equals_torch_with_a_zero_row():
    online = torch.randn(6, 5, dtype=torch.float64, generator=generator(), requires_grad=True)
    target = torch.randn(6, 5, dtype=torch.float64, generator=generator(1))
    with torch.no_grad():
        online[2] = 0.0
        target[4] = 0.0
    weights = torch.randn(6, dtype=torch.float64, generator=generator(2))
    fast = cosine_to_target(online, target)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), online)
    plain = F.cosine_similarity(online, target, dim=-1)
    (grad_plain,) = torch.autograd.grad((plain * weights).sum(), online)
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(grad_fast, grad_plain)
    nonzero = torch.randn(4, 5, dtype=torch.float64, generator=generator(3), requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda o: cosine_to_target(o, target[:4]), (nonzero,))


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_keeps_with_probability_one_minus_p_and_rescales(p):
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = ops.dropout(x, p)
    if p == 0.0:
        assert out is x
        return
    if p == 1.0:
        assert bool((out == 0).all())
        return
    kept = out != 0
    assert abs(float(kept.float().mean()) - (1 - p)) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
