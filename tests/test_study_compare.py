"""A study across models and strategies (issue 21, parts 2 and 4): ``--study compare``.

The replica rule under each budget (equal trained models, equal gradient evaluations, the
reference's one each), the gradient-evaluation count checked against the strategies' own
wrappers, the plan of arms, the command line's refusals, the paper's table with its marks; then
a 2-model x 3-strategy x 2-seed study on the ``tiny`` dataset through the CLI: its folder and
study.json, the family of tests and its corrections recomputed here, the cost counted by hand
from the runs' epochs, the table, robustness's paired statistics, a re-run that trains nothing,
``mgrec table --study`` and ``mgrec runs``; and flatness for every arm.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from mgrec.analysis import stats
from mgrec.cli import main
from mgrec.errors import UserError
from mgrec.optim import strategy_for
from mgrec.paths import PACKAGE_DIR
from mgrec.study import compare, protocol
from mgrec.study import robustness as robust
from mgrec.tables import compare_table, mark, to_csv

pytest.importorskip("pytorch_optimizer")  # SAM's arm (the `sam` extra)

MODELS = ("VBPR", "LayerGCN")
STRATEGIES = ("plain", "mg", "sam")
TRAIN_ROWS = 180  # the tiny dataset: 30 users x 6 training rows
BATCH = 64  # so ceil(180 / 64) = 3 batches per epoch
TABLE_COLUMNS = ("REC@5", "PREC@5", "MAP@5", "NDCG@5", "REC@20", "PREC@20", "MAP@20", "NDCG@20")
TABLE_METRICS = ("recall@5", "precision@5", "map@5", "ndcg@5", "recall@20", "precision@20",
                 "map@20", "ndcg@20")  # fmt: skip
ALL_METRICS = [f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)]


def folders(tmp_path: Path, data: Path) -> list[str]:
    return [f"--data_path={data}", f"--results_dir={tmp_path / 'r'}",
            f"--checkpoint_dir={tmp_path / 'c'}", f"--cache_dir={tmp_path / 'cache'}",
            "--use_gpu=False"]  # fmt: skip


def compare_args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    """2 models x 3 strategies x 2 seeds, one grid point per arm, 2 epochs of 3 batches."""
    return ["--study", "compare", "--models", ",".join(MODELS), "--strategies",
            ",".join(STRATEGIES), "--seeds", "2", "--dataset", "tiny", "--epochs=2",
            f"--train_batch_size={BATCH}", "--reg_weight=0.01", "--dropout=0.1", "--alpha2=0.2",
            "--beta=2", "--rho=0.05", *folders(tmp_path, data), *extra]  # fmt: skip


# --- the cost rule and the budgets (no training) ------------------------------------------------


@pytest.mark.parametrize(
    ("combo", "epochs", "batches", "expected"),
    [
        ({"mg": False}, 3, 5, 15),
        ({"strategy": "sam", "rho": 0.05}, 3, 5, 30),
        ({"strategy": "asam", "rho": 0.5}, 2, 4, 16),
        # reference: mirror batches b = 0, 2, 4 of each epoch -> 3 extra passes per epoch
        ({"mg": True, "beta": 2, "mg_mode": "reference"}, 3, 5, 15 + 3 * 3),
        ({"mg": True, "beta": 3, "mg_mode": "reference"}, 3, 5, 15 + 3 * 2),
        ({"mg": True, "beta": 1, "mg_mode": "reference"}, 2, 5, 20),
        # algorithm1: global steps t = 2, 4, ..., 14 of 15 -> 7 extra passes
        ({"mg": True, "beta": 2, "mg_mode": "algorithm1", "alpha1": 1.0, "alpha2": 0.5}, 3, 5, 22),
    ],
)
def test_gradient_evaluations_match_the_strategies_own_passes(combo, epochs, batches, expected):
    assert protocol.gradient_evaluations(combo, epochs, batches) == expected
    # the wrapper mgrec trains with calls the closure once per forward-backward pass
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    config = {"alpha1": 1.0, "alpha2": 0.2, **combo}
    strategy = strategy_for(torch.optim.SGD([weight], lr=0.01), config)
    calls = 0

    def closure() -> torch.Tensor:
        nonlocal calls
        calls += 1
        return (weight**2).sum()

    for _ in range(epochs):
        strategy.start_epoch()
        for _ in range(batches):
            strategy.step(closure)
    assert calls == expected


def test_replica_counts_under_each_budget():
    # equal: as many trained models as the largest arm
    assert protocol.replica_counts([4, 2, 1], "equal") == [1, 2, 4]
    assert protocol.replica_counts([3, 2], "equal") == [1, 1]  # 2 or 4 vs 3: a tie, the smaller
    assert protocol.replica_counts([6, 4], "equal") == [1, 1]  # 4 and 8 are as near 6: 1
    assert protocol.replica_counts([9, 4], "equal") == [1, 2]  # 8 is nearer 9 than 12
    # equal_grad: plain 2 models x 1 pass, MG 4 x 1.5, SAM 2 x 2 -> plain 3, SAM 6/4 = 1.5 -> 1
    assert protocol.replica_counts([2.0, 6.0, 4.0], "equal_grad") == [3, 1, 1]
    assert protocol.replica_counts([2.0, 6.0, 4.0], "reference") == [1, 1, 1]
    with pytest.raises(UserError, match="study_budget"):
        protocol.replica_counts([1.0], "equal_models")


def test_the_plan_gives_each_arm_its_replicas(tiny, tmp_path):
    overrides = {
        "data_path": str(tiny), "results_dir": str(tmp_path / "r"), "use_gpu": False,
        "reg_weight": [0.1, 0.01], "alpha2": [0.1, 0.3], "beta": 2, "rho": 0.05,
    }  # fmt: skip
    expected = {"equal": [2, 1, 2], "equal_grad": [3, 1, 1], "reference": [1, 1, 1]}
    found = {}
    for budget, replicas in expected.items():
        plan = protocol.load_compare(
            ["VBPR"], STRATEGIES, "tiny", 2, overrides={**overrides, "study_budget": budget}
        )
        assert [a.combos for a in plan.arms] == [2, 4, 2]
        assert [a.replicas for a in plan.arms] == replicas
        assert [a.cost for a in plan.arms] == [2.0, 6.0, 4.0]  # passes per batch-epoch
        assert plan.seeds == [999, 1000]
        assert plan.arm("VBPR", "plain").grid(1000)["seed"] == [
            1000 + 1000 * k for k in range(replicas[0])
        ]
        assert len(plan.grids()) == 2 * 3 and plan.trials == 2 * sum(
            c * r for c, r in zip([2, 4, 2], replicas, strict=True)
        )
        found[budget] = plan.folder
        assert plan.folder.name.startswith("study-compare-")
    assert len(set(found.values())) == 3  # the budget is part of the study's identity
    # --study mg is the special case: one model, arms MG and no-MG
    mg = protocol.load("VBPR", "tiny", 2, overrides={**overrides, "study_budget": "equal"})
    assert (mg.mg_candidates, mg.replicas, mg.mg_trials, mg.plain_trials) == (2, 2, 4, 4)
    assert mg.replica_seeds(999) == [999, 1999] and mg.folder.name.startswith("study-mg-VBPR-")
    grad = protocol.load("VBPR", "tiny", 1, overrides={**overrides, "study_budget": "equal_grad"})
    assert grad.replicas == 3  # 4 MG models x 1.5 passes = 6 = 3 replicas of 2 plain models


def test_a_dry_run_plans_every_arm_and_writes_nothing(tiny, tmp_path, capsys):
    assert main(compare_args(tmp_path, tiny, "--dry_run")) == 0
    out = capsys.readouterr().out
    assert out.count("1 combination(s)") == 2 * 3 * 2
    assert "with SAM" in out and "without Mirror Gradient" in out
    assert not list((tmp_path / "r").rglob("study.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "VBPR,LayerGCN"], "--models goes with --study compare"),
        (["--strategies", "plain,sam"], "--strategies goes with --study compare"),
        (["--study", "mg", "--models", "VBPR"], "--models goes with --study compare"),
        (["--study", "compare", "--models", "VBPR", "--strategies", "plain,foo"],
         "--strategies: the strategy must be one of plain, mg, sam, asam"),
        (["--study", "compare", "--models", "VBPR,ItemKNNCBF"], "but ItemKNNCBF trains nothing"),
        (["--study", "compare", "--models", "VBPR", "--strategies", "mg,sam"],
         "--strategies must include plain"),
        (["--study", "compare", "--models", "VBPR", "--strategies", "plain"],
         "plain and at least one other strategy"),
        (["--study", "compare", "--models", "VBPR", "--not_mg"], "drop --strategy, --not_mg"),
        (["--study", "compare", "--models", "VBPR", "--strategy=sam"], "drop --strategy"),
        (["--study", "compare", "--model", "VBPR", "--models", "FREEDOM"], "drop --model"),
        (["--study", "compare", "--models", "VBPR,VBPR"], "--models names VBPR twice"),
        (["--study", "compare", "--models", "VBPR", "--study_budget=fair"],
         "'study_budget' must be one of equal, equal_grad, reference"),
        (["--study", "compare", "--models", "VBPR", "--seeds", "0"], "--seeds must be at least 1"),
    ],
)  # fmt: skip
def test_comparison_mistakes_are_one_line(args, message, tiny, tmp_path, capsys):
    argv = [*args, "--dataset", "tiny", "--epochs=1", *folders(tmp_path, tiny)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("mgrec: error: ")
    assert not list((tmp_path / "r").rglob("study.json"))


def test_study_flags_without_their_study_are_refused_before_torch_is_imported():
    probe = (
        "import sys\nfrom mgrec.cli import main\nprint(main(sys.argv[1:]), 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    for argv in (["--models", "VBPR"], ["--study", "compare", "--strategies", "plain,bad"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.stdout.split() == ["2", "False"], done.stderr


# --- the paper's table and its marks (a report made here) ---------------------------------------


def made_report(seeds: int = 6) -> dict:
    """A comparison report of one model on fixed numbers: MG 0.05 above plain on every metric
    (with a little noise), SAM plain's values plus noise around zero."""
    rng = np.random.default_rng(7)
    per_seed = []
    for seed in range(seeds):
        plain = {m: float(rng.uniform(0.1, 0.3)) for m in ALL_METRICS}
        arms = {
            "plain": plain,
            "mg": {m: v + 0.05 + float(rng.normal(0, 0.001)) for m, v in plain.items()},
            "sam": {m: v + float(rng.normal(0, 0.01)) for m, v in plain.items()},
        }
        per_seed.append({"seed": seed, "model": "A", "arms": {
            s: {"test": values, "reference_protocol": values} for s, values in arms.items()
        }})  # fmt: skip
    plan = SimpleNamespace(models=["A"], strategies=list(STRATEGIES))
    found, family = compare.comparisons(plan, per_seed, ALL_METRICS)
    return {
        "kind": "compare", "models": ["A"], "strategies": list(STRATEGIES), "dataset": "d",
        "seeds": list(range(seeds)), "budget": "equal", "metrics": ALL_METRICS,
        "per_seed": per_seed, "comparisons": found, "family": {"accuracy": family},
        "synthetic": False,
    }  # fmt: skip


