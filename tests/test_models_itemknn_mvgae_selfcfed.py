"""ItemKNNCBF, MVGAE and SELFCFED_LGN beyond golden parity: ItemKNNCBF's blocked similarity and
scores against the dense computation, MVGAE's faithful and corrected variants and its KL weight,
each model's training randomness, and training through the composition root."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from conftest import build_golden_model, golden_batch, golden_combo, trained
from mgrec import trial
from mgrec.cli import main
from mgrec.config import grid, load_config
from mgrec.data.dataset import load_dataset
from mgrec.errors import UserError
from mgrec.evaluator import Evaluator
from mgrec.experiment import check_combination
from mgrec.models import ModelData, get, mvgae, selfcfed_lgn
from mgrec.models.itemknncbf import shrunk_topk
from mgrec.rng import seeded

# --- ItemKNNCBF ----------------------------------------------------------------------------------


def dense_itemknn(data: ModelData, k: int, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's computation, dense: the kept similarity S [I, I] and R S [U, I]."""
    x = torch.cat([f for f in (data.v_feat, data.t_feat) if f is not None], dim=1)
    norms = x.norm(dim=1)
    sim = (x @ x.T) / (torch.outer(norms, norms) + shrink)
    top = torch.topk(sim, k, dim=1)
    kept = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
    counts = torch.zeros(data.n_users, data.n_items)
    counts.index_put_((data.train_users, data.train_items), torch.ones(1), accumulate=True)
    return kept, counts @ kept


def test_itemknn_blocked_similarity_and_scores_equal_the_dense_computation(summary, tmp_path):
    model, data, combo = build_golden_model("ItemKNNCBF", summary, tmp_path)
    model_data = ModelData.from_dataset(data, torch.device("cpu"))
    k, shrink = combo["knn_k"], float(combo["shrink"])
    kept, dense_scores = dense_itemknn(model_data, k, shrink)
    # The similarity top-k, in blocks of 7 rows (13 blocks) and in one: the same entries (to
    # the last bits a product of another shape may round differently, by thread count).
    x = torch.cat([model_data.v_feat, model_data.t_feat], dim=1)
    assert torch.equal((kept != 0).sum(dim=1), torch.full((data.n_items,), k))
    for block_bytes in (4 * data.n_items * 7, 1 << 28):
        columns, values = shrunk_topk(x, k, shrink, block_bytes=block_bytes)
        torch.testing.assert_close(kept.gather(1, columns), values, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(values, model.similarities, rtol=1e-6, atol=1e-6)
        assert (columns == model.neighbours).float().mean() > 0.99  # ties at the k-th aside
    assert torch.equal(columns, model.neighbours) and torch.equal(values, model.similarities)
    # Scores: every user's R S row, summed from the user's training rows.
    users = torch.arange(data.n_users)
    scorer = model.scorer()
    ours = scorer(users)
    assert torch.allclose(ours, dense_scores, rtol=1e-6, atol=1e-6)
    assert torch.equal(model.full_sort_predict(users), ours)
    for start, stop in ((0, 7), (7, 50), (83, 90), (0, 90)):  # item blocks: the same sums
        assert torch.equal(scorer.block(users[3:40], start, stop), ours[3:40, start:stop])
    # Ranked in user and item blocks (the evaluator's streaming), the metrics are those of the
    # dense score matrix.
    for split in (data.valid, data.test):
        streamed = Evaluator(split, data.train, data.n_items, [5, 20, 50], ["recall", "ndcg"],
                             batch_size=17, item_block_size=11)  # fmt: skip
        whole = Evaluator(split, data.train, data.n_items, [5, 20, 50], ["recall", "ndcg"])
        assert streamed.evaluate(scorer) == whole.evaluate(lambda u: dense_scores[u].clone())


def tiny_model_data(v_feat: torch.Tensor, users: list[int], items: list[int]) -> ModelData:
    return ModelData(
        n_users=max(users) + 1,
        n_items=v_feat.shape[0],
        train_users=torch.tensor(users),
        train_items=torch.tensor(items),
        v_feat=v_feat,
        t_feat=None,
        device=torch.device("cpu"),
    )


def test_itemknn_duplicates_count_twice_and_a_zero_feature_row_scores_zero():
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 2.0]])
    data = tiny_model_data(features, users=[0, 0, 1], items=[1, 1, 3])
    model = get("ItemKNNCBF")({"knn_k": 4, "shrink": 1.0}, data)
    kept, dense = dense_itemknn(data, 4, 1.0)
    scores = model.full_sort_predict(torch.tensor([0, 1]))
    assert torch.allclose(scores, dense, rtol=1e-6)
    assert torch.allclose(scores[0], 2 * kept[1])  # item 1 trained twice: counted twice
    assert not scores.isnan().any() and bool((kept[2] == 0).all())  # zero row: 0, not NaN
    # the shrinkage favours large norms: item 3 (norm 2) is closer to item 1 than item 0 is
    assert kept[1, 3] > kept[1, 0]


