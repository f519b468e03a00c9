"""The command line keeps its promises: bare boolean switches, flags that need another refused,
--dry_run checking inputs as a run would, `mgrec prepare` spelled like the main command, a saved
config.yaml re-run without a GPU warning, and mistakes answered before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mgrec.cli import main, parse_overrides
from mgrec.errors import UserError
from mgrec.paths import PACKAGE_DIR
from mgrec.prepare.cli import build_parser as prepare_parser

CHECKOUT = PACKAGE_DIR.parents[1]


def run_args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data}", "--not_mg",
            "--epochs=1", "--reg_weight=0.1", f"--results_dir={tmp_path / 'r'}",
            f"--checkpoint_dir={tmp_path / 'c'}", f"--cache_dir={tmp_path / 'cache'}",
            "--use_gpu=False", *extra]  # fmt: skip


def test_a_bare_boolean_flag_is_true():
    parsed = parse_overrides(["--tensorboard", "--deterministic", "--fresh_eval", "--epochs=2"])
    assert parsed == {"tensorboard": True, "deterministic": True, "fresh_eval": True, "epochs": 2}
    assert parse_overrides(["--fresh_eval=false"]) == {"fresh_eval": False}
    assert parse_overrides(["--fresh_eval", "false"]) == {"fresh_eval": False}
    with pytest.raises(UserError, match="--epochs needs a value"):
        parse_overrides(["--epochs", "--fresh_eval"])  # not a switch: a value is needed


def test_a_bare_switch_takes_effect(tiny, tmp_path):
    assert main(run_args(tmp_path, tiny, "--fresh_eval")) == 0
    (config,) = (tmp_path / "r" / "tiny").glob("*/combo-000/config.yaml")
    assert yaml.safe_load(config.read_text())["fresh_eval"] is True


@pytest.mark.parametrize("flag", ["--seeds=3", "--robustness", "--flatness"])
def test_a_study_flag_without_a_study_is_refused(tiny, tmp_path, capsys, flag):
    assert main(run_args(tmp_path, tiny, flag)) == 2
    err = capsys.readouterr().err
    assert f"{flag.split('=')[0]} goes with --study mg" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_dry_run_checks_the_dataset_as_a_run_would(tiny, tmp_path, capsys):
    args = run_args(tmp_path, tiny, "--dry_run")
    args[3] = "nope"  # the dataset
    assert main(args) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    # a model that needs both modalities, on a dataset with image features only
    (tiny / "tiny" / "text_feat.npy").unlink()
    args = run_args(tmp_path, tiny, "--dry_run")
    args[1] = "DRAGON"
    assert main(args) == 2
    assert "needs both image and text features" in capsys.readouterr().err


def test_prepare_accepts_the_main_commands_spelling():
    parser = prepare_parser()
    base = ["--ratings", "r.csv", "--meta", "m.json", "--images", "i.b", "--name", "x"]
    for spelling in (
        ["--text_model", "M", "--no_progress"],
        ["--text-model", "M", "--no-progress"],
    ):
        args = parser.parse_args([*base, *spelling])
        assert args.text_model == "M" and args.no_progress is True


def test_a_saved_config_reruns_on_a_cpu_machine_without_a_gpu_warning(tiny, tmp_path):
    assert main(run_args(tmp_path, tiny)) == 0
    (saved,) = (tmp_path / "r" / "tiny").glob("*/config.yaml")
    config = yaml.safe_load(saved.read_text())
    config["use_gpu"] = True  # as written on a GPU machine
    saved.write_text(yaml.safe_dump(config))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(CHECKOUT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mgrec", "--config", str(saved), "--dry_run"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr and "finished" in done.stdout
    # typed on the command line, it is a request: then the warning is due
    done = subprocess.run(
        [sys.executable, "-m", "mgrec", "--config", str(saved), "--use_gpu=true", "--dry_run"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "use_gpu is set but no CUDA GPU is visible" in done.stderr


PROBE = """
import sys
from mgrec.cli import main
code = main(sys.argv[1:])
print(code, 'torch' in sys.modules)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "DRAGN"],
        ["--model", "VBPR", "--learning_rat=0.1"],
        ["--model", "VBPR", "--learning_rate=-1"],
        ["--model", "VBPR", "--reg_weight=-1"],
        ["--model", "VBPR", "--dataset", "nope"],
        ["--model", "VBPR", "--seeds=3"],
    ],
)
def test_mistakes_are_answered_before_torch_is_imported(argv):
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.startswith("mgrec: error: ") and done.stderr.count("\n") == 1


def test_output_json_is_unchanged_by_the_switch_parsing(tiny, tmp_path):
    output = tmp_path / "out.json"
    assert main(run_args(tmp_path, tiny, f"--output={output}", "--deterministic")) == 0
    assert set(json.loads(output.read_text())) == {"valid", "test", "test_mask"}
