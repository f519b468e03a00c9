"""End to end through the command line: a grid run, its files, skipping, --output, --resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import GOLDEN, GOLDEN_DATA
from mgrec.cli import main
from mgrec.metrics import round4
from mgrec.paths import PROJECT_ROOT


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False"]  # fmt: skip


def train_args(tmp_path: Path, data_path: Path) -> list[str]:
    return ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data_path}", "--not_mg",
            "--epochs=3", "--reg_weight=[0.1,0.001]", *outputs(tmp_path)]  # fmt: skip


def only_run_dir(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "results" / "tiny").iterdir()
    return folder


def test_grid_run_files_and_skip_on_rerun(tiny, tmp_path, capsys):
    output = tmp_path / "out.json"
    assert main([*train_args(tmp_path, tiny), f"--output={output}"]) == 0
    run = only_run_dir(tmp_path)
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "results.jsonl",
        "train.log",
        "summary.md",
        "combo-000",
        "combo-001",
    }
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["params"]["reg_weight"] for r in results] == [0.1, 0.001]
    for index, result in enumerate(results):
        combo = run / f"combo-{index:03d}"
        epochs = [json.loads(line) for line in (combo / "metrics.jsonl").read_text().splitlines()]
        assert len(epochs) == 3 and all(e["valid"] for e in epochs)
        assert (combo / "curve.png").stat().st_size > 0 and (combo / "config.yaml").is_file()
        assert Path(result["checkpoint"]).is_file()
    text = capsys.readouterr().out
    assert "Winner by validation" in text and "Winner by test" in text and "MMRec issue #64" in text
    winner = max(results, key=lambda r: round4(r["valid"]["recall@5"]))
    written = json.loads(output.read_text())
    assert written == {"valid": winner["valid"], "test": winner["test"], "test_mask": "train"}
    assert "recall@5" in written["test"] and "ndcg@50" in written["valid"]
    # A re-run of the same command trains nothing.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ckpt").rglob("*.pth")}
    assert main(train_args(tmp_path, tiny)) == 0
    assert "already finished, skipped" in (run / "train.log").read_text()
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "ckpt").rglob("*.pth")}
    assert len((run / "results.jsonl").read_text().splitlines()) == 2


def test_interrupted_grid_resumes_with_the_missing_combination(tiny, tmp_path):
    assert main(train_args(tmp_path, tiny)) == 0
    run = only_run_dir(tmp_path)
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text(lines[0] + "\n")  # as if it crashed in combination 2
    first = (run / "combo-000" / "metrics.jsonl").stat().st_mtime_ns
    assert main(train_args(tmp_path, tiny)) == 0
    again = (run / "results.jsonl").read_text().splitlines()
    assert len(again) == 2 and json.loads(again[1]) | {"seconds": 0} == json.loads(lines[1]) | {
        "seconds": 0
    }
    assert (run / "combo-000" / "metrics.jsonl").stat().st_mtime_ns == first


def test_resume_our_checkpoint(tiny, tmp_path, capsys):
    assert main([*train_args(tmp_path, tiny)]) == 0
    result = json.loads((only_run_dir(tmp_path) / "results.jsonl").read_text().splitlines()[0])
    capsys.readouterr()
    output = tmp_path / "resumed.json"
    # paths never come from a checkpoint: the data folder is named on the command line
    resume = ["--resume", result["checkpoint"], f"--output={output}", f"--data_path={tiny}"]
    assert main([*resume, *outputs(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["recall@5", "precision@5", "map@5", "ndcg@5"]
    assert lines[1].split("\t")[0] == f"{result['test']['recall@5']:.4f}"
    assert json.loads(output.read_text()) == {
        "valid": result["valid"],
        "test": result["test"],
        "test_mask": "train",
    }


def golden_resume_args(model: str, checkpoint_file: Path) -> list[str]:
    """Arguments evaluating a checkpoint on the golden dataset."""
    return [
        "--model",
        model,
        "--dataset",
        "golden11",
        f"--data_path={GOLDEN_DATA}",
        "--resume",
        str(checkpoint_file),
    ]


def test_resume_reference_checkpoint(summary, tmp_path, capsys):
    ckpt = GOLDEN / "reference" / "FREEDOM.pth"
    args = golden_resume_args("FREEDOM", ckpt)
    output = tmp_path / "ref.json"
    assert main([*args, *outputs(tmp_path), f"--output={output}"]) == 0
    written = json.loads(output.read_text())
    for split in ("valid", "test"):
        assert {k: round4(v) for k, v in written[split].items()} == summary["models"]["FREEDOM"][
            split
        ]


def test_resume_rejects_a_mismatched_state_dict(tmp_path, capsys):
    state = torch.load(GOLDEN / "reference" / "FREEDOM.pth", weights_only=True)
    del state["user_embedding.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["item_id_embedding.weight"] = torch.zeros(90, 32)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    args = golden_resume_args("FREEDOM", bad)
    assert main([*args, *outputs(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing keys: user_embedding.weight" in err and "unexpected keys: extra.weight" in err
    assert "item_id_embedding.weight (90, 32) vs model (90, 64)" in err and err.count("\n") == 1


def test_resume_ignores_result_embed_and_drops_aliases(summary, tmp_path):
    state = torch.load(GOLDEN / "reference" / "VBPR.pth", weights_only=True)
    state["result_embed"] = torch.zeros(3, dtype=torch.float64)
    state["v_preference"], state["t_preference"] = torch.zeros(1), torch.zeros(1)
    path = tmp_path / "vbpr.pth"
    torch.save(state, path)
    args = golden_resume_args("VBPR", path)
    output = tmp_path / "vbpr.json"
    assert main([*args, *outputs(tmp_path), "--reg_weight=0.01", f"--output={output}"]) == 0
    written = json.loads(output.read_text())
    for split in ("valid", "test"):  # the extra keys changed nothing: the reference's metrics
        assert {k: round4(v) for k, v in written[split].items()} == summary["models"]["VBPR"][split]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--learning_rat=0.1"], "did you mean '--learning_rate'"),
        (["--not-mg"], "did you mean '--not_mg'"),
        (["--seeds=3", "--seed=5x", "--model", "dragon"], "did you mean 'DRAGON'"),
        (["--output=result.txt"], "must end in .json"),
        (["--model", "NoSuch"], "unknown model 'NoSuch'"),
        (["--resume", "missing.pth"], "checkpoint file not found"),
        (["--config", "missing.yaml"], "config file not found"),
        (["--epochs"], "--epochs needs a value"),
        (["--learning_rate=0.001.0.005"], "learning_rate' must be a positive number"),
    ],
)
def test_user_mistakes_are_one_line(args, message, tmp_path, capsys):
    assert main([*args, *outputs(tmp_path), f"--data_path={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_entry_points_work_from_any_directory(tmp_path):
    for cwd, script in (
        (tmp_path, PROJECT_ROOT / "src" / "main.py"),
        (PROJECT_ROOT / "src", Path("main.py")),
    ):
        done = subprocess.run(
            [sys.executable, str(script), "--help"], cwd=cwd, capture_output=True, text=True
        )
        assert done.returncode == 0 and "--not_mg" in done.stdout
