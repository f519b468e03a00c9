"""LATTICE and MGCN: their sparse, blocked item-item graphs equal the reference's dense ones
(values and gradients); LATTICE's learned graph rebuilt once per epoch, with Adam skipping its
feature branch on every other step; training end to end, with and without Mirror Gradient."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import build_golden_model, golden_batch, reference_state, tiny_dataset, trained
from mgrec import checkpoint, graphs
from mgrec.cli import main
from mgrec.trainer import Trainer

# --- the reference's dense computations, written out (MODELS.md §1.8 G5, §12, §13) --------------


def dense_cosine(x: torch.Tensor) -> torch.Tensor:
    normed = x / x.norm(dim=-1, keepdim=True)
    return normed @ normed.T


def dense_knn(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k values of every row kept, zeros elsewhere (dense I x I)."""
    values, indices = torch.topk(sim, k, dim=-1)
    return torch.zeros_like(sim).scatter(-1, indices, values)


def dense_laplacian(adj: torch.Tensor) -> torch.Tensor:
    """D^-1/2 X D^-1/2 with D the row sums, inf set to 0, as dense diagonal products."""
    inv_sqrt = adj.sum(-1).pow(-0.5)
    inv_sqrt = torch.where(torch.isinf(inv_sqrt), torch.zeros_like(inv_sqrt), inv_sqrt)
    diagonal = torch.diagflat(inv_sqrt)
    return diagonal @ adj @ diagonal


def from_entries(rows, cols, values, shape) -> torch.Tensor:
    return torch.zeros(shape, dtype=values.dtype).index_put((rows, cols), values, accumulate=True)


