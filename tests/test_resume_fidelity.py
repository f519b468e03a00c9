"""``--resume`` reproduces what the run reported, or says exactly how it differs (issue 19).

Every registered model is trained for two epochs on the tiny dataset with its default settings
(``fresh_eval: false``: the stale-scoring models score from the representation cached by the
last training forward; DualGNN/DRAGON pad neighbour lists by a random draw every epoch), then
its checkpoint is resumed: the recomputed metrics must equal the stored ones exactly, and the
command must say so in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mgrec import checkpoint
from mgrec.cli import main
from mgrec.config import grid, load_config
from mgrec.models import registry

MODELS = list(registry.builtin())


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1"]  # fmt: skip


def one_combination(model: str, data: Path) -> list[str]:
    """Overrides that fix every grid key of ``model`` to its first value (one combination)."""
    config = load_config(
        model, "tiny", mg=registry.trains(model), overrides={"data_path": str(data)}
    )
    first = grid(config)[0]
    keys = [k for k in config["hyper_parameters"] if k != "seed"]
    return [f"--{k}={json.dumps(first[k])}" for k in keys]


def train_and_resume(model: str, data: Path, tmp_path: Path, capsys, *extra: str):
    """Train ``model`` for two epochs, then ``--resume`` its checkpoint. Returns the results row,
    the checkpoint's payload, the resumed metrics (--output) and the resume's stdout."""
    mg = [] if registry.trains(model) else ["--not_mg"]
    args = ["--model", model, "--dataset", "tiny", f"--data_path={data}", "--epochs=2",
            *mg, *one_combination(model, data), *outputs(tmp_path), *extra]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "results" / "tiny").glob(f"{model}-*")
    (row,) = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert row["checkpoint"], f"{model} wrote no checkpoint"
    stored = checkpoint.read(Path(row["checkpoint"]))
    assert stored["verified"]
    capsys.readouterr()
    output = tmp_path / f"{model}-resumed.json"
    resume = ["--resume", row["checkpoint"], f"--data_path={data}", f"--output={output}",
              *outputs(tmp_path)]  # fmt: skip
    assert main(resume) == 0, capsys.readouterr().err
    return row, stored, json.loads(output.read_text()), capsys.readouterr().out


@pytest.mark.parametrize("model", MODELS)
def test_resume_gives_the_stored_metrics_exactly(model, tiny, tmp_path, capsys):
    row, stored, resumed, out = train_and_resume(model, tiny, tmp_path, capsys)
    assert stored["metrics"]["valid"] == row["valid"] and stored["metrics"]["test"] == row["test"]
    assert resumed["valid"] == row["valid"], model  # bit for bit, every metric
    assert resumed["test"] == row["test"], model
    compared = len(row["valid"]) + len(row["test"])
    assert f"all {compared} figures match the recomputed ones exactly" in out


def test_the_stale_models_store_what_they_scored_with(tiny, tmp_path, capsys):
    """GRCN (fresh_eval false) stores the cached representation it was evaluated with, DRAGON
    the neighbour draw; without them (an older mgrec's checkpoint) the figures differ, and the
    resume says which and why, printing both."""
    row, stored, _, _ = train_and_resume("GRCN", tiny, tmp_path / "grcn", capsys)
    scoring = stored["scoring"]
    assert set(scoring) == {"cached_users", "cached_items"}
    assert scoring["cached_users"].shape[0] == 30 and scoring["cached_items"].shape[0] == 60
    _, dragon, _, _ = train_and_resume("DRAGON", tiny, tmp_path / "dragon", capsys)
    assert set(dragon["scoring"]) == {"neighbour_ids", "neighbour_weights"}
    assert dragon["scoring"]["neighbour_ids"].shape == (30, 40)
    # The same checkpoint without its scoring state, as an older mgrec wrote it.
    payload = {k: v for k, v in stored.items() if k not in ("scoring", "verified", "version")}
    older = tmp_path / "older.pth"
    checkpoint.save(older, payload)
    output = tmp_path / "older.json"
    assert main(["--resume", str(older), f"--data_path={tiny}", f"--output={output}",
                 *outputs(tmp_path / "grcn")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    recomputed = json.loads(output.read_text())
    assert recomputed["test"] != row["test"]  # scored from the parameters: other figures
    line = next(x for x in out.splitlines() if x.startswith("Stored metrics"))
    assert "figures differ from the recomputed ones" in line
    assert "the checkpoint holds no scoring state" in line
    assert "| valid (stored) |" in out and "| test (now) |" in out


def test_a_stored_figure_that_does_not_match_is_shown_beside_the_recomputed_one(
    tiny, tmp_path, capsys
):
    row, stored, _, _ = train_and_resume("VBPR", tiny, tmp_path, capsys)
    payload = {k: v for k, v in stored.items() if k not in ("verified", "version")}
    payload["metrics"] = json.loads(json.dumps(payload["metrics"]))
    payload["metrics"]["test"]["recall@5"] += 0.5
    edited = tmp_path / "edited.pth"
    checkpoint.save(edited, payload)
    assert main(["--resume", str(edited), f"--data_path={tiny}", *outputs(tmp_path)]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("Stored metrics")]
    old, new = row["test"]["recall@5"] + 0.5, row["test"]["recall@5"]
    assert (
        f"1 of 32 figures differ from the recomputed ones (test recall@5 {old:.4f} -> {new:.4f})"
        in line
    )
    assert "cause: none found" in line
    (stored_row,) = [x for x in out.splitlines() if x.startswith("| test (stored) |")]
    assert f"| {old:.4f} |" in stored_row


def test_a_resume_on_another_dataset_names_it_as_the_cause(tiny, tmp_path, capsys):
    from conftest import tiny_dataset

    row, _, _, _ = train_and_resume("DRAGON", tiny, tmp_path, capsys)
    tiny_dataset(tiny, name="other", seed=1)
    args = ["--resume", row["checkpoint"], "--dataset", "other", f"--data_path={tiny}",
            *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("Stored metrics")]
    assert "figures differ" in line and "evaluated on other, but its metrics are from tiny" in line


def test_scoring_state_round_trips_through_the_training_state(tiny, tmp_path, capsys):
    """A killed GRCN run resumed from its training state writes the same scoring state (the
    best epoch's cache is part of the saved progress)."""
    row, stored, _, _ = train_and_resume(
        "GRCN", tiny, tmp_path, capsys, "--keep_training_state=True"
    )
    (state_file,) = (tmp_path / "results").rglob("training_state.pth")
    state, verified = checkpoint.load_file(state_file, what="training state")
    assert verified
    best = state["progress"]["best_scoring"]
    for key, tensor in stored["scoring"].items():
        assert torch.equal(best[key], tensor)


@pytest.mark.parametrize("model", ["DRAGON", "DualGNN"])
def test_the_best_epochs_neighbour_draw_is_the_one_resumed(model, tmp_path, capsys):
    """Past the first epoch, the best epoch's neighbour padding is not the one a fresh draw
    gives: only the stored draw reproduces the figures (on the embedded dataset, where the
    best epoch comes later; on tiny it is the first)."""
    data = tmp_path / "data"
    args = ["--model", model, "--dataset", "synthetic", f"--data_path={data}", "--epochs=3",
            "--learning_rate=0.001", "--reg_weight=0.001", "--fresh_eval=True", "--not_mg",
            *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 0
    (folder,) = (tmp_path / "results" / "synthetic").glob(f"{model}-*")
    (row,) = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert row["best_epoch"] >= 1
    output = tmp_path / "resumed.json"
    resume = ["--resume", row["checkpoint"], f"--data_path={data}", f"--output={output}",
              *outputs(tmp_path)]  # fmt: skip
    assert main(resume) == 0
    resumed = json.loads(output.read_text())
    assert resumed["valid"] == row["valid"] and resumed["test"] == row["test"]