def body_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_the_paper_table_marks_what_survives_the_correction():
    report = made_report()
    family = report["family"]["accuracy"]
    assert family["comparisons"] == 1 * 2 * 16 and family["t"] == 32
    text, rows = compare_table(report)
    header, *body = body_rows(text)
    assert header == ["Model", *TABLE_COLUMNS]
    assert [r[0] for r in body] == ["A", "A + MG", "A + SAM"]
    for row, strategy in zip(body, STRATEGIES, strict=True):
        for cell, metric in zip(row[1:], TABLE_METRICS, strict=True):
            values = [r["arms"][strategy]["test"][metric] for r in report["per_seed"]]
            shown = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            expected_mark = "*" if strategy == "mg" else ""  # MG's 0.05 gain survives Holm
            assert cell == shown + expected_mark
    assert "Holm-Bonferroni" in text and "Benjamini-Hochberg" in text
    assert "1 model x 2 strategies against plain x 16 metrics = 32" in text
    # CSV: every row has every column; the plain row has no difference and no mark
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["row"] for r in parsed] == ["A", "A + MG", "A + SAM"]
    assert parsed[0]["recall@5 mark"] == "" and parsed[0]["recall@5 difference"] == ""
    assert parsed[1]["recall@5 mark"] == "*" and float(parsed[1]["recall@5 difference"]) > 0.04
    # selection by test: the reference's protocol, labelled, with no marks
    text, _ = compare_table(report, "test")
    assert "selected by test" in text and "*" not in text.split("\n\n")[0]


