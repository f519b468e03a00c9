"""The floor's FLOP counting (benchmarks/floor.py) and the benchmark's argument handling."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


floor = _load("floor")


def small(**extra) -> object:
    return floor.Workload.uniform(300, 200, 1000, 256, pairs=900, **extra)


def test_op_flops() -> None:
    assert floor.Op("x", floor.GEMM, (3, 5, 7)).flops == 2 * 3 * 5 * 7
    assert floor.Op("x", floor.GEMM_TN, (3, 5, 7)).flops == 2 * 3 * 5 * 7
    assert floor.Op("x", floor.SPMM, (10, 20, 30, 8)).flops == 2 * 30 * 8


def test_backward_multiples() -> None:
    forward = 2 * 10 * 64 * 8
    frozen = floor.linear("p", 10, 64, 8, grad_rows=0)  # weight grad only: 1x
    assert floor.total_flops(frozen) == 2 * forward
    trainable = floor.linear("p", 10, 64, 8, grad_rows=10)  # both grads: 2x
    assert floor.total_flops(trainable) == 3 * forward
    assert [op.role for op in trainable] == ["fwd", "bwd_input", "bwd_weight"]
    assert floor.total_flops(floor.matmul("m", 4, 5, 6)) == 3 * 2 * 4 * 5 * 6
    assert floor.total_flops(floor.matmul("m", 4, 5, 6, grad_rows=2)) == 2 * (4 + 2 + 4) * 5 * 6
    assert floor.total_flops(floor.spmm("a", 9, 9, 40, 16)) == 2 * (2 * 40 * 16)
    assert floor.total_flops(floor.spmm("a", 9, 9, 40, 16, backward=2)) == 3 * (2 * 40 * 16)


def test_vbpr_projects_only_the_batch_items() -> None:
    w = floor.Workload(300, 200, 600, [256, 256, 88], distinct_items=[150, 160, 70])
    d, width = 64, 4096 + 384
    expected = sum(4 * n * width * d for n in (150, 160, 70))  # forward + weight grad
    assert floor.total_flops(floor.epoch_ops("VBPR", w, {"embedding_size": d})) == expected


def test_mg_repeats_every_beta_th_batch() -> None:
    assert floor.mg_batches(10, 3) == [0, 3, 6, 9]
    w = floor.Workload(300, 200, 700, [100] * 7, distinct_items=[10, 20, 30, 40, 50, 60, 70])
    plain = floor.total_flops(floor.epoch_ops("VBPR", w, {}))
    mirrored = floor.total_flops(floor.epoch_ops("VBPR", w, {}, mg=True, beta=3))
    per_distinct = 4 * (4096 + 384) * 64
    assert mirrored - plain == per_distinct * (10 + 40 + 70)


def test_freedom_skips_feature_terms_without_reg() -> None:
    w = small(graph_nnz={"masked_adj": 400, "mm_adj": 4000})
    config = {"embedding_size": 64, "n_mm_layers": 1, "n_ui_layers": 2}
    plain = floor.batch_ops("FREEDOM", w, {**config, "reg_weight": 0.0}, 0)
    assert {op.kind for op in plain} == {floor.SPMM}
    assert floor.total_flops(plain) == 2 * 2 * 4000 * 64 + 2 * 2 * (2 * 400 * 64)
    with_reg = floor.batch_ops("FREEDOM", w, {**config, "reg_weight": 1e-4}, 0)
    n = w.distinct(0)
    assert floor.total_flops(with_reg) - floor.total_flops(plain) == 6 * n * (4096 + 384) * 64


def test_layergcn_counts_propagations_both_ways() -> None:
    w = small(graph_nnz={"masked_adj": 1800})
    ops = floor.epoch_ops("LayerGCN", w, {"embedding_size": 64, "n_layers": 4, "dropout": 0.0})
    assert floor.total_flops(ops) == len(w.batch_rows) * 4 * 2 * (2 * 1800 * 64)


def test_default_graph_sizes() -> None:
    w = small()
    (op, _, _, _) = floor.batch_ops(
        "LayerGCN", w, {"embedding_size": 8, "n_layers": 2, "dropout": 0.0}, 0
    )
    assert op.dims == (500, 500, 2 * 900, 8)  # both directions of every distinct pair
    pruned = floor.batch_ops("LayerGCN", w, {"embedding_size": 8, "n_layers": 1, "dropout": 0.5}, 0)
    assert pruned[0].dims[2] == 2 * 500


def test_frozen_features_get_no_input_gradient() -> None:
    w = small()
    for model, label in (("SLMRec", "image projection (all items)"), ("MMGCN", "image MLP")):
        roles = {op.role for op in floor.batch_ops(model, w, {}, 0) if op.label == label}
        assert roles == {"fwd", "bwd_weight"}, model
    # BM3's feature tables are trainable: their projection needs the input gradient too
    roles = {
        op.role
        for op in floor.batch_ops("BM3", w, {}, 0)
        if op.label == "image projection (batch items)"
    }
    assert roles == {"fwd", "bwd_input", "bwd_weight"}


def test_every_paper_model_has_a_floor() -> None:
    from mgrec.models import names, registry

    # a floor is optional for a new model (the benchmark says it has none); the paper's have one
    assert set(registry.paper_models()) <= set(floor.MODELS) <= set(names())
    w = small()
    for model in floor.MODELS:
        assert floor.total_flops(floor.epoch_ops(model, w, {})) > 0, model


def test_selfcfed_lgn_counts_the_kept_half_of_the_graph_and_the_predictor() -> None:
    w = small(graph_nnz={"norm_adj": 1800})  # batches of 256, 256, 256 and 232 rows
    ops = floor.epoch_ops("SELFCFED_LGN", w, {"embedding_size": 8, "n_layers": 2})
    propagation = 2 * (2 * 900 * 8)  # A_drop @ X and its backward, 900 of 1800 entries kept
    predictor = 2 * 3 * (2 * 8 * 8)  # users and items: forward, input and weight grads, per row
    expected = sum(2 * propagation + predictor * rows for rows in (256, 256, 256, 232))
    assert floor.total_flops(ops) == expected


def test_mvgae_counts_three_experts_and_the_hardest_negative_searches() -> None:
    n_users, n_items, d = 300, 200, 8
    n = n_users + n_items
    w = floor.Workload(
        n_users, n_items, 1000, [600, 400], dv=16, dt=12, graph_nnz={"mean_agg": 2500},
        distinct_users=[150, 120], distinct_negatives=[90, 70],
    )  # fmt: skip
    mlp = 2 * (2 * n_items * (16 + 12 + d) * 128)  # forward + weight grad (frozen inputs)
    # layer 1's X W: forward, the input gradient of the item rows only, the weight gradient
    conv_1 = 3 * (2 * n * 128 * d + 2 * n_items * d * 128 + 2 * 128 * n * d)
    aggregations = 2 * (2 * 2500 * 3 * d) + 2 * (2 * 2500 * 6 * d)  # 3 experts, then 6 convs
    dense_d_by_d = (3 + 6 + 12) * 3 * (2 * n * d * d)  # g_1; conv 4/5; g and linear 4/5
    per_batch = mlp + conv_1 + aggregations + dense_d_by_d
    searches = 4 * 2 * d * (150 * 90 + 120 * 70)  # fused z and 3 experts, forward only
    ops = floor.epoch_ops("MVGAE", w, {"embedding_size": d, "n_layers": 1})
    assert floor.total_flops(ops) == 2 * per_batch + searches
    assert {op.role for op in ops if op.label.startswith("hardest")} == {"fwd"}


def test_lattice_rebuilds_its_item_graph_once_per_epoch() -> None:
    w = floor.Workload(300, 200, 1000, [256] * 4, dv=16, dt=12, graph_nnz={"norm_adj": 2400})
    config = {"embedding_size": 8, "feat_embed_dim": 4, "knn_k": 5, "n_layers": 1}
    s_nnz = 4 * 5 * 200  # learned and frozen graphs of both modalities, k = 5 per row each
    per_batch = 2 * 2 * (2 * 2400 * 8) + 2 * (2 * s_nnz * 8)  # 2 P @ X layers, S @ h; + bwd
    rebuild = (
        3 * 2 * 200 * (16 + 12) * 4  # both projections of every item: fwd, input, weight grads
        + 2 * (2 * 200 * 4 * 200)  # the cosines of all item pairs
        + 2 * 3 * (2 * 5 * 200 * 4)  # the kept entries' dots: fwd and the grads of both ends
        + 2 * s_nnz * 8  # the gradient of S's values
    )
    plain = floor.total_flops(floor.epoch_ops("LATTICE", w, config))
    assert plain == rebuild + 4 * per_batch
    mirrored = floor.total_flops(floor.epoch_ops("LATTICE", w, config, mg=True, beta=3))
    assert mirrored - plain == 2 * per_batch  # batches 0 and 3 again, S not rebuilt


def test_mgcn_trains_its_feature_tables_every_batch() -> None:
    w = small()
    labels = {
        (op.label, op.role) for op in floor.batch_ops("MGCN", w, {}, 0) if "projection" in op.label
    }
    assert labels == {
        (f"{m} projection (all items)", role)
        for m in ("image", "text")
        for role in ("fwd", "bwd_input", "bwd_weight")
    }
    # the InfoNCE logits: [n, d] x [d, n] over the distinct users (180) and positives (150)
    w = small(distinct_users=[180] * 4, distinct_positives=[150] * 4)
    without_cl = floor.total_flops(floor.batch_ops("MGCN", w, {"cl_loss": 0.0}, 0))
    with_cl = floor.total_flops(floor.batch_ops("MGCN", w, {"cl_loss": 0.01}, 0))
    assert with_cl - without_cl == 3 * (2 * 180 * 64 * 180 + 2 * 150 * 64 * 150)


def test_itemknncbf_trains_nothing_so_has_no_floor() -> None:
    assert "ItemKNNCBF" not in floor.MODELS


def test_aggregate_keeps_totals_and_floor_adds_class_times() -> None:
    w = floor.Workload(300, 200, 600, [256, 256, 88], distinct_items=[150, 160, 70])
    ops = floor.epoch_ops("VBPR", w, {})
    classes = floor.aggregate(ops)
    assert sum(c.flops for c in classes) == floor.total_flops(ops)
    assert [c.count for c in classes] == [3, 3]
    assert classes[0].dims == (127, 4480, 64)  # the mean distinct count, rounded
    seconds = {c.key: 0.5 for c in classes}
    result = floor.floor(classes, seconds)
    rep = [floor.Op("", c.kind, c.dims).flops for c in classes]
    assert result.seconds == pytest.approx(
        sum(0.5 * c.flops / r for c, r in zip(classes, rep, strict=True))
    )
    assert result.flops == floor.total_flops(ops)


def test_random_csr_and_timing() -> None:
    matrix = floor.random_csr(50, 40, 300, torch.device("cpu"))
    assert matrix.shape == (50, 40) and matrix._nnz() == 300
    assert matrix.crow_indices()[-1] == 300
    dense = matrix.to_dense()
    assert torch.allclose(matrix @ torch.eye(40), dense)
    for kind, dims in (
        (floor.GEMM, (8, 16, 4)),
        (floor.GEMM_TN, (8, 16, 4)),
        (floor.SPMM, (50, 40, 300, 4)),
    ):
        assert floor.time_op(kind, dims, torch.device("cpu"), repeats=2) > 0
    found = floor.model_floor("VBPR", small(), {}, "cpu", repeats=1, budget_s=0.01)
    assert found["epoch_mg"].seconds > found["epoch"].seconds > 0


def test_benchmark_arguments_at_elec_shape() -> None:
    run = _load("run")
    _, args = run.parse_args(
        ["--users", "192403", "--items", "63001", "--batches", "2", "--models", "VBPR"]
        + ["--device", "cpu", "--threads", "2", "--phases", "train,floor"]
    )
    assert (args.users, args.items, args.batches, args.threads) == (192403, 63001, 2, 2)
    assert args.phases == ["train", "floor"] and args.isolate
    with pytest.raises(SystemExit):
        run.parse_args(["--phases", "train,bogus"])


def test_peak_memory_is_readable() -> None:
    run = _load("run")
    memory = run.PhaseMemory()
    with memory.phase("x"):
        block = torch.ones(1 << 20)  # 4 MiB
    assert memory.peaks["x"] > 0
    del block
