"""Grids on Ray (``--executor ray``) against a real two-node cluster on 127.0.0.1: the same rows
and summary as the local executor, a node lost mid-trial, a killed driver re-run, loopback-only
traffic. Every process started here is stopped by its id (tests/ray_cluster.py), even on failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed")

from ray_cluster import loopback_cluster, non_loopback, sockets_of  # noqa: E402

from conftest import tiny_dataset  # noqa: E402
from mgrec.cli import main  # noqa: E402
from mgrec.paths import PACKAGE_DIR  # noqa: E402
from mgrec.runs import ray as ray_executor  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # real Ray instances and clusters
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]
CHECKOUT = PACKAGE_DIR.parents[1]
COMPARED = ("key", "params", "best_epoch", "epochs", "stopped", "valid", "test", "inputs", "code")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with loopback_cluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1) as handle:
        yield handle
    assert handle.leftovers() == []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tiny_dataset(root)
    return root


@pytest.fixture(autouse=True)
def loopback_driver(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the cluster's nodes
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def grid(out: Path, data: Path, *extra: str, epochs: int = 3) -> list[str]:
    return ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data}", "--not_mg",
            f"--epochs={epochs}", "--stopping_step=1000", "--reg_weight=[0.1,0.01,0.001,0.0001]",
            "--deterministic=True", "--threads=1", "--use_gpu=False", f"--results_dir={out / 'r'}",
            f"--checkpoint_dir={out / 'c'}", f"--cache_dir={out / 'cache'}", *extra]  # fmt: skip


def rows(out: Path) -> dict[str, dict]:
    (path,) = (out / "r" / "tiny").glob("VBPR-plain-tiny-*/results.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len({r["key"] for r in lines}), "a combination was recorded twice"
    return {r["key"]: {k: r[k] for k in COMPARED} for r in lines}


def table(out: Path) -> list[str]:
    (path,) = (out / "r" / "tiny").glob("VBPR-plain-tiny-*/summary.md")
    return [line for line in path.read_text().splitlines() if line.startswith("| ")]


def spawn_driver(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(CHECKOUT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "mgrec", *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, data):
    """The local executor's results for the grids below (the reference for every Ray run)."""
    out = {}
    for epochs in (3, 150):
        folder = tmp_path_factory.mktemp(f"local{epochs}")
        assert main(grid(folder, data, epochs=epochs)) == 0
        out[epochs] = folder
    return out


def test_ray_grid_equals_the_sequential_one(cluster, data, sequential, tmp_path):
    args = grid(tmp_path, data, "--executor=ray", f"--ray_address={cluster.address}")
    assert main(args) == 0
    assert rows(tmp_path) == rows(sequential[3])  # same keys, same metrics (deterministic)
    assert table(tmp_path) == table(sequential[3])  # and the same summary table and winners
    log = next((tmp_path / "r" / "tiny").glob("*/train.log")).read_text()
    assert "[combo-003] epoch 2:" in log and "=== combo-000 (1/4)" in log


def test_a_node_lost_mid_trial_is_retried_and_the_grid_completes(
    cluster, data, sequential, tmp_path
):
    args = grid(tmp_path, data, "--executor=ray", f"--ray_address={cluster.address}", epochs=150)
    driver = spawn_driver(args)
    try:
        states = lambda: list((tmp_path / "r").rglob("training_state.pth"))  # noqa: E731
        wait_for(lambda: len(states()) >= 2)  # both nodes are training a combination
        pids = [driver.pid, *(p for node in cluster.pids.values() for p in node)]
        assert non_loopback(sockets_of(pids)) == []  # the driver and every node: loopback only
        cluster.kill_node(1)
        _, err = driver.communicate(timeout=300)
    finally:
        stop(driver)
        cluster.add_node()  # the next test has two nodes again
    assert driver.returncode == 0, err[-2000:]
    assert rows(tmp_path) == rows(sequential[150])