def test_itemknn_trains_nothing(summary, tmp_path):
    model, _, _ = build_golden_model("ItemKNNCBF", summary, tmp_path)
    assert model.trainable is False and get("VBPR").trainable is True
    loss = model.calculate_loss(golden_batch("ItemKNNCBF")["batch"])
    assert loss.item() == 0.0 and loss.device.type == "cpu" and not loss.requires_grad
    assert [k for k, _ in model.named_parameters()] == ["dummy_embeddings"]
    with pytest.raises(UserError, match="knn_k=91 exceeds the number of items"):
        build_golden_model("ItemKNNCBF", summary, tmp_path, knn_k=91)


# --- MVGAE -----------------------------------------------------------------------------------------


def brute_force_reconstruction(z, users, pos, neg):
    """The reference's formula, with its [B, B, d] tensor and ``max``."""
    s = torch.sigmoid(z)
    pos_scores = torch.sigmoid((s[users] * s[pos]).sum(dim=1))
    all_neg = (s[users].unsqueeze(1) * s[neg].unsqueeze(0)).sum(dim=2)  # [B, B]
    neg_scores = torch.sigmoid(all_neg.max(dim=1).values)
    return -torch.log2(torch.sigmoid(pos_scores - neg_scores)).sum()


def test_mvgae_reconstruction_uses_the_hardest_negative_of_the_whole_batch():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(40, 3, generator=generator, dtype=torch.float64) * 2
    users = torch.randint(0, 10, (25,), generator=generator)
    pos = torch.randint(0, 40, (25,), generator=generator)
    neg = torch.randint(0, 40, (25,), generator=generator)  # with repeats
    grads = []
    for formula in (
        lambda x: brute_force_reconstruction(x, users, pos, neg),
        lambda x: mvgae.reconstruction(x, users, pos, neg, stable=False),
        lambda x: mvgae.reconstruction(x, users, pos, neg, stable=True),
    ):
        x = z.clone().requires_grad_()
        loss = formula(x)
        loss.backward()
        grads.append((loss.detach(), x.grad))
    for loss, grad in grads[1:]:  # unsaturated: the stable form is the same function
        assert torch.allclose(loss, grads[0][0], rtol=1e-12)
        assert torch.allclose(grad, grads[0][1], rtol=1e-10, atol=1e-12)
    # Saturated (large dot products): the reference's form is exactly flat in float32, the
    # stable one is not.
    big = torch.full((40, 64), 3.0) + torch.rand(40, 64, generator=generator)
    flat = big.clone().requires_grad_()
    mvgae.reconstruction(flat, users, pos, neg, stable=False).backward()
    assert flat.grad is not None and not flat.grad.any()
    live = big.clone().requires_grad_()
    mvgae.reconstruction(live, users, pos, neg, stable=True).backward()
    assert live.grad is not None and live.grad.any()


def test_mvgae_faithful_reconstruction_is_flat_at_width_64_and_corrected_is_not(summary, tmp_path):
    batch = golden_batch("MVGAE")["batch"]
    for corrected in (False, True):
        model, _, _ = build_golden_model(
            "MVGAE", summary, tmp_path, embedding_size=64, kl_weight=0.0, corrected_recon=corrected
        )
        model.eval()  # the noise-free loss
        loss = model.calculate_loss(batch)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not corrected:  # every row contributes log2(1/2) in float32: 4 terms x B rows
            assert loss.item() == 4 * batch.shape[1]
            assert not any(g.any() for g in grads)
        else:
            assert any(g.any() for g in grads)