def test_the_marks_name_the_correction():
    assert mark({"significant": {"t_holm": True, "t_bh": True}}) == "*"
    assert mark({"significant": {"t_holm": False, "t_bh": True}}) == "†"
    assert mark({"significant": {"t_holm": False, "t_bh": False}}) == ""
    assert mark(None) == ""


# --- the whole study through the command line ---------------------------------------------------


def study_folder(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "r" / "tiny").glob("study-compare-*")
    return folder


def rows_of(folder: str) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "results.jsonl").read_text().splitlines()]


def hand_count(strategy: str, epochs: int) -> int:
    """Forward-backward passes of ``epochs`` epochs of 3 batches, counted by hand."""
    batches = math.ceil(TRAIN_ROWS / BATCH)
    if strategy == "plain":
        return epochs * batches
    if strategy == "sam":
        return 2 * epochs * batches
    return epochs * (batches + 2)  # MG, beta 2: mirror batches 0 and 2 of each epoch


def pooled_raw(report: dict, test: str) -> list:
    key = "t_test" if test == "t" else "wilcoxon"
    return [
        c[key]["p_value"]
        for model in MODELS
        for strategy in STRATEGIES[1:]
        for c in report["comparisons"][model][strategy].values()
    ]


@pytest.mark.slow
def test_a_comparison_study_end_to_end(tiny, tmp_path, capsys):
    assert main(compare_args(tmp_path, tiny, "--robustness")) == 0
    folder = study_folder(tmp_path)
    assert {p.name for p in folder.iterdir()} >= {
        "study.json", "report.md", "report.json", "table.md", "table.csv", "differences.png",
        "robustness.json", "robustness-VBPR.png", "robustness-LayerGCN.png",
    }  # fmt: skip
    assert (folder / "differences.png").stat().st_size > 0
    study = json.loads((folder / "study.json").read_text())
    assert study["kind"] == "compare" and study["models"] == list(MODELS)
    assert study["strategies"] == list(STRATEGIES) and study["seeds"] == [999, 1000]
    assert study["budget"] == "equal"
    assert set(study["arms"]) == {f"{m}/{s}" for m in MODELS for s in STRATEGIES}
    for name, (run,) in study["arms"].items():
        model, strategy = name.split("/")
        assert Path(run).name.startswith(f"{model}-{strategy}-") and Path(run).is_dir()
        assert study["replicas"][name]["replicas"] == 1
    report = json.loads((folder / "report.json").read_text())

    # the family: every model x non-plain strategy x metric, corrected together
    family = report["family"]["accuracy"]
    assert family["comparisons"] == len(MODELS) * (len(STRATEGIES) - 1) * 16 == 64
    for test in ("t", "wilcoxon"):
        raw = pooled_raw(report, test)
        defined = [p for p in raw if p is not None]
        assert family[test] == len(defined)
        for model in MODELS:
            for strategy in STRATEGIES[1:]:
                for c in report["comparisons"][model][strategy].values():
                    assert c["family"][test] == len(defined)
        # recomputed: correct_family on the raw p-values, and Holm and BH independently
        fresh = copy.deepcopy([report["comparisons"][m][s] for m in MODELS for s in STRATEGIES[1:]])
        stats.correct_family(fresh)
        recomputed = [c for group in fresh for c in group.values()]
        stored = [
            c for m in MODELS for s in STRATEGIES[1:] for c in report["comparisons"][m][s].values()
        ]
        for new, old in zip(recomputed, stored, strict=True):
            for method in ("holm", "bh"):
                assert new[f"p_{test}_{method}"] == old[f"p_{test}_{method}"]
        adjusted_bh = [c[f"p_{test}_bh"] for c in stored if c[f"p_{test}_bh"] is not None]
        np.testing.assert_allclose(adjusted_bh, scipy_stats.false_discovery_control(defined))
        order = np.argsort(defined, kind="stable")
        holm = np.maximum.accumulate(
            np.minimum(1.0, (len(defined) - np.arange(len(defined))) * np.array(defined)[order])
        )
        by_hand = np.empty(len(defined))
        by_hand[order] = holm
        adjusted_holm = [c[f"p_{test}_holm"] for c in stored if c[f"p_{test}_holm"] is not None]
        np.testing.assert_allclose(adjusted_holm, by_hand)
    biggest_part = max(
        sum(c["t_test"]["p_value"] is not None for c in report["comparisons"][m][s].values())
        for m in MODELS
        for s in STRATEGIES[1:]
    )
    assert family["t"] > biggest_part  # the family is the study's, not one comparison's

    # cost: gradient evaluations counted by hand from each combination's metrics.jsonl
    for record in report["per_seed"]:
        for strategy, arm in record["arms"].items():
            mine = [r for r in rows_of(arm["run"]) if r["params"]["seed"] == record["seed"]]
            assert arm["trials"] == len(mine) == 1
            epochs = [
                len((Path(r["folder"]) / "metrics.jsonl").read_text().splitlines()) for r in mine
            ]
            assert arm["epochs"] == sum(epochs)
            assert arm["grad_evals"] == sum(hand_count(strategy, e) for e in epochs)
            assert arm["seconds"] == pytest.approx(sum(r["seconds"] for r in mine))
            epoch_lines = [
                json.loads(line)
                for r in mine
                for line in (Path(r["folder"]) / "metrics.jsonl").read_text().splitlines()
            ]
            assert arm["train_seconds"] == pytest.approx(
                sum(e["train_seconds"] for e in epoch_lines)
            )
    for model in MODELS:
        cost = report["cost"][model]
        totals = {
            s: sum(r["arms"][s]["grad_evals"] for r in report["per_seed"] if r["model"] == model)
            for s in STRATEGIES
        }
        assert {s: cost[s]["grad_evals_total"] for s in STRATEGIES} == totals
        assert cost["sam"]["grad_evals_vs_plain"] == pytest.approx(2.0)  # same epochs (2 each)
        assert cost["mg"]["grad_evals_vs_plain"] == pytest.approx(5 / 3)
    text = (folder / "report.md").read_text()
    assert "## Cost" in text and "gradient evaluations per seed" in text and "Wall time" in text

    # the paper's table: rows per model and strategy, mean ± std over seeds, marks from Holm
    table = (folder / "table.md").read_text()
    header, *body = body_rows(table)
    assert header == ["Model", *TABLE_COLUMNS]
    labels = [f"{m}{suffix}" for m in MODELS for suffix in ("", " + MG", " + SAM")]
    assert [r[0] for r in body] == labels
    for row, (model, strategy) in zip(
        body, [(m, s) for m in MODELS for s in STRATEGIES], strict=True
    ):
        for cell, metric in zip(row[1:], TABLE_METRICS, strict=True):
            values = [
                r["arms"][strategy]["test"][metric]
                for r in report["per_seed"]
                if r["model"] == model
            ]
            c = report["comparisons"][model].get(strategy, {}).get(metric)
            expected = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            assert cell == expected + mark(c)
    assert table in text + "\n" and "= 64 comparisons" in table

    # robustness: every arm, with paired statistics corrected over their own family
    robust_family = report["family"]["robustness"]
    shifted = [s for s in robust.shifts() if s["kind"] != "clean"]
    assert robust_family["comparisons"] == len(MODELS) * 2 * len(shifted) * 2
    result = report["robustness"]["VBPR"]
    assert {r["arm"] for r in result["rows"]} == set(STRATEGIES)
    key = "noise sigma=1.0 (both) recall@5"
    by = {(r["seed"], r["arm"], r["label"]): r["recall@5"] for r in result["rows"]}
    change = {
        (seed, arm): by[(seed, arm, "noise sigma=1.0 (both)")] - by[(seed, arm, "clean")]
        for seed in (999, 1000)
        for arm in STRATEGIES
    }
    for strategy in ("mg", "sam"):
        c = result["comparison"][strategy][key]
        differences = [change[(s, strategy)] - change[(s, "plain")] for s in (999, 1000)]
        assert c["difference"]["mean"] == pytest.approx(statistics.mean(differences), abs=1e-12)
        assert c["family"]["t"] == robust_family["t"]
    assert "change from clean under shift" in text

    # a re-run trains nothing and reproduces the report
    stamps = sorted(p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.pth"))
    results = {f: (Path(f) / "results.jsonl").read_text() for (f,) in study["arms"].values()}
    capsys.readouterr()
    assert main(compare_args(tmp_path, tiny, "--robustness")) == 0
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.pth")) == stamps
    assert {f: (Path(f) / "results.jsonl").read_text() for f in results} == results
    again = json.loads((folder / "report.json").read_text())
    assert (
        again["comparisons"] == report["comparisons"]
        and again["cost"]["VBPR"]["sam"]["grad_evals_total"]
        == report["cost"]["VBPR"]["sam"]["grad_evals_total"]
    )

    # mgrec table --study and mgrec runs read it
    capsys.readouterr()
    out_csv = tmp_path / "t.csv"
    argv = ["table", "--study", folder.name, f"--results_dir={tmp_path / 'r'}", f"--csv={out_csv}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"# Study {folder.name}: VBPR, LayerGCN with plain, mg, sam on tiny" in out
    assert body_rows(out)[1:] == body
    assert [r["row"] for r in csv.DictReader(out_csv.open())] == labels
    assert main(["table", "--study", folder.name, f"--results_dir={tmp_path / 'r'}",
                 "--select", "test"]) == 0  # fmt: skip
    assert "selected by test" in capsys.readouterr().out
    assert main(["runs", f"--results_dir={tmp_path / 'r'}"]) == 0
    listed = capsys.readouterr().out
    assert f"| {folder.name} | VBPR, LayerGCN | tiny | plain, mg, sam | 2 | equal |" in listed


FAST_FLATNESS = (
    "--flatness_settings={draws: 2, batches: 2, rhos: [0.01, 0.05], sharpness_draws: 3, "
    "worst_steps: 2, alphas: [-0.1, 0.0, 0.1], lanczos_iterations: 6, top_k: 2, probes: 3, "
    "max_epochs: 3}"
)


@pytest.mark.slow
def test_flatness_and_robustness_run_for_every_arm(tiny, tmp_path):
    args = compare_args(tmp_path, tiny, "--robustness", "--flatness", FAST_FLATNESS)
    args[args.index(",".join(MODELS))] = "VBPR"
    assert main(args) == 0
    folder = study_folder(tmp_path)
    flat = json.loads((folder / "flatness.json").read_text())
    assert set(flat) == {"VBPR"}
    assert set(flat["VBPR"]) == {
        f"{n} seed {s}" for n in ("plain", "MG", "SAM") for s in (999, 1000)
    }
    for record in flat["VBPR"].values():
        assert {"winner", "converged"} <= set(record) and record["arm"] in STRATEGIES
    report = json.loads((folder / "report.json").read_text())
    link = report["flatness_vs_robustness"]["VBPR"]
    assert len(link["pairs"]) == 6 and {p["arm"] for p in link["pairs"]} == set(STRATEGIES)
    for name in ("flatness-VBPR-winner.png", "flatness-VBPR-converged.png",
                 "flatness-robustness-VBPR.png"):  # fmt: skip
        assert (folder / name).stat().st_size > 0
    text = (folder / "report.md").read_text()
    assert "## Flatness of VBPR's winners" in text and "| SAM seed 1000 | converged |" in text
