"""The embedded synthetic dataset and the reference's split rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrec import experiment
from mgrec.config import grid, load_config
from mgrec.data.split import split_labels
from mgrec.data.synthetic import SyntheticSpec, ensure_embedded, generate
from mgrec.trainer import Trainer


@pytest.mark.parametrize(
    ("n", "train", "valid", "test"),
    [
        (5, 3, 1, 1),
        (9, 7, 1, 1),
        (10, 8, 1, 1),
        (11, 9, 1, 1),
        (15, 12, 1, 2),
        (20, 16, 2, 2),
        (23, 19, 2, 2),
    ],
)
def test_split_rule(n, train, valid, test):
    order, labels = split_labels(np.zeros(n, dtype=np.int64), np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(n))
    assert np.bincount(labels, minlength=3).tolist() == [train, valid, test]
    assert labels.tolist() == sorted(labels.tolist())  # train, then valid, then test


def test_split_groups_users_and_is_seeded():
    users = np.array([2, 0, 1, 0, 2, 0, 1, 2, 2, 0, 1, 1])
    order, labels = split_labels(users, np.random.default_rng(1))
    assert users[order].tolist() == sorted(users.tolist())
    again, _ = split_labels(users, np.random.default_rng(1))
    assert np.array_equal(order, again)


SMALL = SyntheticSpec(n_users=200, n_items=120, image_dim=64, text_dim=32, seed=3)


def test_generator_is_deterministic_and_well_formed():
    inter, image, text = generate(SMALL)
    inter2, image2, _ = generate(SMALL)
    assert inter.equals(inter2) and np.array_equal(image, image2)
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert inter.groupby("userID").size().min() >= 5
    assert not inter.duplicated(["userID", "itemID"]).any()
    assert image.shape == (120, 64) and (image >= 0).all()
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    per_user = inter.groupby("userID")["x_label"].apply(lambda s: (s == 1).sum())
    assert (per_user >= 1).all()


def test_embedded_dataset_is_created_once(tmp_path):
    folder = ensure_embedded(tmp_path)
    stamp = (folder / "synthetic.inter").stat().st_mtime_ns
    assert {p.name for p in folder.iterdir()} == {
        "synthetic.inter",
        "image_feat.npy",
        "text_feat.npy",
    }
    assert ensure_embedded(tmp_path) == folder
    assert (folder / "synthetic.inter").stat().st_mtime_ns == stamp


def test_multimodal_model_beats_popularity_on_embedded_data(tmp_path):
    overrides = {"data_path": str(tmp_path), "epochs": 10, "dropout": 0.8, "reg_weight": 1e-4,
                 "train_batch_size": 512, "cache_dir": str(tmp_path / "cache"), "use_gpu": False}  # fmt: skip
    combo = grid(load_config("FREEDOM", "synthetic", mg=True, overrides=overrides))[0]
    built = experiment.build(combo)
    popularity = torch.from_numpy(
        np.bincount(built.data.train.items, minlength=built.data.n_items).astype(np.float32)
    )
    baseline = built.evaluators["test"].evaluate(
        lambda users: popularity.expand(len(users), -1).clone()
    )
    model = built.build_model()
    trainer = Trainer(model, combo)
    built.batches.seed(combo["seed"])
    for _ in range(combo["epochs"]):
        model.pre_epoch_processing()
        trainer.train_epoch(built.batches)
    trained = built.evaluate(model, "test")
    assert trained["recall@20"] > 1.3 * baseline["recall@20"]
    assert trained["ndcg@20"] > 1.3 * baseline["ndcg@20"]