def test_mvgae_item_ids_index_user_rows_unless_corrected(summary, tmp_path, monkeypatch):
    calls = []
    original = mvgae.reconstruction

    def spy(z, users, pos, neg, stable):
        calls.append((pos.clone(), neg.clone(), stable))
        return original(z, users, pos, neg, stable)

    monkeypatch.setattr(mvgae, "reconstruction", spy)
    batch = golden_batch("MVGAE")["batch"]
    for corrected in (False, True):
        calls.clear()
        model = trained("MVGAE", summary, tmp_path, corrected_recon=corrected)
        offset = model.n_users if corrected else 0
        model.eval()
        model.calculate_loss(batch)
        assert len(calls) == 4  # z and the three experts
        for pos, neg, stable in calls:
            assert torch.equal(pos, batch[1] + offset) and torch.equal(neg, batch[2] + offset)
            assert stable is corrected


def test_mvgae_kl_weight_is_its_own_setting_and_mg_beta_reproduces_the_reference(summary, tmp_path):
    with_mg = grid(load_config("MVGAE", "golden11", mg=True))
    assert len(with_mg) == 36  # 4 learning rates x 3 KL weights x 3 alpha2
    assert {c["kl_weight"] for c in with_mg} == {0.01, 0.1, 1} and {c["beta"] for c in with_mg} == {
        3
    }
    merged = grid(load_config("MVGAE", "golden11", mg=True, overrides={"kl_weight": "mg_beta"}))
    assert len(merged) == 12  # the reference's MG grid: every KL weight is MG's beta
    assert len(grid(load_config("MVGAE", "golden11", mg=False))) == 12
    assert get("MVGAE").kl_weight_of({"kl_weight": "mg_beta", "mg": True, "beta": 3}) == 3.0
    plain = {**merged[0], "mg": False}
    plain.pop("beta")
    with pytest.raises(UserError, match="MG is off"):
        check_combination(plain)
    with pytest.raises(UserError, match="kl_weight"):
        check_combination({**merged[0], "kl_weight": "three"})
    with pytest.raises(UserError, match="corrected_recon"):
        check_combination({**merged[0], "corrected_recon": "yes"})
    # The loss is recon + w * KL: MG's beta and the same number given as kl_weight agree.
    batch = golden_batch("MVGAE")["batch"]
    losses = {}
    for weight in ("mg_beta", 3.0, 0.0, 1.0):
        model = trained("MVGAE", summary, tmp_path, kl_weight=weight)
        model.eval()
        losses[weight] = model.calculate_loss(batch).item()
    assert losses["mg_beta"] == losses[3.0] == pytest.approx(golden_batch("MVGAE")["loss"])
    kl = losses[1.0] - losses[0.0]
    assert kl > 0 and losses[3.0] == pytest.approx(losses[0.0] + 3 * kl, rel=1e-5)


def test_mvgae_noise_and_message_dropout_are_owned(summary, tmp_path):
    model = trained("MVGAE", summary, tmp_path)
    batch = golden_batch("MVGAE")["batch"]
    expected = golden_batch("MVGAE")["loss"]
    model.train()
    with model.deterministic():  # noise-free, as eval mode: the fixture's loss
        assert model.calculate_loss(batch).item() == pytest.approx(expected, rel=1e-6)
    noisy = [model.calculate_loss(batch).item() for _ in range(2)]
    assert noisy[0] != noisy[1] and expected not in noisy
    cache = model.training_cache
    with model.training_draw(7):
        first = [model.calculate_loss(batch).item() for _ in range(2)]
    with model.training_draw(8):
        other = model.calculate_loss(batch).item()
    assert first[0] == first[1] != other
    assert model.training_cache is cache and not model.is_deterministic  # restored
    # Message dropout: p = 0.1 of the entries zeroed, the others scaled by 1 / 0.9.
    wide = trained("MVGAE", summary, tmp_path, embedding_size=3)
    x = torch.randn(wide.n_users + wide.n_items, 128)
    convs = [(e.conv_embed_1, x) for e in (wide.v_gcn, wide.t_gcn, wide.c_gcn)] * 20
    with torch.no_grad(), seeded(0):
        dropped = torch.cat(wide._convolve(convs, noisy=True))
    clean = torch.cat(wide._convolve(convs, noisy=False)).detach()
    zeros = (dropped == 0).float().mean().item()
    assert abs(zeros - 0.1) < 0.01
    kept = dropped != 0
    assert torch.allclose(dropped[kept], clean[kept] / 0.9)
    # Reparameterisation noise: 0.1 standard deviations, the log-variance clamped at 10.
    with seeded(0):
        mu = torch.zeros(200_000, 1)
        z = mvgae.MVGAE.reparameterise(mu, torch.zeros_like(mu), noisy=True)
        z_big = mvgae.MVGAE.reparameterise(mu, torch.full_like(mu, 30.0), noisy=True)
    assert abs(z.std().item() - 0.1) < 0.002
    assert abs(z_big.std().item() / math.exp(5.0) - 0.1) < 0.002


