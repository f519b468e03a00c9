"""MG studies: the equal-budget rule, both selection protocols, resumption, robustness."""

from __future__ import annotations

import json

import pytest

from mgrec import robustness
from mgrec.cli import main


def study_args(tmp_path, data_path, *extra):
    return [
        "--model", "VBPR", "--dataset", "tiny", f"--data_path={data_path}", "--study", "mg",
        "--seeds", "2", "--epochs=2", "--reg_weight=0.01", "--alpha2=[0.1,0.3]",
        f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
        f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", *extra,
    ]  # fmt: skip


def only_study(tmp_path):
    (folder,) = (tmp_path / "r" / "tiny").glob("study-mg-VBPR-*")
    return folder


def trained(tmp_path, tag):
    """Finished combinations of every run of an arm ('mg' or 'plain')."""
    return [
        json.loads(line)
        for path in (tmp_path / "r" / "tiny").glob(f"VBPR-{tag}-*/results.jsonl")
        for line in path.read_text().splitlines()
    ]


def test_equal_budget_study_report_and_resume(tiny, tmp_path, capsys):
    assert main(study_args(tmp_path, tiny)) == 0
    folder = only_study(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    assert {p.name for p in folder.iterdir()} >= {"report.md", "report.json", "seeds.png"}
    # equal budget: per seed, MG trains 1 grid point x 2 alpha2 values; no-MG 1 x 2 replicas
    mg, plain = trained(tmp_path, "mg"), trained(tmp_path, "plain")
    assert len(mg) == len(plain) == 4
    assert sorted(r["params"]["seed"] for r in plain) == [999, 1000, 1999, 2000]
    assert report["seeds"] == [999, 1000] and report["budget"] == "equal"
    for record in report["per_seed"]:
        arm_runs = [r for r in mg if r["params"]["seed"] == record["seed"]]
        best = max(arm_runs, key=lambda r: r["valid"]["recall@5"])
        assert record["mg"] == best["test"]  # selected by validation
        first_replica = [r for r in plain if r["params"]["seed"] == record["seed"]]
        assert record["reference_protocol"]["plain"] == first_replica[0]["test"]  # one replica
    comparison = report["comparison"]["recall@5"]
    assert set(comparison) >= {"plain", "mg", "difference"}
    assert "Does Mirror Gradient help VBPR on tiny?" in capsys.readouterr().out
    # A re-run trains nothing new and reproduces the report.
    stamps = sorted(p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.pth"))
    assert main(study_args(tmp_path, tiny)) == 0
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.pth")) == stamps
    again = json.loads((folder / "report.json").read_text())
    assert again["comparison"] == report["comparison"]


def test_reference_budget_gives_no_mg_one_replica(tiny, tmp_path):
    assert main(study_args(tmp_path, tiny, "--study_budget=reference", "--seeds", "1")) == 0
    assert len(trained(tmp_path, "plain")) == 1 and len(trained(tmp_path, "mg")) == 2


def test_robustness_clean_equals_evaluation(tiny, tmp_path):
    assert main(study_args(tmp_path, tiny, "--seeds", "1", "--robustness")) == 0
    folder = only_study(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    rows = report["robustness"]["rows"]
    for arm in ("plain", "mg"):
        clean = next(r for r in rows if r["arm"] == arm and r["kind"] == "clean")
        assert clean["recall@5"] == report["per_seed"][0][arm]["recall@5"]
    assert (folder / "robustness.png").is_file()
    assert len(rows) == 2 * len(robustness.shifts())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--robustness"], "go with --study mg"),
        (["--study", "mg", "--seeds", "0"], "--seeds must be at least 1"),
    ],
)
def test_study_mistakes(args, message, tmp_path, capsys):
    assert main([*args, f"--results_dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


def test_flatness_report(tiny, tmp_path):
    assert main(study_args(tmp_path, tiny, "--seeds", "1", "--flatness")) == 0
    folder = only_study(tmp_path)
    results = json.loads((folder / "flatness.json").read_text())
    assert set(results) == {"no-MG seed 999", "MG seed 999"}
    for result in results.values():
        assert len(result["sharpness"]["mean"]) == 4 and result["hessian"]["eigenvalue"] is not None
    assert (folder / "flatness.png").stat().st_size > 0
