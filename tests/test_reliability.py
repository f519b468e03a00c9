"""Every run trustworthy: the command line means what it says, results know their data and code,
training resumes where it stopped, runs never duplicate each other, nothing in a data or
checkpoint file runs, derived data heals, and faults are one line (issue 9).

Processes started here (second runs, killed runs) are stopped by their id in ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import can_mount, tiny_dataset
from mgrec import atomic, experiment
from mgrec.cli import main
from mgrec.config import grid, load_config
from mgrec.data import user_graph
from mgrec.data.cache import Cache
from mgrec.data.synthetic import ensure_embedded
from mgrec.paths import PACKAGE_DIR

CHECKOUT = PACKAGE_DIR.parents[1]


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1"]  # fmt: skip


def vbpr(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data}", "--not_mg",
            "--epochs=3", "--reg_weight=[0.1,0.001]", *outputs(tmp_path), *extra]  # fmt: skip


def run_dir(tmp_path: Path, pattern: str = "VBPR-plain-tiny-*") -> Path:
    (folder,) = (tmp_path / "results" / "tiny").glob(pattern)
    return folder


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def spawn(args: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(CHECKOUT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "mgrec", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def stop(process: subprocess.Popen[str]) -> None:
    """Stop a process started here, by its id, whatever state it is in."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=60)


# --- 1. the command line means what it says ---------------------------------------------------


def test_seed_sets_the_config_key_and_a_grid(tiny, tmp_path):
    assert main(vbpr(tmp_path, tiny, "--seed=5", "--reg_weight=0.1")) == 0
    folder = run_dir(tmp_path)
    saved = load_config("VBPR", "tiny", config_files=[folder / "config.yaml"])
    assert saved["seed"] == 5 and [r["params"]["seed"] for r in rows(folder)] == [5]
    assert "--seed=5" in saved_config(folder)["run_info"]["command"]
    assert main(vbpr(tmp_path, tiny, "--seed=[5,6]", "--reg_weight=0.1")) == 0
    assert sorted(r["params"]["seed"] for r in rows(folder)) == [5, 6]  # the grid grew by one


def saved_config(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())


def test_saved_config_reruns_the_same_model_dataset_and_mg_setting(tiny, tmp_path, capsys):
    assert main(vbpr(tmp_path, tiny)) == 0
    folder = run_dir(tmp_path)
    info = saved_config(folder)["run_info"]
    assert {"command", "mgrec", "code", "torch", "python", "git_commit"} <= set(info)
    capsys.readouterr()
    again = ["--config", str(folder / "config.yaml"), *outputs(tmp_path)]
    assert main(again) == 0
    assert (
        "VBPR on tiny, without Mirror Gradient (--not_mg): 2 combination(s)"
        in capsys.readouterr().out
    )
    assert (folder / "train.log").read_text().count("already finished, skipped") == 2