def test_mvgae_convolution_is_the_mean_over_in_edges_and_a_self_loop(summary, tmp_path):
    model = trained("MVGAE", summary, tmp_path)
    combo = golden_combo("MVGAE", summary)
    data = load_dataset(combo, "both")
    n_users, n_nodes = data.n_users, data.n_users + data.n_items
    conv = model.t_gcn.conv_embed_1
    x = torch.randn(n_nodes, 128, dtype=torch.float64)
    xw = x @ conv.weight.double()
    # each training row (duplicates kept) is an edge in both directions; plus one self-loop
    total, count = xw.clone(), torch.ones(n_nodes, dtype=torch.float64)
    for u, i in zip(data.train.users, data.train.items, strict=True):
        total[u] += xw[n_users + i]
        total[n_users + i] += xw[u]
        count[u] += 1
        count[n_users + i] += 1
    expected = torch.nn.functional.normalize(total / count.unsqueeze(1) + conv.bias.double())
    (ours,) = model._convolve([(conv, x.float())], noisy=False)
    assert torch.allclose(ours.double(), expected, atol=1e-5)


def test_mvgae_scores_from_its_last_training_forward(summary, tmp_path):
    model = trained("MVGAE", summary, tmp_path)
    users = torch.arange(30)
    model.train()
    with torch.no_grad():
        model.calculate_loss(golden_batch("MVGAE")["batch"])  # noisy: message dropout on
        user_e, item_e = model.training_cache
        model.eval()
        stale = model.scorer()(users)
        fresh = model.full_sort_predict(users)
        model.fresh_eval = True
        assert torch.allclose(model.scorer()(users), fresh)
    assert torch.allclose(stale, user_e[users] @ item_e.T)  # sigmoid(mu) of that forward
    assert not torch.allclose(stale, fresh, atol=1e-4)


# --- SELFCFED_LGN -------------------------------------------------------------------------------


def test_selfcfed_edge_dropout_is_a_masked_rescaled_adjacency(summary, tmp_path):
    model = trained("SELFCFED_LGN", summary, tmp_path)
    dense = model.norm_adj.to_dense()
    entries = model.norm_adj.coo.indices()
    generator = torch.Generator().manual_seed(3)
    rate = 0.3
    noise = torch.rand(entries.shape[1], generator=generator)
    dropped = model.edge_dropout(rate, noise)
    keep = noise >= rate
    expected = torch.zeros_like(dense)
    expected[entries[0][keep], entries[1][keep]] = dense[entries[0][keep], entries[1][keep]] / 0.7
    assert torch.allclose(dropped.to_dense(), expected)
    assert not torch.equal(expected, expected.T)  # each direction dropped on its own
    assert abs(keep.float().mean().item() - 0.7) < 0.02
    # products and their gradients (the transpose) are the dense matrix's
    x = torch.randn(dense.shape[0], 5, generator=generator)
    ours, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(dense.shape[0], 5, generator=generator)
    ((dropped @ ours) * weights).sum().backward()
    ((expected @ reference) * weights).sum().backward()
    assert torch.allclose(ours.grad, reference.grad, atol=1e-6)
    assert torch.equal(model.norm_adj.to_dense(), dense)  # the full graph is untouched


