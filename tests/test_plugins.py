"""Models from outside mgrec (tests/plugins/tiny_pkg): by import path and as an installed
entry-point plugin, through the command line, with and without MG, in a grid, a study,
``--resume`` and ``mgrec table``; and ``mgrec.train`` from Python. One Ray trial of it is in
tests/test_ray.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mgrec import api
from mgrec.cli import main
from mgrec.models import registry

PLUGINS = Path(__file__).parent / "plugins"
IMPORT_PATH = "tiny_pkg.model:TinyMF"


@pytest.fixture
def plugin_path(monkeypatch):
    """tests/plugins on sys.path, as PYTHONPATH would put it; the registry's caches cleared."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    registry.load.cache_clear()
    yield
    registry.load.cache_clear()
    for name in [m for m in sys.modules if m == "tiny_pkg" or m.startswith("tiny_pkg.")]:
        del sys.modules[name]


@pytest.fixture
def installed(tmp_path, monkeypatch, plugin_path):
    """A distribution 'tiny-pkg' whose entry point in the group mgrec.models names TinyMF, as
    ``pip install`` would leave it in site-packages."""
    site = tmp_path / "site"
    info = site / "tiny_pkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mgrec.models]\nTinyMF = {IMPORT_PATH}\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def args(tmp_path: Path, tiny: Path, model: str, *extra: str) -> list[str]:
    return ["--model", model, "--dataset", "tiny", f"--data_path={tiny}", "--epochs=2",
            f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", *extra]  # fmt: skip


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def run_dirs(tmp_path: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[0]: p for p in (tmp_path / "r" / "tiny").iterdir() if p.is_dir()}


def test_an_outside_model_trains_by_import_path_with_and_without_mg(plugin_path, tiny, tmp_path):
    assert main(args(tmp_path, tiny, IMPORT_PATH, "--alpha2=[0.1,0.2]")) == 0
    assert main(args(tmp_path, tiny, IMPORT_PATH, "--not_mg", "--tiny_init_std=0.05")) == 0
    folders = run_dirs(tmp_path)
    assert set(folders) == {"TinyMF-mg-tiny", "TinyMF-plain-tiny"}
    mg, plain = rows(folders["TinyMF-mg-tiny"]), rows(folders["TinyMF-plain-tiny"])
    # its own grid (reg_weight: two values, from its YAML) times MG's alpha2, trained and scored
    assert sorted((r["params"]["reg_weight"], r["params"]["alpha2"]) for r in mg) == [
        (0.001, 0.1), (0.001, 0.2), (0.01, 0.1), (0.01, 0.2)
    ]  # fmt: skip
    assert len(plain) == 2 and all(r["valid"]["recall@20"] > 0 for r in mg + plain)
    config = (folders["TinyMF-plain-tiny"] / "combo-000" / "config.yaml").read_text()
    assert "tiny_init_std: 0.05" in config and f"model: {IMPORT_PATH}" in config
    # MG changes what it learns (the mirror steps act on the outside model too)
    assert {r["test"]["ndcg@50"] for r in mg} != {r["test"]["ndcg@50"] for r in plain}


def test_an_installed_plugin_is_found_by_its_entry_point(installed, tiny, tmp_path, capsys):
    assert "TinyMF" in registry.names()
    assert registry.find("TinyMF").kind == "plugin"
    assert main(args(tmp_path, tiny, "TinyMF", "--not_mg", "--reg_weight=0.01")) == 0
    (folder,) = run_dirs(tmp_path).values()
    (row,) = rows(folder)
    assert folder.name.startswith("TinyMF-plain-tiny-") and row["valid"]["recall@50"] > 0
    # --resume of its checkpoint rebuilds it from the same name and reproduces its test metrics
    capsys.readouterr()
    assert main(["--resume", row["checkpoint"], *args(tmp_path, tiny, "TinyMF")[2:]]) == 0
    printed = capsys.readouterr().out.splitlines()
    values = [float(v) for v in printed[1].split("\t")]
    assert values == [
        round(row["test"][m], 4) for m in ("recall@5", "precision@5", "map@5", "ndcg@5")
    ]
    # and the paper table lists it after the paper's models
    assert main(["table", "--dataset", "tiny", f"--results_dir={tmp_path / 'r'}"]) == 0
    table = capsys.readouterr().out
    assert "| TinyMF |" in table and table.index("| VBPR |") < table.index("| TinyMF |")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tiny_pkg.nowhere:TinyMF", "cannot import module 'tiny_pkg.nowhere'"),
        ("tiny_pkg.model:Missing", "module 'tiny_pkg.model' has no class 'Missing'"),
        ("tiny_pkg.model:NotAModel", "is not a model: a model subclasses mgrec.models.Recommender"),
        ("tiny_pkg.broken:Anything", "importing module 'tiny_pkg.broken' failed: RuntimeError"),
        ("TinyMFF", "unknown model 'TinyMFF'"),
    ],
)
def test_a_bad_model_is_one_line(plugin_path, tiny, tmp_path, capsys, model, message):
    assert main(args(tmp_path, tiny, model)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_train_from_python_is_what_the_command_line_runs(plugin_path, tiny, tmp_path):
    outcome = api.train(
        model=IMPORT_PATH, dataset="tiny", mg=False, quiet=True, data_path=str(tiny),
        epochs=2, reg_weight=0.01, results_dir=str(tmp_path / "r"),
        checkpoint_dir=str(tmp_path / "c"), use_gpu=False,
    )  # fmt: skip
    assert [r["params"]["reg_weight"] for r in outcome["results"]] == [0.01]
    assert outcome["by_valid"]["valid"]["recall@20"] > 0
    # the command line with the same settings finds it finished: the same run, not a new one
    assert main(args(tmp_path, tiny, IMPORT_PATH, "--not_mg", "--reg_weight=0.01")) == 0
    assert rows(Path(outcome["run_dir"])) == outcome["results"]


def test_a_study_of_an_outside_model(plugin_path, tiny, tmp_path):
    extra = ("--study", "mg", "--seeds=2", "--reg_weight=0.01", "--alpha2=0.2")
    assert main(args(tmp_path, tiny, IMPORT_PATH, *extra)) == 0
    (report,) = (tmp_path / "r" / "tiny").glob("study-mg-*/report.json")
    data = json.loads(report.read_text())
    assert data["model"] == IMPORT_PATH and [r["seed"] for r in data["per_seed"]] == [999, 1000]
