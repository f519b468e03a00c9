"""MG studies: the equal-budget rule, both selection protocols, resumption, robustness."""

from __future__ import annotations

import json

import pytest

from mgrec.cli import main
from mgrec.study import continuation, robustness


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


@pytest.mark.slow
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
        (["--robustness"], "goes with --study mg"),
        (["--study", "mg", "--seeds", "0"], "--seeds must be at least 1"),
    ],
)
def test_study_mistakes(args, message, tmp_path, capsys):
    assert main([*args, f"--results_dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


FAST_FLATNESS = (
    "--flatness_settings={draws: 2, batches: 2, rhos: [0.01, 0.05], sharpness_draws: 3, worst_steps: 2, "
    "alphas: [-0.1, 0.0, 0.1], lanczos_iterations: 6, top_k: 2, probes: 3, max_epochs: 4}"
)
POINT_KEYS = {"lambda_max", "lambda_min", "top_eigenvalues", "trace", "trace_stderr", "rho",
              "sharpness_mean", "sharpness_worst", "alpha", "loss", "settings"}  # fmt: skip


@pytest.mark.slow
def test_flatness_and_its_link_to_robustness(tiny, tmp_path):
    args = study_args(tmp_path, tiny, "--seeds", "2", "--flatness", "--robustness", FAST_FLATNESS)
    args[args.index("VBPR")] = "FREEDOM"  # a model with training-time randomness (pruning)
    args += ["--dropout=0.5", "--knn_k=5"]
    assert main(args) == 0
    (folder,) = (tmp_path / "r" / "tiny").glob("study-mg-FREEDOM-*")
    results = json.loads((folder / "flatness.json").read_text())
    assert set(results) == {"no-MG seed 999", "MG seed 999", "no-MG seed 1000", "MG seed 1000"}
    for record in results.values():
        for point in ("winner", "converged"):
            assert set(record[point]) >= POINT_KEYS
            settings = record[point]["settings"]
            assert (
                settings["draws"] == 2
                and settings["batches"] == 2
                and settings["seed"] == record["seed"]
            )
            assert len(record[point]["sharpness_worst"]) == 2 and len(record[point]["loss"]) == 3
        assert (
            "2 fixed draws" in record["winner"]["fixed"]
            and "edge pruning" in record["winner"]["fixed"]
        )
        assert 1 <= record["converged"]["continued"]["epochs"] <= 4
    report = json.loads((folder / "report.json").read_text())
    link = report["flatness_vs_robustness"]
    assert len(link["pairs"]) == 4 and len(link["correlations"]) == 10
    assert all("noise drop" in p and "adjust drop" in p for p in link["pairs"])
    text = (folder / "report.md").read_text()
    assert (
        "## Flatness (of the loss training minimised)" in text
        and "| MG seed 1000 | converged |" in text
    )
    assert "Spearman" in text and "whole study" in text
    for name in ("flatness-winner.png", "flatness-converged.png", "flatness-robustness.png"):
        assert (folder / name).stat().st_size > 0


def test_studies_follow_the_configured_cut_offs(tiny, tmp_path):
    args = study_args(tmp_path, tiny, "--seeds", "1", "--robustness", "--topk=[5,10]")
    assert main(args) == 0
    (folder,) = (tmp_path / "r" / "tiny").glob("study-mg-VBPR-*")
    report = json.loads((folder / "report.json").read_text())
    assert report["metrics_shown"] == ["recall@5", "recall@10", "ndcg@5", "ndcg@10"]
    assert set(report["comparison"]) == {
        f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10)
    }
    assert report["robustness"]["metrics"] == ["recall@5", "ndcg@5"]
    assert "| seed | no-MG recall@5 | no-MG recall@10 |" in (folder / "report.md").read_text()


def test_the_plateau_rule_compares_the_loss_window_epochs_back():
    reached = continuation.plateau(window=2, tol=0.1)
    assert not reached([10.0, 9.0])  # not yet window + 1 epochs
    assert not reached([10.0, 9.5, 8.0])  # fell 20 % over two epochs
    assert reached([10.0, 9.5, 9.1])  # 9 % < 10 %
    assert not reached([10.0, 9.5, 9.4, 8.5])  # window epochs back: 9.5 -> 8.5, 10.5 %
    assert reached([10.0, 9.5, 9.4, 8.6])  # 9.5 -> 8.6: 9.5 %
    assert reached([10.0, 9.0, float("inf")]) and reached([10.0, 9.0, float("nan")])
    assert not reached([-10.0, -11.0, -12.5])  # relative to |L|: 25 % lower