def test_selfcfed_rate_mask_and_target_dropout_are_owned(summary, tmp_path, monkeypatch):
    model = trained("SELFCFED_LGN", summary, tmp_path)
    batch = golden_batch("SELFCFED_LGN")["batch"]
    expected = golden_batch("SELFCFED_LGN")["loss"]
    # The rate comes from NumPy, one per call, the mask from torch's CPU generator.
    with seeded(5):
        rate = float(np.random.random())
    with seeded(5):
        graph = model.training_graph()
    kept = graph.values != 0
    assert abs(kept.float().mean().item() - (1 - rate)) < 0.03
    assert torch.allclose(graph.values[kept], model.edge_dropout.values[kept] / (1 - rate))
    rates = []
    for _ in range(200):
        values = model.training_graph().values
        rates.append(1 - (values != 0).float().mean().item())
    assert min(rates) < 0.1 and max(rates) > 0.9  # uniform in [0, 1): some steps drop most edges
    # Target dropout: always in training mode (eval too), with the configured p; none inside
    # deterministic(), which gives the fixture's loss.
    seen = []
    original = selfcfed_lgn.dropout
    monkeypatch.setattr(
        selfcfed_lgn, "dropout", lambda x, p: seen.append((p, len(x))) or original(x, p)
    )
    model.eval()
    losses = [model.calculate_loss(batch).item() for _ in range(2)]
    both = 2 * batch.shape[1]  # one draw over the user rows and the item rows
    assert losses[0] != losses[1] and seen == [(model.dropout, both)] * 2 and model.dropout > 0
    with model.deterministic():
        assert model.calculate_loss(batch).item() == pytest.approx(expected, rel=1e-6)
    assert seen[-1] == (0.0, both)
    model.train()
    with model.training_draw(1):
        first = [model.calculate_loss(batch).item() for _ in range(2)]
    with model.training_draw(2):
        other = model.calculate_loss(batch).item()
    assert first[0] == first[1] != other and not model.is_deterministic


def test_selfcfed_scores_are_two_asymmetric_terms(summary, tmp_path):
    model = trained("SELFCFED_LGN", summary, tmp_path)
    model.eval()
    users = torch.arange(50)
    with torch.no_grad():
        user_all, item_all = model.forward(model.norm_adj)
        p = model.predictor
        expected = p(user_all[users]) @ item_all.T + user_all[users] @ p(item_all).T
        assert torch.allclose(model.scorer()(users), expected, atol=1e-6)
        assert not torch.allclose(expected, p(user_all[users]) @ p(item_all).T, atol=1e-3)


# --- through the composition root -------------------------------------------------------------


def run_args(name: str, data_path, tmp_path, *extra: str) -> list[str]:
    settings = {
        "MVGAE": ["--learning_rate=0.01", "--kl_weight=0.1"],
        "SELFCFED_LGN": ["--n_layers=1", "--dropout=0.2", "--reg_weight=0.001"],
        "ItemKNNCBF": [],
    }[name]
    return ["--model", name, "--dataset", "tiny", f"--data_path={data_path}",
            f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1",
            *settings, *extra]  # fmt: skip


def result_row(tmp_path) -> dict:
    (path,) = (tmp_path / "r").rglob("results.jsonl")
    (row,) = [json.loads(line) for line in path.read_text().splitlines()]
    return row


@pytest.mark.parametrize("name", ["MVGAE", "SELFCFED_LGN"])
@pytest.mark.parametrize("mg", [True, False])
def test_training_through_the_command_line(name, mg, tiny, tmp_path):
    extra = ["--epochs=3", "--stopping_step=10", f"--output={tmp_path / 'out.json'}"]
    extra += ["--alpha2=0.2"] if mg else ["--not_mg"]
    assert main(run_args(name, tiny, tmp_path, *extra)) == 0
    row = result_row(tmp_path)
    assert row["epochs"] == 3 and row["stopped"] == "max-epochs"
    metrics = [json.loads(x) for x in next((tmp_path / "r").rglob("metrics.jsonl")).open()]
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert len({m["loss"] for m in metrics}) == 3  # it trains
    assert ("-mg-" in row["folder"]) is mg
    # the checkpoint, scored from its parameters, gives numbers in range
    resumed = tmp_path / "resumed.json"
    args = ["--resume", row["checkpoint"], f"--data_path={tiny}", f"--output={resumed}"]
    assert main([*args, f"--cache_dir={tmp_path / 'cache'}"]) == 0
    test = json.loads(resumed.read_text())["test"]
    assert all(0.0 <= v <= 1.0 for v in test.values())
    for k in (5, 10, 20, 50):  # one test item per user: precision@k = recall@k / k
        assert test[f"precision@{k}"] == pytest.approx(test[f"recall@{k}"] / k, abs=1e-4)