def interaction_counts(users, items, n_users, n_items) -> np.ndarray:
    """The dense N x N bipartite matrix with A[u, U+i] = A[U+i, u] = number of rows (u, i)."""
    n = n_users + n_items
    adj = np.zeros((n, n))
    for u, i in zip(users, items, strict=True):
        adj[u, n_users + i] += 1
        adj[n_users + i, u] += 1
    return adj


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of the similarity products of at most ``rows`` rows of an I = 90 item matrix, with
    every product that ``torch.topk`` reduces recorded (to check none is I x I)."""
    seen: list[tuple[int, ...]] = []
    topk = torch.topk

    def spy(x, *args, **kwargs):
        seen.append(tuple(x.shape))
        return topk(x, *args, **kwargs)

    def use(rows: int, n_cols: int = 90) -> list[tuple[int, ...]]:
        monkeypatch.setattr(graphs, "BLOCK_BYTES", 4 * n_cols * rows)
        monkeypatch.setattr(torch, "topk", spy)
        return seen

    return use


# --- the blocked top-k -------------------------------------------------------------------------


@pytest.mark.parametrize("block_rows", [8, 13, None])
def test_row_topk_in_blocks_equals_dense_topk(block_rows):
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(53, 7, generator=generator), torch.randn(41, 7, generator=generator)
    block_bytes = None if block_rows is None else 4 * 41 * block_rows
    rows, cols, values = graphs.row_topk(left, right, 5, block_bytes)
    dense = torch.topk(left @ right.T, 5, dim=-1)
    assert torch.equal(rows, torch.arange(53).repeat_interleave(5))
    assert torch.equal(cols, dense.indices.flatten())
    # the same dot products; a block's GEMM may round its last bit differently
    torch.testing.assert_close(values, dense.values.flatten(), rtol=0, atol=1e-6)
    if block_rows is None:  # one block: the dense product itself
        assert torch.equal(values, dense.values.flatten())


def test_row_topk_never_forms_the_whole_product(small_blocks):
    seen = small_blocks(rows=16)
    features = torch.randn(90, 6)
    graphs.cosine_topk(features, 4)
    assert sum(shape[0] for shape in seen) == 90
    assert max(shape[0] for shape in seen) <= 16 and len({s[0] for s in seen}) == 1  # balanced


@pytest.mark.parametrize("block_rows", [15, None])
def test_normalised_knn_graph_equals_the_dense_laplacian(block_rows, summary, tmp_path):
    model, _, _ = build_golden_model("MGCN", summary, tmp_path)
    block_bytes = None if block_rows is None else 4 * 90 * block_rows
    for features in (model.image_embedding.weight.detach(), torch.randn(90, 5)):
        rows, cols, values = graphs.normalised_knn_graph(features, 10, block_bytes)
        ours = from_entries(rows, cols, values, (90, 90))
        expected = dense_laplacian(dense_knn(dense_cosine(features), 10))
        assert torch.equal(ours != 0, expected != 0)  # the same k entries in every row
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)


def test_knn_item_graph_is_unchanged_by_the_shared_top_k(small_blocks):
    features = torch.randn(90, 9)
    indices, values = graphs.knn_item_graph(features, 4)
    small_blocks(rows=8)
    blocked, blocked_values = graphs.knn_item_graph(features, 4, chunk_bytes=4 * 90 * 8)
    expected = torch.topk(dense_cosine(features), 4, dim=-1).indices
    assert torch.equal(indices[1].view(90, 4), expected) and torch.equal(blocked, indices)
    assert torch.equal(values, blocked_values)
    assert torch.allclose(values, torch.full_like(values, 1 / 4))


# --- the user-item graphs ------------------------------------------------------------------------


def test_user_item_graphs_equal_their_dense_definitions():
    # user 0 has a duplicated row (0, 1); item 3 is never trained on (isolated)
    users, items = np.array([0, 0, 0, 1, 2, 2]), np.array([1, 1, 0, 1, 2, 0])
    n_users, n_items = 3, 4
    counts = interaction_counts(users, items, n_users, n_items)
    n = n_users + n_items
    # LATTICE: P = D^-1 (A + Id), D the row sums of A + Id
    with_loops = counts + np.eye(n)
    expected_p = with_loops / with_loops.sum(1, keepdims=True)
    p = graphs.row_norm_adj_self_loops(users, items, n_users, n_items, "cpu").to_dense()
    assert np.allclose(p.numpy(), expected_p, rtol=1e-6, atol=0)
    # MGCN: D^-1/2 A D^-1/2 over the counts, isolated nodes 0; R its user -> item block
    degree = counts.sum(1)
    inv_sqrt = np.where(degree > 0, degree, np.inf) ** -0.5
    expected = inv_sqrt[:, None] * counts * inv_sqrt[None, :]
    full, block = graphs.count_norm_adj(users, items, n_users, n_items, "cpu")
    assert np.allclose(full.to_dense().numpy(), expected, rtol=1e-6, atol=0)
    assert np.array_equal(block.to_dense().numpy(), full.to_dense().numpy()[:n_users, n_users:])
    assert expected[0, n_users + 1] == 2 / np.sqrt(3 * 3)  # the duplicate counts twice


# --- LATTICE's learned item graph ---------------------------------------------------------------


def dense_lattice_graph(model, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """S = (1 - λ) Lap(w0 kNN(cos V) + w1 kNN(cos T)) + λ (w0 O_v + w1 O_t), all dense, from
    the model's parameters and the raw features ``raw`` ("image", "text")."""
    k, lam = model.knn_k, model.lambda_coeff
    original = {m: dense_laplacian(dense_knn(dense_cosine(f), k)) for m, f in raw.items()}
    learned = {}
    for m in ("image", "text"):
        projected = getattr(model, f"{m}_trs")(getattr(model, f"{m}_embedding").weight)
        learned[m] = dense_knn(dense_cosine(projected), k)
    w = torch.softmax(model.modal_weight, dim=0)
    mixed = dense_laplacian(w[0] * learned["image"] + w[1] * learned["text"])
    return (1 - lam) * mixed + lam * (w[0] * original["image"] + w[1] * original["text"])


