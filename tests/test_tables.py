"""Tables that name their runs: `mgrec table` never pools runs of other settings or seeds;
`mgrec runs` says what each folder holds and lists studies; a study's table is mean ± std."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from mgrec.cli import main


def train(tmp_path: Path, data: Path, model: str, *extra: str) -> list[str]:
    return ["--model", model, "--dataset", "tiny", f"--data_path={data}", "--not_mg",
            f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", *extra]  # fmt: skip


def table(tmp_path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["table", "--dataset", "tiny", f"--results_dir={tmp_path / 'r'}", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def body(text: str, prefix: str) -> list[list[str]]:
    """The table rows whose model cell starts with ``prefix`` (the no-MG rows of a model unless
    the prefix names MG)."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {prefix}")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    return [r for r in cells if "+ MG" in prefix or "+ MG" not in r[0]]


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]


def test_runs_with_other_settings_are_rows_of_their_own(tiny, tmp_path, capsys):
    assert main(train(tmp_path, tiny, "VBPR", "--epochs=1", "--reg_weight=[0.1,0.01]")) == 0
    assert main(train(tmp_path, tiny, "VBPR", "--epochs=3", "--reg_weight=[0.1,0.01]")) == 0
    code, out, _ = table(tmp_path, capsys, "--models", "VBPR", f"--csv={tmp_path / 't.csv'}")
    assert code == 0
    rows = body(out, "VBPR (")
    assert [r[0] for r in rows] == ["VBPR (epochs=1)", "VBPR (epochs=3)"]  # never pooled
    with open(tmp_path / "t.csv") as handle:
        written = [r for r in csv.DictReader(handle) if r["run"]]
    assert sorted(r["settings"] for r in written) == ["epochs=1", "epochs=3"]
    assert len({r["run"] for r in written}) == 2
    for line in rows:  # each row is its own run's winner, and names it
        folder_name, combo = line[-1].split()
        folder = tmp_path / "r" / "tiny" / folder_name
        winner = next(r for r in rows_of(folder) if f"combo-{r['index']:03d}" == combo)
        assert line[1] == f"{winner['test']['recall@5']:.4f}"
        assert max(round(r["valid"]["recall@5"], 4) for r in rows_of(folder)) == round(
            winner["valid"]["recall@5"], 4
        )
    # a filter selects one setting
    code, out, _ = table(tmp_path, capsys, "--models", "VBPR", "--where", "epochs=3")
    assert code == 0 and [r[0] for r in body(out, "VBPR")] == ["VBPR"]


def test_evaluation_settings_split_rows_too(tiny, tmp_path, capsys):
    common = ("--epochs=1", "--reg_weight=0.1")
    assert main(train(tmp_path, tiny, "VBPR", *common)) == 0
    assert main(train(tmp_path, tiny, "VBPR", *common, "--fresh_eval")) == 0
    code, out, _ = table(tmp_path, capsys, "--models", "VBPR")
    assert code == 0
    assert [r[0] for r in body(out, "VBPR")] == [
        "VBPR (fresh_eval=False)", "VBPR (fresh_eval=True)"
    ]  # fmt: skip


def test_several_seeds_in_one_run_are_refused_unless_one_is_chosen(tiny, tmp_path, capsys):
    assert (
        main(train(tmp_path, tiny, "VBPR", "--epochs=1", "--seed=[1,2]", "--reg_weight=0.1")) == 0
    )
    code, _, err = table(tmp_path, capsys, "--models", "VBPR")
    assert code == 2 and err.count("\n") == 1
    assert "holds runs of 2 seeds (1, 2)" in err and "--seed=S" in err and "--study NAME" in err
    code, out, _ = table(tmp_path, capsys, "--models", "VBPR", "--seed=2")
    (folder,) = (tmp_path / "r" / "tiny").iterdir()
    (seed2,) = [r for r in rows_of(folder) if r["params"]["seed"] == 2]
    assert code == 0 and body(out, "VBPR")[0][1] == f"{seed2['test']['recall@5']:.4f}"


def test_runs_lists_what_each_folder_holds(tiny, tmp_path, capsys):
    assert (
        main(train(tmp_path, tiny, "VBPR", "--epochs=1", "--seed=[1,2,3]", "--reg_weight=0.1")) == 0
    )
    assert main(train(tmp_path, tiny, "VBPR", "--epochs=1", "--seed=4", "--reg_weight=0.1")) == 0
    capsys.readouterr()
    assert main(["runs", f"--results_dir={tmp_path / 'r'}"]) == 0
    listed = capsys.readouterr().out
    # four results across four seeds, although the last command's grid was one combination
    assert "| VBPR | tiny | no MG | 4 (4) | 1/1 |" in listed


@pytest.mark.slow
def test_a_study_is_listed_and_tabulated_as_mean_and_std(tiny, tmp_path, capsys):
    args = train(tmp_path, tiny, "VBPR", "--epochs=2", "--reg_weight=0.1", "--alpha2=0.2")
    args.remove("--not_mg")
    assert main([*args, "--study", "mg", "--seeds=3"]) == 0
    capsys.readouterr()
    assert main(["runs", f"--results_dir={tmp_path / 'r'}"]) == 0
    listed = capsys.readouterr().out
    (study,) = (tmp_path / "r" / "tiny").glob("study-*")
    assert f"| {study.name} | VBPR | tiny | mg, plain | 3 |" in listed
    runs_part, studies_part = listed.split("Studies")
    assert studies_part.count(f"| {study.name} |") == 1
    assert runs_part.count(f"| {study.name} |") == 2  # both arms' run folders are marked
    # a plain table refuses to pool the study's seeds, and says how to choose
    code, _, err = table(tmp_path, capsys)
    assert code == 2 and "--study NAME" in err
    capsys.readouterr()
    assert main(["table", "--study", study.name, f"--results_dir={tmp_path / 'r'}"]) == 0
    out = capsys.readouterr().out
    report = json.loads((study / "report.json").read_text())
    for arm, label in (("plain", "VBPR"), ("mg", "VBPR + MG")):
        values = [r[arm]["recall@5"] for r in report["per_seed"]]
        (line,) = [r for r in body(out, label) if r[0] == label]
        assert line[1] == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
    assert "mean ± std over 3 seeds" in out
