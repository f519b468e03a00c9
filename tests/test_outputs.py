"""What a researcher sees: --dry_run, the run index, summaries, TensorBoard events, the paper's
table, and the test masking rule named wherever a number is reported (issue 10)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import tiny_dataset
from mgrec.cli import main


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1"]  # fmt: skip


def train(
    tmp_path: Path, data: Path, model: str = "VBPR", *extra: str, dataset: str = "tiny"
) -> list[str]:
    return [
        "--model",
        model,
        "--dataset",
        dataset,
        f"--data_path={data}",
        "--epochs=3",
        *outputs(tmp_path),
        *extra,
    ]


def run_dir(tmp_path: Path, pattern: str, dataset: str = "tiny") -> Path:
    (folder,) = (tmp_path / "results" / dataset).glob(pattern)
    return folder


def test_dry_run_prints_the_grid_and_writes_nothing(tiny, tmp_path, capsys):
    args = train(tmp_path, tiny, "VBPR", "--not_mg", "--reg_weight=[0.1,0.01,0.001]", "--dry_run")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "VBPR on tiny, without Mirror Gradient: 3 combination(s); varying: reg_weight" in out
    assert out.count("(new)") == 3 and "0 finished, 3 to train; no estimate yet" in out
    assert "executor local: one combination at a time" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    # Two of three trained: the dry run says so, numbers them and estimates the third.
    assert main(train(tmp_path, tiny, "VBPR", "--not_mg", "--reg_weight=[0.1,0.01]")) == 0
    before = sorted(p for p in (tmp_path / "results").rglob("*"))
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "combo-000  finished" in out and "combo-001  finished" in out and "(new)" in out
    assert "2 finished, 1 to train: about" in out
    assert sorted(p for p in (tmp_path / "results").rglob("*")) == before


def test_dry_run_of_a_study_and_of_ray_resources(tiny, tmp_path, capsys):
    base = train(tmp_path, tiny, "VBPR", "--reg_weight=0.1", "--alpha2=[0.1,0.2]", "--dry_run")
    assert main([*base, "--study", "mg", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("VBPR on tiny, with Mirror Gradient: 2 combination(s)") == 2  # per seed
    assert out.count("VBPR on tiny, without Mirror Gradient: 2 combination(s)") == 2  # replicas
    assert main([*base, "--executor=ray", "--cpus_per_trial=1"]) == 0
    assert "executor ray (a local instance:" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_index_summary_numbering_settings_and_plots(tiny, tmp_path, capsys):
    assert main(train(tmp_path, tiny, "VBPR", "--not_mg", "--reg_weight=[0.1,0.01]")) == 0
    assert (
        main(
            train(tmp_path, tiny, "FREEDOM", "--reg_weight=0.001", "--dropout=0.5", "--alpha2=0.2")
        )
        == 0
    )
    vbpr = run_dir(tmp_path, "VBPR-plain-tiny-*")
    with open(tmp_path / "results" / "index.csv") as handle:
        index = list(csv.DictReader(handle))
    assert [r["model"] for r in index] == ["FREEDOM", "VBPR"]  # newest first
    row = index[1]
    results = [json.loads(x) for x in (vbpr / "results.jsonl").read_text().splitlines()]
    winner = max(results, key=lambda r: r["valid"]["recall@5"])
    assert (row["mg"], row["finished"], row["total"], row["test_mask"]) == (
        "False",
        "2",
        "2",
        "train",
    )
    assert row["winner"] == f"combo-{winner['index']:03d}" and row["folder"] == str(vbpr)
    assert float(row["test_recall@5"]) == winner["test"]["recall@5"]
    summary = (vbpr / "summary.md").read_text()
    for result in results:  # numbered as the folders are
        assert f"| {result['index']:03d} | {result['params']['reg_weight']} |" in summary
        assert (vbpr / f"combo-{result['index']:03d}" / "curve.png").stat().st_size > 0
    assert (
        f"combo-{winner['index']:03d}: seed=999, reg_weight={winner['params']['reg_weight']}"
        in summary
    )
    assert f"checkpoint {winner['checkpoint']}" in summary and Path(winner["checkpoint"]).is_file()
    assert "Settings that differ from the YAML defaults: " in summary
    changed = summary.split("Settings that differ from the YAML defaults: ")[1].splitlines()[0]
    assert (
        "epochs=3" in changed and "reg_weight=[0.1, 0.01]" in changed and "use_gpu=False" in changed
    )
    assert "test ranking masks training items only (the reference's rule)" in summary
    assert (vbpr / "grid.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["runs", f"--results_dir={tmp_path / 'results'}"]) == 0
    listed = capsys.readouterr().out
    assert (
        "| VBPR | tiny | no MG | 2 (1) | 2/2 | train |" in listed
        and "| FREEDOM | tiny | MG | 1 (1) | 1/1 |" in listed
    )


def test_tensorboard_events_can_be_read_back(tiny, tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    args = train(tmp_path, tiny, "VBPR", "--not_mg", "--reg_weight=0.1", "--tensorboard=True")
    assert main(args) == 0
    combo = run_dir(tmp_path, "VBPR-plain-tiny-*") / "combo-000"
    epochs = [json.loads(x) for x in (combo / "metrics.jsonl").read_text().splitlines()]
    events = event_accumulator.EventAccumulator(str(combo / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {
        "train/loss",
        "time/train_seconds",
        "time/eval_seconds",
        "valid/recall@5",
        "valid/ndcg@50",
    } <= set(scalars)
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 1, 2]
    assert [e.value for e in loss] == pytest.approx([e["loss"] for e in epochs], rel=1e-6)
    recall = [e.value for e in events.Scalars("valid/recall@5")]
    assert recall == pytest.approx([e["valid"]["recall@5"] for e in epochs], rel=1e-6)
    hparams = event_accumulator.EventAccumulator(str(combo / "tensorboard" / "hparams"))
    hparams.Reload()
    best = hparams.Scalars("best/valid_recall@5")[0].value
    row = json.loads(next((combo.parent / "results.jsonl").open()))
    assert best == pytest.approx(row["valid"]["recall@5"], rel=1e-6)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = hparams.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert {k: v.number_value for k, v in values.items()} == {"seed": 999, "reg_weight": 0.1}


def test_the_paper_table_from_finished_runs(tmp_path, capsys):
    data = tmp_path / "data"
    tiny_dataset(data, "sports")  # a tiny dataset under the name of one in the paper's table
    extra = ("--reg_weight=[0.1,0.01]", "--alpha2=0.2")
    assert main(train(tmp_path, data, "VBPR", *extra, dataset="sports")) == 0
    assert main(train(tmp_path, data, "VBPR", "--not_mg", *extra[:1], dataset="sports")) == 0
    assert (
        main(
            train(
                tmp_path,
                data,
                "LayerGCN",
                "--not_mg",
                "--n_layers=1",
                "--dropout=0.1",
                "--reg_weight=0.01",
                dataset="sports",
            )
        )
        == 0
    )
    capsys.readouterr()
    table_csv = tmp_path / "table.csv"
    args = ["table", "--dataset", "sports", "--models", "VBPR,FREEDOM,LayerGCN",
            f"--results_dir={tmp_path / 'results'}", f"--csv={table_csv}"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    mg_run = run_dir(tmp_path, "VBPR-mg-sports-*", "sports")
    rows = [json.loads(x) for x in (mg_run / "results.jsonl").read_text().splitlines()]
    winner = max(rows, key=lambda r: r["valid"]["recall@5"])
    line = next(x for x in text.splitlines() if x.startswith("| VBPR + MG |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:5] == [
        f"{winner['test'][m]:.4f}" for m in ("recall@5", "precision@5", "map@5", "ndcg@5")
    ]
    assert cells[5:9] == ["0.0375", "0.0084", "0.0203", "0.0251"]  # the paper's VBPR + MG on Sports
    assert cells[9] == f"{winner['test']['recall@5'] - 0.0375:+.4f}" and cells[-2] == "2"
    assert cells[-1] == f"{mg_run.name} combo-{winner['index']:03d}"  # the row names its run
    assert "| FREEDOM | no finished run |" in text and "| FREEDOM + MG | no finished run |" in text
    assert (
        "| LayerGCN | " in text and "not published" in text.split("| LayerGCN |")[1].splitlines()[0]
    )
    assert (
        "Published values: the Mirror-Gradient README" in text
        and "masks training items only" in text
    )
    with open(table_csv) as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 6 and float(written[1]["recall@5"]) == winner["test"]["recall@5"]
    assert main([*args[:-1], "--select", "test"]) == 0
    assert "**selected by test** (the reference's protocol)" in capsys.readouterr().out


def test_the_test_masking_rule_is_a_choice_and_is_named(tiny, tmp_path, capsys):
    results = {}
    for flag in ("False", "True"):
        output = tmp_path / f"out-{flag}.json"
        args = train(
            tmp_path,
            tiny,
            "VBPR",
            "--not_mg",
            "--reg_weight=0.1",
            f"--test_mask_valid={flag}",
            f"--output={output}",
        )
        assert main(args) == 0
        results[flag] = json.loads(output.read_text())
    assert (
        results["False"]["test_mask"] == "train" and results["True"]["test_mask"] == "train+valid"
    )
    assert (
        results["False"]["valid"] == results["True"]["valid"]
    )  # validation is the same under both
    assert results["False"]["test"] != results["True"]["test"]
    # Masking the validation items can only lift the test items' ranks: recall cannot fall.
    assert all(
        results["True"]["test"][f"recall@{k}"] >= results["False"]["test"][f"recall@{k}"]
        for k in (5, 10, 20, 50)
    )
    summaries = [p.read_text() for p in (tmp_path / "results" / "tiny").glob("*/summary.md")]
    assert len(summaries) == 2  # the rule is part of a run's identity: two run folders
    assert sum("masks training and validation items (RecBole's rule)" in s for s in summaries) == 1


def test_files_get_the_usual_permissions(tiny, tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert (
        main(
            train(tmp_path, tiny, "FREEDOM", "--reg_weight=0.001", "--dropout=0.5", "--alpha2=0.2")
        )
        == 0
    )
    written = [*(tmp_path / "ckpt").rglob("*.pth"), *(tmp_path / "cache").glob("*.npz"),
               *(tmp_path / "results").rglob("*.jsonl"), *(tmp_path / "results").rglob("*.png")]  # fmt: skip
    assert len(written) >= 4
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~mask)}
