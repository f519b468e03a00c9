"""Reading MMRec's layout: sizes, splits, and one clear line for every bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_dataset, write_inter
from mgrec.cli import main
from mgrec.config import grid, load_config
from mgrec.data.dataset import load_dataset


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and content hash."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(
    tmp_path: Path, data_path: Path, *extra: str, model: str = "FREEDOM", dataset: str = "tiny"
):
    return main(
        [
            "--model", model, "--dataset", dataset, f"--data_path={data_path}",
            f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--epochs=1", "--use_gpu=False", *extra,
        ]
    )  # fmt: skip


def config_for(data_path: Path, model: str = "FREEDOM", dataset: str = "tiny") -> dict:
    return grid(load_config(model, dataset, mg=False, overrides={"data_path": str(data_path)}))[0]


def test_sizes_splits_and_cold_start_filter(tmp_path):
    rows = [(0, 1, 0), (0, 2, 0), (1, 3, 0), (0, 4, 1), (2, 0, 1), (1, 5, 2), (0, 4, 2), (3, 7, 2)]
    folder = write_inter(tmp_path / "d", "d", rows)
    np.save(folder / "image_feat.npy", np.ones((8, 3), np.float32))
    data = load_dataset(config_for(tmp_path, dataset="d"), "any")
    assert (data.n_users, data.n_items) == (4, 8)  # max id + 1 over all splits
    assert data.train.users.tolist() == [0, 0, 1]
    # users 2 and 3 never train: their valid/test rows are dropped
    assert data.valid.users.tolist() == [0] and data.test.users.tolist() == [1, 0]
    assert data.feature("t") is None
    assert np.array_equal(data.feature("v"), np.ones((8, 3), np.float32))


def test_dataset_without_yaml_uses_mmrec_defaults(tiny):
    config = config_for(tiny)
    assert config["inter_file_name"] == "tiny.inter"
    assert (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]) == ("userID", "itemID")
    assert load_dataset(config, "any").n_users == 30


def bad_inter(rows, header=("userID", "itemID", "x_label")):
    def make(folder: Path) -> None:
        write_inter(folder, "tiny", rows, header)

    return make


def replace_feature(name, array):
    def make(folder: Path) -> None:
        np.save(folder / name, array)

    return make


def remove(*names):
    def make(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return make


BAD_INPUTS = {
    "missing column": (bad_inter([(0, 1, 0)], header=("userID", "itemID", "label")), "missing column(s) x_label"),
    "x_label outside 0/1/2": (bad_inter([(0, 1, 0), (0, 2, 3)]), "x_label must be 0 (train), 1 (valid) or 2 (test), but line 3 has '3'"),
    "negative id": (bad_inter([(0, 1, 0), (-1, 2, 0)]), "userID must be a non-negative integer, but line 3 has '-1'"),
    "non-integer id": (bad_inter([(0, 1, 0), (1, 2.5, 0)]), "itemID must be a non-negative integer, but line 3 has '2.5'"),
    "text id": (bad_inter([(0, 1, 0), ("u7", 2, 0)]), "userID must be a non-negative integer, but line 3 has 'u7'"),
    "missing id": (bad_inter([(0, 1, 0), (None, 2, 0)]), "userID must be a non-negative integer, but line 3 has an empty field"),
    "empty train split": (bad_inter([(0, 1, 1), (0, 2, 2)]), "the train split is empty"),
    "feature rows": (replace_feature("image_feat.npy", np.ones((5, 4), np.float32)), "has 5 rows but the dataset has 60 items"),
    "feature NaN": (replace_feature("text_feat.npy", np.full((60, 4), np.nan, np.float32)), "contains NaN or infinite values (first in row 0"),
    "feature inf": (replace_feature("text_feat.npy", np.r_[np.ones((3, 4)), [[np.inf] * 4], np.ones((56, 4))].astype(np.float32)), "first in row 3"),
    "no modality": (remove("image_feat.npy", "text_feat.npy"), "FREEDOM needs item features, but neither image_feat.npy nor text_feat.npy exists"),
    "missing inter file": (remove("tiny.inter"), "interaction file not found"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_and_folder_untouched(case, tiny, tmp_path, capsys):
    make, expected = BAD_INPUTS[case]
    folder = tiny / "tiny"
    make(folder)
    before = snapshot(folder)
    assert run_cli(tmp_path, tiny) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mgrec: error: ")
    assert expected in err and "Traceback" not in err
    assert snapshot(folder) == before
    assert not (tmp_path / "results").exists() and not (tmp_path / "ckpt").exists()


def test_missing_data_folder_says_where_files_go(tmp_path, capsys):
    assert run_cli(tmp_path, tmp_path / "nowhere") == 2
    err = capsys.readouterr().err
    assert "dataset folder not found" in err and "tiny.inter" in err and "data README" in err
    assert not (tmp_path / "nowhere").exists()


def test_model_needing_no_features_runs_without_them(tiny, tmp_path):
    remove("image_feat.npy", "text_feat.npy")(tiny / "tiny")
    before = snapshot(tiny / "tiny")
    assert (
        run_cli(
            tmp_path,
            tiny,
            "--n_layers=1",
            "--dropout=0.1",
            "--reg_weight=0.001",
            "--not_mg",
            model="LayerGCN",
        )
        == 0
    )
    assert snapshot(tiny / "tiny") == before


def test_training_never_writes_into_the_data_folder(tiny, tmp_path):
    before = snapshot(tiny / "tiny")
    assert run_cli(tmp_path, tiny, "--dropout=0.8", "--reg_weight=0.001", "--alpha2=0.2") == 0
    assert snapshot(tiny / "tiny") == before
    assert list((tmp_path / "cache").glob("item-knn-*.npz"))  # the kNN graph went to the cache


def test_tiny_dataset_helper_is_valid(tmp_path):
    tiny_dataset(tmp_path, "x")
    assert load_dataset(config_for(tmp_path, dataset="x"), "both").n_items == 60
