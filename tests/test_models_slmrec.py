"""SLMRec's reference quirks, checked directly on the golden fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import GOLDEN, build_golden_model, golden_batch, golden_combo, reference_state
from mgrec import checkpoint
from mgrec.errors import UserError
from mgrec.models.slmrec import SLMRec


@pytest.fixture
def trained(summary, tmp_path):
    """SLMRec with the reference's trained parameters, and its golden batch."""
    model, data, _ = build_golden_model("SLMRec", summary, tmp_path)
    checkpoint.load_strict(model, reference_state("SLMRec"), "SLMRec")
    return model, data, golden_batch("SLMRec")["batch"]


def test_negatives_are_ignored(trained):
    model, data, batch = trained
    with torch.no_grad():
        loss = model.calculate_loss(batch)
        other = batch.clone()
        other[2] = torch.randint(0, data.n_items, (batch.shape[1],), generator=torch.Generator())
        assert torch.equal(model.calculate_loss(other), loss)
        assert torch.equal(model.calculate_loss(batch[:2]), loss)


def test_features_are_normalised_and_not_saved(trained):
    model, data, _ = trained
    for name, raw in (("v_feat", data.feature("v")), ("t_feat", data.feature("t"))):
        feat = getattr(model, name)
        assert torch.allclose(feat.norm(dim=1), torch.ones(len(feat)))
        assert torch.allclose(
            feat * torch.from_numpy(raw).norm(dim=1, keepdim=True), feat.new_tensor(raw)
        )
        assert name not in model.state_dict()


def test_three_propagations_share_the_user_embedding(trained):
    """The fused propagation equals three separate LightGCN means, each from E_user."""
    model, _, _ = trained
    adj = model.norm_adj.to_dense()

    def lgn(items):
        x = torch.cat([model.embedding_user.weight, items])
        layers = [x]
        for _ in range(model.n_layers):
            layers.append(adj @ layers[-1])
        return torch.stack(layers).mean(0)

    with torch.no_grad():
        users, items = model.propagate()
        separate = [
            lgn(model.embedding_item.weight),
            lgn(model.v_dense(model.v_feat)),
            lgn(model.t_dense(model.t_feat)),
        ]
    expected = torch.cat(separate, dim=1)
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-6)


def test_graph_equals_the_pre_normalisation(trained):
    """data.norm_adj() (deg + 1e-7, float64) equals the reference's 'pre' variant at float32."""
    model, data, _ = trained
    pairs = np.unique(np.stack([data.train.users, data.train.items], 1), axis=0)
    n = data.n_users + data.n_items
    adj = np.zeros((n, n), np.float32)
    adj[pairs[:, 0], pairs[:, 1] + data.n_users] = 1.0
    adj[pairs[:, 1] + data.n_users, pairs[:, 0]] = 1.0
    d_inv = np.power(adj.sum(1) + np.float32(1e-8), np.float32(-0.5))
    pre = torch.from_numpy(d_inv[:, None] * adj * d_inv[None, :])
    assert torch.allclose(model.norm_adj.to_dense(), pre, rtol=1e-6, atol=0)


def test_stale_scores_unless_fresh_eval(trained):
    model, data, batch = trained
    users = torch.arange(data.n_users)
    model.train()
    model.calculate_loss(batch).backward()
    cached = model.training_cache
    with torch.no_grad():
        for p in model.parameters():  # any step: the cache must not follow it
            if p.grad is not None:
                p -= 0.5 * p.grad
    model.eval()
    with torch.no_grad():
        user_e, item_e = model.inference_embeddings()
        fresh = user_e @ item_e.T
        stale = model.scorer()(users)
        assert torch.equal(stale, cached[0] @ cached[1].T)
        assert not torch.allclose(stale, fresh)
        model.fresh_eval = True
        assert torch.allclose(model.scorer()(users), fresh)
        # full_sort_predict always recomputes, and ends with the sigmoid.
        assert torch.allclose(model.full_sort_predict(users), torch.sigmoid(fresh))


def test_cache_holds_the_last_forward(trained):
    """Under MG the mirror pass is the last forward, so it is the one scored."""
    model, _, batch = trained
    model.calculate_loss(batch)
    first = model.training_cache[0].clone()
    with torch.no_grad():
        model.embedding_user.weight.mul_(2.0)
    model.calculate_loss(batch)
    user_e, _ = model.inference_embeddings()
    assert not torch.equal(model.training_cache[0], first)
    assert torch.allclose(model.training_cache[0], user_e.detach())


@pytest.mark.parametrize(
    ("key", "value"),
    [("ssl_task", "FD"), ("ssl_task", "FM"), ("mm_fusion_mode", "sum"), ("init", "normal"),
     ("adj_type", "norm"), ("temp", 0), ("ssl_temp", -1.0), ("layer_num", -1)],
)  # fmt: skip
def test_unsupported_config_is_a_user_error(summary, key, value):
    combo = golden_combo("SLMRec", summary)
    SLMRec.check_config(combo)
    combo[key] = value
    with pytest.raises(UserError, match=key):
        SLMRec.check_config(combo)


def test_mean_fusion_averages_the_three_blocks(summary, tmp_path):
    model, _, _ = build_golden_model("SLMRec", summary, tmp_path, mm_fusion_mode="mean")
    concat, _, _ = build_golden_model("SLMRec", summary, tmp_path, mm_fusion_mode="concat")
    d = model.embedding_user.weight.shape[1]
    assert model.embedding_user_after_GCN.weight.shape == (d, d)
    # The same graph inputs: the LGN blocks are those of the concat model with its parameters.
    shared = {k: v for k, v in concat.state_dict().items() if "after_GCN" not in k}
    model.load_state_dict({**model.state_dict(), **shared})
    with torch.no_grad():
        user_blocks, item_blocks = concat.propagate()
        user, item = model.inference_embeddings()

        def fused(blocks, layer):  # (id + image + text) / 3, then the after-GCN layer
            mean = (blocks[:, :d] + blocks[:, d : 2 * d] + blocks[:, 2 * d :]) / 3
            return mean @ layer.weight.T + layer.bias

        torch.testing.assert_close(user, fused(user_blocks, model.embedding_user_after_GCN))
        torch.testing.assert_close(item, fused(item_blocks, model.embedding_item_after_GCN))
    batch = torch.load(GOLDEN / "reference" / "SLMRec-batch.pth", weights_only=True)["batch"]
    assert torch.isfinite(model.calculate_loss(batch))
