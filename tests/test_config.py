"""Layered configuration, the grid's order, overrides and validation."""

from __future__ import annotations

import pytest

from mgrec.cli import parse_overrides
from mgrec.config import grid, load_config, parse_value, validate
from mgrec.errors import UserError

FREEDOM_MG_GRID_KEYS = ["seed", "dropout", "reg_weight", "alpha1", "alpha2", "beta"]


def test_layers_and_grid_key_order():
    config = load_config("FREEDOM", "sports", mg=True)
    assert config["hyper_parameters"] == FREEDOM_MG_GRID_KEYS
    assert config["inter_file_name"] == "sports.inter"  # from the dataset file
    assert config["reg_weight"] == [0.0, 1e-05, 1e-04, 1e-03]  # 1e-05 (no dot) reads as a float
    assert config["valid_metric"] == "Recall@5" and config["mg"] is True


def test_not_mg_drops_mirror_keys():
    config = load_config("VBPR", "baby", mg=False)
    assert config["hyper_parameters"] == ["seed", "reg_weight"]
    assert "alpha2" not in config and config["mg"] is False


def test_grid_product_last_key_fastest():
    combos = grid(load_config("FREEDOM", "sports", mg=True))
    assert len(combos) == 2 * 4 * 3
    firsts = [(c["dropout"], c["reg_weight"], c["alpha2"]) for c in combos[:5]]
    assert firsts == [
        (0.8, 0.0, 0.1),
        (0.8, 0.0, 0.2),
        (0.8, 0.0, 0.3),
        (0.8, 1e-5, 0.1),
        (0.8, 1e-5, 0.2),
    ]
    assert list(combos[0]["params"]) == FREEDOM_MG_GRID_KEYS


@pytest.mark.parametrize(
    ("model", "size"), [("VBPR", 7), ("LayerGCN", 12), ("BM3", 8), ("FREEDOM", 8)]
)
def test_grid_sizes_equal_the_reference(model, size):
    assert len(grid(load_config(model, "baby", mg=False))) == size
    assert len(grid(load_config(model, "baby", mg=True))) == 3 * size


def test_overrides_win_and_lists_become_grids():
    config = load_config(
        "VBPR",
        "baby",
        mg=False,
        overrides={"reg_weight": [0.1, 0.01], "learning_rate": [0.1, 0.01]},
    )
    assert config["hyper_parameters"] == ["seed", "reg_weight", "learning_rate"]
    assert len(grid(config)) == 4


def test_config_file_layer(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("epochs: 7\nreg_weight: [0.5]\n")
    config = load_config("VBPR", "baby", mg=False, config_files=[extra], overrides={"epochs": 9})
    assert config["epochs"] == 9 and config["reg_weight"] == [0.5]


def test_unknown_key_names_the_closest():
    with pytest.raises(
        UserError, match="unknown config key 'learning_rat' .*did you mean 'learning_rate'"
    ):
        load_config("VBPR", "baby", overrides={"learning_rat": 0.1})


def test_unknown_key_in_config_file(tmp_path):
    extra = tmp_path / "typo.yaml"
    extra.write_text("epoch: 3\n")
    with pytest.raises(UserError, match="typo.yaml: unknown config key 'epoch'.*'epochs'"):
        load_config("VBPR", "baby", config_files=[extra])


def test_unknown_model_lists_choices():
    with pytest.raises(UserError, match="unknown model 'FREEDOMM' .*'FREEDOM'"):
        load_config("FREEDOMM", "baby")


def test_command_line_values_are_yaml():
    assert parse_overrides(["--learning_rate=0.001", "--reg_weight=[0.1,0.01]", "--epochs", "5", "--weight_decay=1e-4"]) == {
        "learning_rate": 0.001, "reg_weight": [0.1, 0.01], "epochs": 5, "weight_decay": 1e-4,
    }  # fmt: skip
    assert parse_value("0.001.0.005") == "0.001.0.005"  # the reference's MMGCN typo stays a string
    with pytest.raises(UserError, match="needs a value"):
        parse_overrides(["--epochs"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("learning_rate", "0.001.0.005", "learning_rate' must be a positive number"),
        ("epochs", 0, "epochs' must be an integer >= 1"),
        ("learner", "adamw", "learner' must be one of adam, sgd, adagrad, rmsprop"),
        ("valid_metric", "Recall@7", "valid_metric' must be <metric>@<k>"),
        ("beta", 0, "beta' must be an integer >= 1"),
    ],
)
def test_validation(key, value, message):
    combo = grid(load_config("VBPR", "baby", mg=True, overrides={key: value}))[0]
    with pytest.raises(UserError, match=message):
        validate(combo)