def test_a_killed_driver_is_resumed_by_running_the_command_again(
    cluster, data, sequential, tmp_path
):
    args = grid(tmp_path, data, "--executor=ray", f"--ray_address={cluster.address}", epochs=150)
    driver = spawn_driver(args)
    try:
        wait_for(lambda: list((tmp_path / "r").rglob("training_state.pth")))
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        stop(driver)
    time.sleep(2.0)  # Ray cancels the dead driver's tasks
    assert main(args) == 0
    log = next((tmp_path / "r" / "tiny").glob("*/train.log")).read_text()
    assert "resuming combination" in log
    assert rows(tmp_path) == rows(sequential[150])


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (the driver and everything its Ray instance started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                members.append(int(entry.name))
    return members


def test_a_local_ray_instance_and_ctrl_c(data, sequential, tmp_path, monkeypatch):
    args = grid(tmp_path, data, "--executor=ray", "--cpus_per_trial=1", epochs=150)
    # As a user's shell: no RAY_AUTH_MODE, so the driver's private instance uses a token (set
    # before Ray is imported, or its GCS refuses the driver).
    monkeypatch.delenv("RAY_AUTH_MODE")
    driver = spawn_driver(args)  # no ray_address: a private instance on this machine
    try:
        wait_for(lambda: list((tmp_path / "r").rglob("training_state.pth")))
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
        assert driver.returncode == 130 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("mgrec: interrupted")
        wait_for(lambda: session_members(driver.pid) == [], timeout=30)  # Ray stopped with it
    finally:
        stop(driver)
    assert main(args) == 0  # the same command continues, and ends as the local executor did
    assert rows(tmp_path) == rows(sequential[150]) and not ray.is_initialized()


def test_without_ray_the_error_says_how_to_install(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(grid(tmp_path, data, "--executor=ray")) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[ray]"' in err and err.count("\n") == 1


def test_a_trial_whose_data_a_worker_cannot_see_fails_in_one_line(tmp_path):
    combo = {"model": "VBPR", "dataset": "tiny", "data_path": str(tmp_path / "nowhere")}
    from mgrec.config import grid as expand
    from mgrec.config import load_config

    combo = expand(load_config("VBPR", "tiny", mg=False, overrides={**combo, "use_gpu": False}))[0]
    result = ray_executor.trial_task(combo, 3, str(tmp_path / "c3"), str(tmp_path / "k3.pth"), 1)
    assert not ray.is_initialized()  # (run outside a worker, it must not start Ray)
    assert set(result) == {"error", "log"}
    assert "dataset folder not found" in result["error"] and "shared storage" in result["error"]


def test_resources_and_concurrency():
    assert ray_executor.resources({"cpus_per_trial": 2, "gpus_per_trial": 0.25}, 1) == (2.0, 0.25)
    assert ray_executor.resources({"use_gpu": True}, cluster_gpus=2) == (1.0, 1.0)
    assert ray_executor.resources({"use_gpu": True}, cluster_gpus=0) == (1.0, 0.0)
    assert ray_executor.concurrency(1, 0.25, 16, 1) == 4  # four trials packed on one GPU
    assert ray_executor.concurrency(2, 0, 16, 0) == 8


PLUGINS = Path(__file__).parent / "plugins"


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("tiny_pkg.model:TinyMF", ["--reg_weight=[0.01,0.001]"]),  # from outside, by import path
        ("SELFCFED_LGN", ["--n_layers=1", "--dropout=0.2", "--reg_weight=0.001"]),  # a new model
    ],
)
def test_models_beyond_the_nine_train_on_ray_as_locally(
    cluster, data, tmp_path, monkeypatch, model, extra
):
    # the driver imports the outside model from tests/plugins; its workers, on other nodes, get
    # that folder on their PYTHONPATH and import it by the same string (never a pickled class)
    monkeypatch.syspath_prepend(str(PLUGINS))
    from mgrec.models import registry

    registry.load.cache_clear()

    def args(out: Path, *more: str) -> list[str]:
        return ["--model", model, "--dataset", "tiny", f"--data_path={data}", "--not_mg",
                "--epochs=2", "--deterministic=True", "--threads=1", "--use_gpu=False",
                f"--results_dir={out / 'r'}", f"--checkpoint_dir={out / 'c'}",
                f"--cache_dir={out / 'cache'}", *extra, *more]  # fmt: skip

    def recorded(out: Path) -> dict[str, dict]:
        (path,) = (out / "r" / "tiny").glob("*/results.jsonl")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return {r["key"]: {k: r[k] for k in COMPARED} for r in lines}

    assert main(args(tmp_path / "local")) == 0
    assert main(args(tmp_path / "ray", "--executor=ray", f"--ray_address={cluster.address}")) == 0
    assert recorded(tmp_path / "ray") == recorded(tmp_path / "local")
    registry.load.cache_clear()


def test_a_comparison_study_with_sam_runs_on_ray_as_locally(cluster, data, tmp_path):
    """``--study compare`` hands every arm's grid to the executor: on Ray (SAM, MG and plain
    trials spread over two nodes) the same per-seed winners and metrics as the local run."""

    def args(out: Path, *more: str) -> list[str]:
        return ["--study", "compare", "--models", "VBPR", "--strategies", "plain,mg,sam",
                "--seeds", "2", "--dataset", "tiny", f"--data_path={data}", "--epochs=2",
                "--train_batch_size=64", "--reg_weight=0.01", "--alpha2=0.2", "--beta=2",
                "--rho=0.05", "--deterministic=True", "--threads=1", "--use_gpu=False",
                f"--results_dir={out / 'r'}", f"--checkpoint_dir={out / 'c'}",
                f"--cache_dir={out / 'cache'}", *more]  # fmt: skip

    def per_seed(out: Path) -> list[dict]:
        (folder,) = (out / "r" / "tiny").glob("study-compare-*")
        report = json.loads((folder / "report.json").read_text())
        return [
            {s: (arm["test"], arm["grad_evals"]) for s, arm in record["arms"].items()}
            for record in report["per_seed"]
        ]

    assert main(args(tmp_path / "local")) == 0
    assert main(args(tmp_path / "ray", "--executor=ray", f"--ray_address={cluster.address}")) == 0
    local, on_ray = per_seed(tmp_path / "local"), per_seed(tmp_path / "ray")
    assert len(local) == 2 and on_ray == local
    assert local[0]["sam"] != local[0]["plain"]  # SAM trained, and differently from plain