@pytest.mark.parametrize("block_rows", [15, None])
def test_lattice_item_graph_and_its_gradients_equal_the_dense_ones(
    block_rows, summary, tmp_path, small_blocks
):
    seen = small_blocks(rows=block_rows or 90)
    model, data, _ = build_golden_model("LATTICE", summary, tmp_path)
    raw = {"image": torch.as_tensor(data.feature("v")), "text": torch.as_tensor(data.feature("t"))}
    checkpoint.load_strict(model, reference_state("LATTICE"), "LATTICE")
    probe = torch.randn(90, 64, generator=torch.Generator().manual_seed(1))
    items = model.item_id_embedding.weight

    def gradients(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    graph = model.build_item_graph()
    # 4 top-k's (O_v, O_t at construction; L_v, L_t now), each over blocks of the product
    assert sum(shape[0] for shape in seen) == 4 * 90
    assert max(shape[0] for shape in seen) <= (block_rows or 90)
    ours = graph @ torch.eye(90)
    ours_grads = gradients(((graph @ items) * probe).sum())
    dense = dense_lattice_graph(model, raw)
    dense_grads = gradients(((dense @ items) * probe).sum())
    assert torch.equal(ours.detach() != 0, dense.detach() != 0)
    torch.testing.assert_close(ours.detach(), dense.detach(), rtol=1e-5, atol=1e-7)
    assert set(ours_grads) == set(dense_grads) == {
        "modal_weight", "item_id_embedding.weight", "image_embedding.weight",
        "text_embedding.weight", "image_trs.weight", "image_trs.bias", "text_trs.weight",
        "text_trs.bias",
    }  # fmt: skip
    for key, expected in dense_grads.items():
        error = (ours_grads[key] - expected).abs().max()
        assert error <= 1e-4 * expected.abs().max() + 1e-9, key


def test_lattice_with_one_modality_ignores_modal_weight(summary, tmp_path):
    model = trained("LATTICE", summary, tmp_path)
    model.modality_names = ["text"]
    model.original = model.original[1:]
    lam, k = model.lambda_coeff, model.knn_k
    graph = model.build_item_graph() @ torch.eye(90)
    learned = dense_knn(dense_cosine(model.text_trs(model.text_embedding.weight)), k)
    rows, cols, values = model.original[0]
    expected = (1 - lam) * dense_laplacian(learned) + lam * from_entries(
        rows, cols, values, (90, 90)
    )
    torch.testing.assert_close(graph, expected, rtol=1e-5, atol=1e-7)
    graph.sum().backward()
    assert model.modal_weight.grad is None and model.text_trs.weight.grad is not None


def test_lattice_rebuilds_on_the_first_batch_only_and_adam_skips_the_rest(summary, tmp_path):
    model, _, combo = build_golden_model("LATTICE", summary, tmp_path)
    batch = golden_batch("LATTICE")["batch"]
    batches = [batch[:, i * 16 : (i + 1) * 16] for i in range(4)]
    feature_branch = ["modal_weight", "image_trs.weight", "text_embedding.weight"]
    # the first batch's loss reaches the feature branch, a later batch's does not
    model.train()
    model.pre_epoch_processing()
    model.calculate_loss(batches[0]).backward()
    params = dict(model.named_parameters())
    assert all(params[k].grad is not None and params[k].grad.any() for k in feature_branch)
    kept = model.item_graph
    model.zero_grad(set_to_none=True)
    model.calculate_loss(batches[1]).backward()
    assert all(params[k].grad is None for k in feature_branch)
    assert model.item_graph is kept  # the epoch's graph, as a constant
    # Adam steps the feature branch once per epoch (its gradient is None, not 0, elsewhere);
    # with MG (beta 3): batches 0 and 3 take two steps, the mirror pass of batch 0 on the
    # graph built by its first pass.
    for mg, steps_per_epoch in ((True, 6), (False, 4)):
        model, _, _ = build_golden_model("LATTICE", summary, tmp_path)
        trainer = Trainer(model, {**combo, "mg": mg})
        for _ in range(2):
            model.pre_epoch_processing()
            trainer.train_epoch(batches)
        state = trainer.optimizer.state
        assert int(state[model.user_embedding.weight]["step"]) == 2 * steps_per_epoch
        for key in feature_branch:
            assert int(state[dict(model.named_parameters())[key]]["step"]) == 2, key
    # scoring rebuilds the graph from the current parameters
    before = model.item_graph.values.clone()
    model.eval()
    with torch.no_grad():
        model.scorer()
    assert not torch.equal(model.item_graph.values, before)


# --- randomness: none besides the batches; loss a function of the parameters --------------------


@pytest.mark.parametrize("name", ["LATTICE", "MGCN"])
def test_no_training_randomness_and_deterministic_losses_repeat(name, summary, tmp_path):
    model = trained(name, summary, tmp_path)
    stored = golden_batch(name)
    assert model.randomness == ""
    model.train()
    model.calculate_loss(stored["batch"])  # as an epoch's first batch
    state = model._epoch_state()
    values = []
    for context in (model.deterministic, lambda: model.training_draw(3)):
        for _ in range(2):
            with context():
                loss = model.calculate_loss(stored["batch"])
                values.append(loss.item())
                if name == "LATTICE":  # every block starts as an epoch's first batch
                    model.zero_grad(set_to_none=True)
                    loss.backward()
                    assert model.image_trs.weight.grad is not None
    assert values == [pytest.approx(stored["loss"], rel=1e-5)] * 4
    assert len(set(values)) == 1
    for key, value in state.items():  # the model's own state is put back
        assert getattr(model, key) is value, key


# --- end to end ----------------------------------------------------------------------------------


def run(tmp_path, data, model, *extra):
    args = [
        "--model", model, "--dataset", "tiny", f"--data_path={data}", "--epochs=2",
        "--train_batch_size=64", "--use_gpu=False", "--threads=1",
        f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
        f"--cache_dir={tmp_path / 'cache'}", *extra,
    ]  # fmt: skip
    return main(args)


@pytest.mark.parametrize(
    ("name", "grid"),
    [("LATTICE", ["--reg_weight=0.001", "--learning_rate=0.005"]), ("MGCN", ["--cl_loss=0.01"])],
)
@pytest.mark.parametrize("mg", [True, False])
def test_trains_end_to_end(name, grid, mg, tiny, tmp_path):
    extra = [*grid, "--knn_k=5", f"--output={tmp_path / 'out.json'}"]
    if mg:
        extra.append("--alpha2=0.2")
    else:
        extra.append("--not_mg")
    assert run(tmp_path, tiny, name, *extra) == 0
    written = json.loads((tmp_path / "out.json").read_text())
    test = written["test"]
    assert len(test) == 16 and all(0.0 <= v <= 1.0 for v in test.values())
    # One test item per user: precision@k is recall@k / k, and a top-k list only grows with k,
    # so recall, NDCG and MAP (normalised by min(k, 1) = 1) never fall as k grows.
    ks = sorted(int(key.split("@")[1]) for key in test if key.startswith("recall@"))
    for k in ks:
        assert test[f"precision@{k}"] == pytest.approx(test[f"recall@{k}"] / k, abs=1e-4)
    for metric in ("recall", "ndcg", "map"):
        at = [test[f"{metric}@{k}"] for k in ks]
        assert at == sorted(at), (metric, at)
    assert test[f"recall@{ks[-1]}"] > 0
    (results,) = (tmp_path / "r").rglob("results.jsonl")
    (row,) = [json.loads(line) for line in results.open()]
    assert row["test"] == written["test"]
    assert len(list((tmp_path / "c").rglob("*.pth"))) == 1


def test_modalities(tmp_path, capsys):
    data = tmp_path / "data"
    tiny_dataset(data)
    (data / "tiny" / "text_feat.npy").unlink()
    assert (
        run(tmp_path, data, "LATTICE", "--not_mg", "--reg_weight=0.0", "--learning_rate=0.001") == 0
    )
    assert run(tmp_path, data, "MGCN", "--not_mg", "--cl_loss=0.01") != 0
    assert "MGCN needs both image and text features" in capsys.readouterr().err
