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


def test_every_model_has_a_floor() -> None:
    from mgrec.models import MODULES

    assert set(floor.MODELS) == set(MODULES)
    w = small()
    for model in floor.MODELS:
        assert floor.total_flops(floor.epoch_ops(model, w, {})) > 0, model


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