@pytest.mark.parametrize("name", ["MVGAE", "SELFCFED_LGN"])
def test_a_killed_combination_resumes_exactly(name, tiny, tmp_path, monkeypatch):
    extra = ["--epochs=3", "--stopping_step=10", "--alpha2=0.2", "--save_every=1"]
    assert main(run_args(name, tiny, tmp_path / "whole", *extra)) == 0
    expected = result_row(tmp_path / "whole")
    original = trial.save_state

    def save_then_die(files, experiment, model, trainer, progress, *rest):
        original(files, experiment, model, trainer, progress, *rest)
        if progress.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trial, "save_state", save_then_die)
    assert main(run_args(name, tiny, tmp_path / "cut", *extra)) == 130
    monkeypatch.setattr(trial, "save_state", original)
    assert main(run_args(name, tiny, tmp_path / "cut", *extra)) == 0
    row = result_row(tmp_path / "cut")
    assert (
        "resuming combination 0 from epoch 1"
        in next((tmp_path / "cut" / "r").rglob("train.log")).read_text()
    )
    for key in ("best_epoch", "epochs", "valid", "test"):
        assert row[key] == expected[key], key


def test_itemknn_evaluation_only_run(tiny, tmp_path):
    output = tmp_path / "out.json"
    assert main(run_args("ItemKNNCBF", tiny, tmp_path, "--not_mg", f"--output={output}")) == 0
    written = json.loads(output.read_text())
    combo = grid(load_config("ItemKNNCBF", "tiny", mg=False, overrides={"data_path": str(tiny)}))[0]
    data = load_dataset(combo, "any")
    model_data = ModelData.from_dataset(data, torch.device("cpu"))
    _, dense = dense_itemknn(model_data, combo["knn_k"], float(combo["shrink"]))
    evaluator = Evaluator(data.test, data.train, data.n_items, combo["topk"], combo["metrics"])
    expected = evaluator.evaluate(lambda u: dense[u].clone())
    assert written["test"] == pytest.approx(expected, abs=1e-12)


def test_model_data_without_features_is_refused_by_itemknn():
    data = dataclasses.replace(tiny_model_data(torch.ones(3, 2), users=[0], items=[1]), v_feat=None)
    with pytest.raises(UserError, match="needs image or text features"):
        get("ItemKNNCBF")({"knn_k": 2, "shrink": 1.0}, data)


def test_a_model_that_trains_nothing_runs_once_and_says_so_about_mg(tiny, tmp_path, capsys):
    # MG left on (the default): one line says it has nothing to act on, and it runs without it
    assert main(run_args("ItemKNNCBF", tiny, tmp_path)) == 0
    err = capsys.readouterr().err
    assert "ItemKNNCBF trains nothing, so Mirror Gradient has nothing to act on" in err
    (folder,) = (tmp_path / "r").rglob("ItemKNNCBF-*")
    assert folder.name.startswith("ItemKNNCBF-plain-")  # no MG grid: one combination
    rows = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epochs"] == 1 and "alpha2" not in rows[0]["params"]
    # MG settings asked for explicitly are refused in one line, before anything is written
    assert main(run_args("ItemKNNCBF", tiny, tmp_path / "x", "--alpha2=[0.1,0.2]")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop alpha2" in err and not (tmp_path / "x").exists()
    assert main(run_args("ItemKNNCBF", tiny, tmp_path / "y", "--study", "mg", "--seeds=2")) == 2
    assert "trains nothing" in capsys.readouterr().err and not (tmp_path / "y").exists()