def test_output_is_checked_before_training(tiny, tmp_path, capsys):
    for bad in ("/proc/mgrec-out.json", str(tmp_path / "no" / "such" / "out.json")):
        assert main(vbpr(tmp_path, tiny, f"--output={bad}")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--output" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_paths_on_the_command_line_are_taken_from_the_working_directory(tmp_path, monkeypatch):
    tiny_dataset(tmp_path / "here")
    monkeypatch.chdir(tmp_path)
    args = ["--model", "VBPR", "--dataset", "tiny", "--data_path=here", "--not_mg", "--epochs=1",
            "--reg_weight=0.1", "--results_dir=out", "--checkpoint_dir=ck", "--cache_dir=c", "--use_gpu=False"]  # fmt: skip
    assert main(args) == 0
    assert list((tmp_path / "out" / "tiny").glob("VBPR-plain-tiny-*/summary.md"))


def test_ignored_settings_are_warned_about(tiny, tmp_path, capsys):
    assert main(vbpr(tmp_path, tiny, "--alpha2=0.3", "--use_gpu=True")) == 0
    err = capsys.readouterr().err
    assert "--not_mg: alpha2 given but ignored" in err
    if not torch.cuda.is_available():
        assert "use_gpu is set but no CUDA GPU is visible" in err


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../tiny", "a/b"])
def test_dataset_must_be_a_folder_name(name, tiny, tmp_path, capsys):
    assert (
        main(["--model", "VBPR", "--dataset", name, f"--data_path={tiny}", *outputs(tmp_path)]) == 2
    )
    assert "a dataset name may hold only" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


# --- 2. results know the data and code they came from -----------------------------------------


def test_changed_features_retrain_and_a_grown_grid_trains_only_the_new_point(tiny, tmp_path):
    assert main(vbpr(tmp_path, tiny)) == 0
    folder = run_dir(tmp_path)
    before = {r["key"]: r for r in rows(folder)}
    assert all(set(r["inputs"]) == {"inter", "v", "t"} and r["code"] for r in before.values())
    # Same shape, other values, written in place: the recorded results no longer stand.
    features = np.load(tiny / "tiny" / "image_feat.npy")
    np.save(tiny / "tiny" / "image_feat.npy", features[::-1].copy())
    assert main(vbpr(tmp_path, tiny)) == 0
    log = (folder / "train.log").read_text()
    assert log.count("retraining: its data changed since it was trained (image_feat.npy)") == 2
    after = {r["key"]: r for r in rows(folder)}
    assert len(rows(folder)) == 2 and set(after) == set(before)  # one line per combination
    assert all(after[k]["inputs"]["v"] != before[k]["inputs"]["v"] for k in after)
    # A grid that grows keeps its folder and trains only its new point.
    assert main(vbpr(tmp_path, tiny, "--reg_weight=[0.1,0.001,0.5]")) == 0
    assert run_dir(tmp_path) == folder and len(rows(folder)) == 3
    assert sorted(r["index"] for r in rows(folder)) == [0, 1, 2]


# --- 3. training resumes where it stopped -----------------------------------------------------


def resumable(tmp_path: Path, data: Path) -> list[str]:
    return ["--model", "FREEDOM", "--dataset", "tiny", f"--data_path={data}", "--epochs=40",
            "--stopping_step=100", "--dropout=0.5", "--reg_weight=0.001", "--alpha2=0.2",
            *outputs(tmp_path)]  # fmt: skip


@pytest.mark.slow  # a fault drill: processes killed, disks filled
def test_a_killed_combination_resumes_from_its_last_epoch_with_identical_results(tiny, tmp_path):
    reference = tmp_path / "uninterrupted"
    assert main(resumable(reference, tiny)) == 0
    expected = rows(run_dir(reference, "FREEDOM-mg-tiny-*"))[0]
    process = spawn(resumable(tmp_path, tiny))
    try:
        metrics = None
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            found = list(
                (tmp_path / "results").glob("tiny/FREEDOM-mg-tiny-*/combo-000/metrics.jsonl")
            )
            if found and len(found[0].read_text().splitlines()) >= 8:
                metrics = found[0]
                break
            time.sleep(0.01)
        assert metrics is not None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        stop(process)
    folder = metrics.parents[1]
    assert not (folder / "results.jsonl").exists()
    state = torch.load(folder / "combo-000" / "training_state.pth", weights_only=True)
    saved_epoch = state["progress"]["epoch"]
    assert 7 <= saved_epoch < 40  # killed after 8 epochs were logged (the 8th maybe unsaved)
    assert main(resumable(tmp_path, tiny)) == 0
    assert f"resuming combination 0 from epoch {saved_epoch}" in (folder / "train.log").read_text()
    (row,) = rows(folder)
    for key in ("best_epoch", "epochs", "valid", "test", "stopped"):
        assert row[key] == expected[key], key  # bit-identical to the uninterrupted run
    lines = [
        json.loads(x) for x in (folder / "combo-000" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [x["epoch"] for x in lines] == list(range(40))  # appended, never duplicated
    assert not (folder / "combo-000" / "training_state.pth").exists()  # removed once finished


@pytest.mark.slow  # a fault drill: processes killed, disks filled
def test_sigterm_is_handled_like_ctrl_c(tiny, tmp_path):
    process = spawn(resumable(tmp_path, tiny))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(
            (tmp_path / "results").rglob("training_state.pth")
        ):
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 143 and "Traceback" not in err
    assert (
        err.startswith("mgrec: terminated; finished combinations are kept") and err.count("\n") == 1
    )


# --- 4. deterministic: bit-identical reruns at any thread count --------------------------------


def train_once(combo: dict) -> tuple[dict, dict, list[torch.Tensor]]:
    """One combination trained in this process through the composition root."""
    from mgrec.trainer import Trainer

    built = experiment.build(combo)
    model = built.build_model()
    built.batches.seed(combo["seed"])
    fit = Trainer(model, combo).fit(
        built.batches,
        lambda: built.evaluate(model, "valid"),
        lambda: built.evaluate(model, "test"),
    )
    return fit.best_valid, fit.test_at_best, [p.detach().clone() for p in model.parameters()]


def test_deterministic_runs_are_bit_identical_with_two_threads(tiny, tmp_path):
    threads = torch.get_num_threads()
    overrides = {"data_path": str(tiny), "cache_dir": str(tmp_path / "cache"), "use_gpu": False,
                 "deterministic": True, "threads": 2, "epochs": 2, "learning_rate": 0.01,
                 "reg_weight": 0.01}  # fmt: skip
    combo = grid(load_config("DRAGON", "tiny", mg=True, overrides=overrides))[0]
    try:
        first, second = train_once(combo), train_once(combo)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert first[0] == second[0] and first[1] == second[1]
    assert all(torch.equal(a, b) for a, b in zip(first[2], second[2], strict=True))


# --- 5. one process per combination at a time ---------------------------------------------------


@pytest.mark.slow  # a fault drill: processes killed, disks filled
def test_two_identical_commands_record_every_combination_once(tmp_path):
    data = tmp_path / "data"
    tiny_dataset(data)
    args = ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data}", "--not_mg", "--epochs=15",
            "--stopping_step=100", "--reg_weight=[0.1,0.01,0.001,0.0001]", *outputs(tmp_path)]  # fmt: skip
    first, second = spawn(args), spawn(args)
    try:
        outs = [p.communicate(timeout=300) for p in (first, second)]
    finally:
        stop(first)
        stop(second)
    assert first.returncode == second.returncode == 0, [o[1][-500:] for o in outs]
    folder = run_dir(tmp_path)
    recorded = rows(folder)
    assert len(recorded) == 4 and len({r["key"] for r in recorded}) == 4
    for row in recorded:  # each combination's metrics: one writer, 15 epochs in order
        lines = (Path(row["folder"]) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == list(range(15))
    for out, _ in outs:  # both commands report the whole grid
        assert "VBPR on tiny, without Mirror Gradient (--not_mg): 4 combination(s)" in out


@pytest.mark.slow  # a fault drill: processes killed, disks filled
def test_first_use_of_the_embedded_dataset_is_race_safe(tmp_path):
    code = "import sys; from pathlib import Path; from mgrec.data.synthetic import ensure_embedded; ensure_embedded(Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT / "src")}
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    try:
        errors = [p.communicate(timeout=120)[1] for p in processes]
    finally:
        for process in processes:
            stop(process)
    assert all(p.returncode == 0 for p in processes), errors
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [
        "image_feat.npy", "synthetic.inter", "text_feat.npy",
    ]  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- 6. nothing in a data or checkpoint file runs ----------------------------------------------


class Booby:
    """A pickle that runs a command when loaded (it must never be loaded)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(folder: Path, marker: Path, name: str = "user_graph_dict.npy") -> Path:
    path = folder / name
    np.save(path, np.array({0: Booby(marker)}, dtype=object), allow_pickle=True)
    return path


def test_a_booby_trapped_user_graph_is_refused_and_never_runs(tiny, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    plant(tiny / "tiny", marker)
    args = ["--model", "DualGNN", "--dataset", "tiny", f"--data_path={tiny}", "--not_mg", "--epochs=1",
            "--learning_rate=0.001", "--reg_weight=0.001", *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refused: the pickle asks for posix.system" in err and err.count("\n") == 1
    assert not marker.exists()


def test_a_crafted_checkpoint_cannot_point_resume_at_a_booby_trap(tiny, tmp_path, capsys):
    args = ["--model", "DualGNN", "--dataset", "tiny", f"--data_path={tiny}", "--not_mg", "--epochs=1",
            "--learning_rate=0.001", "--reg_weight=0.001", "--fresh_eval=True", *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 0
    (row,) = rows(run_dir(tmp_path, "DualGNN-plain-tiny-*"))
    evil = tmp_path / "evil"
    tiny_dataset(evil)
    marker = tmp_path / "PWNED"
    plant(evil / "tiny", marker, "trap.npy")
    stored = torch.load(row["checkpoint"], weights_only=True)
    stored["config"].update(
        data_path=str(evil), user_graph_dict_file="trap.npy", cache_dir=str(evil)
    )
    crafted = tmp_path / "crafted.pth"
    torch.save(stored, crafted)  # its checksum no longer matches: refused as damaged
    assert main(["--resume", str(crafted), f"--data_path={tiny}", *outputs(tmp_path)]) == 2
    assert "is damaged: its contents do not match the checksum" in capsys.readouterr().err
    del stored["checksum"]  # a crafted file without one loads unverified: still only safe
    torch.save(stored, crafted)
    output = tmp_path / "resumed.json"
    resume = [
        "--resume",
        str(crafted),
        f"--data_path={tiny}",
        f"--output={output}",
        *outputs(tmp_path),
    ]
    assert main(resume) == 0
    assert not marker.exists()
    written = json.loads(output.read_text())  # evaluated on the named data, not the checkpoint's
    assert written["valid"] == row["valid"] and written["test"] == row["test"]


def test_a_data_file_linked_from_outside_is_named_in_the_log(tiny, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(tiny / "tiny" / "image_feat.npy", outside / "image_feat.npy")
    (tiny / "tiny" / "image_feat.npy").symlink_to(outside / "image_feat.npy")
    assert main(vbpr(tmp_path, tiny, "--reg_weight=0.1")) == 0
    log = (run_dir(tmp_path) / "train.log").read_text()
    assert (
        f"image_feat.npy is a link to {outside / 'image_feat.npy'}, outside the dataset folder"
        in log
    )


# --- 7. derived data that heals -------------------------------------------------------------------


def freedom_combo(data: Path, cache: Path) -> dict:
    overrides = {"data_path": str(data), "cache_dir": str(cache), "use_gpu": False, "knn_k": 5}
    return grid(load_config("FREEDOM", "tiny", mg=True, overrides=overrides))[0]


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bit-flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if how == "wrong shapes":
            arrays["values"] = arrays["values"][:-3]
        else:  # indices out of range: would crash building a sparse tensor
            arrays["indices"][1, 0] = 10**9
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)


@pytest.mark.parametrize(
    "how", ["truncated", "empty", "bit-flipped", "wrong shapes", "out of range"]
)
def test_a_damaged_cache_entry_is_rebuilt(how, tiny, tmp_path, caplog):
    combo = freedom_combo(tiny, tmp_path / "cache")
    clean = experiment.build(combo).model_data.knn_graph().to_dense()
    (entry,) = (tmp_path / "cache").glob("item-knn-*.npz")
    damage(entry, how)
    with caplog.at_level("INFO", logger="mgrec"):
        healed = experiment.build(combo).model_data.knn_graph().to_dense()
    assert torch.equal(healed, clean)
    assert "rebuilding it" in caplog.text
    with caplog.at_level("INFO", logger="mgrec"):
        caplog.clear()
        experiment.build(combo)  # and it was stored again, sound
    assert "rebuilding" not in caplog.text


def damage_user_graph(path: Path, how: str) -> None:
    """Sound npz structure, unsound graph: what ``user_graph.check_arrays`` must catch."""
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    if how == "neighbour out of range":
        arrays["neighbours"][0, 0] = 10**6
    elif how == "wrong shapes":
        arrays["weights"] = arrays["weights"][:, :-1]
    elif how == "lengths beyond the table":
        arrays["lengths"][0] = arrays["neighbours"].shape[1] + 1
    else:  # non-finite weights
        arrays["weights"][0, 0] = np.nan
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize(
    "how",
    ["truncated", "empty", "bit-flipped", "neighbour out of range", "wrong shapes",
     "lengths beyond the table", "non-finite weights"],
)  # fmt: skip
def test_a_damaged_user_graph_cache_entry_is_rebuilt(how, tiny, tmp_path, caplog):
    cache = Cache(tmp_path / "cache")
    data = experiment.load_data({**freedom_combo(tiny, tmp_path / "cache"), "model": "DualGNN"})
    graph, _ = user_graph.for_dataset(data, "user_graph_dict.npy", cache, progress=False)
    (entry,) = (tmp_path / "cache").glob("user-graph-*.npz")
    if how in ("truncated", "empty", "bit-flipped"):
        damage(entry, how)
    else:
        damage_user_graph(entry, how)
    with caplog.at_level("INFO", logger="mgrec"):
        again, _ = user_graph.for_dataset(data, "user_graph_dict.npy", cache, progress=False)
    assert "rebuilding it" in caplog.text
    for name, array in graph.arrays().items():
        assert np.array_equal(again.arrays()[name], array), name
    with caplog.at_level("INFO", logger="mgrec"):
        caplog.clear()
        user_graph.for_dataset(data, "user_graph_dict.npy", cache, progress=False)
    assert "rebuilding" not in caplog.text  # and it was stored again, sound


def test_a_cache_that_cannot_be_written_is_a_warning(tiny, tmp_path, caplog):
    combo = freedom_combo(tiny, Path("/proc/mgrec-cache"))
    with caplog.at_level("WARNING", logger="mgrec"):
        built = experiment.build(combo)
    assert "could not store the cache entry" in caplog.text
    # the graph is built all the same: the one a writable cache holds
    cached = experiment.build(freedom_combo(tiny, tmp_path / "cache")).model_data.knn_graph()
    assert torch.equal(built.model_data.knn_graph().to_dense(), cached.to_dense())
    assert cached.to_dense().count_nonzero() > 0


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".item-knn-0123.npz.{dead.pid}.x1y2z3.tmp"
    stale.write_bytes(b"half")
    live = tmp_path / f".item-knn-0123.npz.{os.getpid()}.a1b2c3.tmp"
    live.write_bytes(b"being written")
    Cache(tmp_path)
    assert not stale.exists() and live.exists()


# --- 8. output faults are one line ---------------------------------------------------------------


def test_a_full_disk_is_one_line_and_loses_no_finished_combination(
    tiny, tmp_path, monkeypatch, capsys
):
    from mgrec import trial

    calls = {"n": 0}
    append = trial._append

    def full_after_first_combination(path, record):
        calls["n"] += 1
        if calls["n"] > 3:  # the second combination's first epoch
            raise OSError(28, "No space left on device", str(path))
        append(path, record)

    monkeypatch.setattr(trial, "_append", full_after_first_combination)
    assert main(vbpr(tmp_path, tiny)) == 1
    err = capsys.readouterr().err
    assert err == (
        f"mgrec: error: cannot write {run_dir(tmp_path) / 'combo-001' / 'metrics.jsonl'} (No "
        "space left on device): combo-001 stopped in epoch 0; combo-001 has no training state "
        "saved, so re-running the command trains it from the start\n"
    )
    assert len(rows(run_dir(tmp_path))) == 1  # the finished combination is recorded
    assert err.strip() in (run_dir(tmp_path) / "train.log").read_text()
    monkeypatch.setattr(trial, "_append", append)
    assert main(vbpr(tmp_path, tiny)) == 0  # space again: only the second one trains
    assert len(rows(run_dir(tmp_path))) == 2


@pytest.mark.skipif(not can_mount(), reason="needs permission to mount a tmpfs")
@pytest.mark.slow  # a fault drill: processes killed, disks filled
def test_a_really_full_disk_is_one_line(tiny, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20k", "tmpfs", str(small)], check=True)
    try:
        args = vbpr(tmp_path, tiny, f"--checkpoint_dir={small}")
        process = spawn(args)
        try:
            _, err = process.communicate(timeout=300)
        finally:
            stop(process)
        assert process.returncode != 0 and "Traceback" not in err and "Logging error" not in err
        assert err.count("\n") == 1 and "(No space left on device)" in err
        # The combination whose checkpoint could not be written kept its training state, and
        # the message says so truly.
        assert "combo-000 finished training (best epoch " in err
        assert (
            "), but its checkpoint is not written and it is not recorded; combo-000's training "
            "state holds its finished training, so re-running the command writes its checkpoint "
            "and records it without training again\n"
        ) in err
        assert list(run_dir(tmp_path).rglob("training_state.pth"))
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert main(vbpr(tmp_path, tiny)) == 0
    assert "resuming combination 0 from epoch 3" in (run_dir(tmp_path) / "train.log").read_text()


def test_a_failed_plot_never_loses_a_finished_combination(tiny, tmp_path, monkeypatch, capsys):
    from mgrec import report

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "plot_curve", broken)
    assert main(vbpr(tmp_path, tiny)) == 0
    assert len(rows(run_dir(tmp_path))) == 2
    assert "could not draw" in (run_dir(tmp_path) / "train.log").read_text()


def test_output_with_no_winner_fails_and_removes_the_stale_file(
    tiny, tmp_path, monkeypatch, capsys
):
    from mgrec.trainer import Trainer

    monkeypatch.setattr(Trainer, "train_epoch", lambda self, batches: float("nan"))
    stale = tmp_path / "out.json"
    stale.write_text('{"valid": {}, "test": {}}')
    assert main(vbpr(tmp_path, tiny, f"--output={stale}")) == 2
    err = capsys.readouterr().err
    assert (
        "no combination has a validation result" in err
        and "older file of that name was removed" in err
    )
    assert not stale.exists()
    assert "no combination has a validation result" in (run_dir(tmp_path) / "train.log").read_text()


# --- 9. bad data, clearly -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: (f / "image_feat.npy").write_bytes(b""), "truncated or corrupt"),
        (
            lambda f: (f / "image_feat.npy").write_bytes((f / "image_feat.npy").read_bytes()[:200]),
            "truncated or corrupt",
        ),
        (
            lambda f: ((f / "image_feat.npy").unlink(), (f / "image_feat.npy").mkdir()),
            "exists but is not a file",
        ),
        (
            lambda f: np.save(f / "text_feat.npy", np.array([{"a": 1}] * 60, dtype=object)),
            "holds Python objects",
        ),
    ],
)
def test_bad_feature_files_say_what_is_wrong(make, message, tiny, tmp_path, capsys):
    make(tiny / "tiny")
    assert main(vbpr(tmp_path, tiny)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_odd_interaction_files_are_counted_in_the_log(tmp_path):
    rows_ = [
        (0, 1, 0),
        (0, 1, 0),
        (0, 2, 0),
        (1, 2, 0),
        (1, 3, 1),
        (0, 3, 1),
        (2, 4, 2),
        (30_000, 5, 0),
    ]
    rows_ += [(u, (u + j) % 10, 0) for u in range(4, 40) for j in range(6)]
    rows_ += [(u, (u + 7) % 10, 2) for u in range(4, 40)]
    from conftest import write_inter

    folder = write_inter(tmp_path / "data" / "odd", "odd", rows_)
    np.save(folder / "image_feat.npy", np.random.default_rng(0).random((10, 4)).astype(np.float32))
    args = ["--model", "VBPR", "--dataset", "odd", f"--data_path={tmp_path / 'data'}", "--not_mg",
            "--epochs=1", "--reg_weight=0.1", "--topk=[5]", "--valid_metric=Recall@5", *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 0
    (folder,) = (tmp_path / "results" / "odd").glob("VBPR-*")
    log = (folder / "train.log").read_text()
    assert "odd.inter: 1 rows repeat a (user, item) pair of their split" in log
    assert "user ids run to 30000 but only 40 distinct ids occur" in log
    assert "1 test rows of 1 users without training rows dropped" in log


def test_atomic_writes_leave_the_target_alone_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as handle:
        handle.write("new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == oct(
        0o666 & ~_umask()
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_embedded_dataset_helper_writes_once(tmp_path):
    first = ensure_embedded(tmp_path)
    stamp = (first / "synthetic.inter").stat().st_mtime_ns
    assert (
        ensure_embedded(tmp_path) == first
        and (first / "synthetic.inter").stat().st_mtime_ns == stamp
    )


def test_a_folder_that_cannot_be_written_is_one_line(tiny, tmp_path, capsys):
    assert main(vbpr(tmp_path, tiny, "--results_dir=/proc/mgrec-results")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/proc/mgrec-results" in err and "Traceback" not in err
