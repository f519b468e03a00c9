"""Fault messages are true (issue 19): at every write point of a run, a full disk ends the
command with one line saying what is saved, what is not, and what re-running will do (or, where
the write is optional, a warning saying the same and the run goes on); re-running then does
exactly that and finishes with the results an uninterrupted run gives.

The disk is a real one: a small tmpfs (we run as root) holding the results and checkpoint
folders, filled up right before the write point under test, so the write fails with the
kernel's ENOSPC. Two points a mount cannot target are simulated with ``OSError(28)``: an append
that still fits in a page the file already has (metrics.jsonl after a saved training state),
and train.log.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import can_mount, tiny_dataset
from mgrec import checkpoint, report, trial
from mgrec.cli import main
from mgrec.commands import output as output_module
from mgrec.runs import folder as folder_module
from mgrec.runs import grid as grid_module
from mgrec.runs import logs

NO_SPACE = "(No space left on device)"


pytestmark = pytest.mark.skipif(not can_mount(), reason="needs permission to mount a tmpfs")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A small real file system (4 MB tmpfs) for the run's results and checkpoints."""
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(disk: Path) -> None:
    """Use up every free byte of ``disk`` (a filler file, written until ENOSPC)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for block in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * block):
                    pass
    finally:
        os.close(fd)


def free(disk: Path) -> None:
    (disk / "filler").unlink(missing_ok=True)


def args(data: Path, root: Path, cache: Path, *extra: str) -> list[str]:
    return ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data}", "--not_mg",
            "--epochs=3", "--reg_weight=[0.1,0.001]", f"--results_dir={root / 'results'}",
            f"--checkpoint_dir={root / 'ckpt'}", f"--cache_dir={cache}", "--use_gpu=False",
            "--threads=1", *extra]  # fmt: skip


def run_folder(root: Path) -> Path:
    (found,) = (root / "results" / "tiny").glob("VBPR-plain-tiny-*")
    return found


def rows(root: Path) -> dict[str, dict[str, Any]]:
    path = run_folder(root) / "results.jsonl"
    found = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    return {r["key"]: r for r in found}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The uninterrupted run's results."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = root / "data"
    tiny_dataset(data)
    assert main(args(data, root, root / "cache")) == 0
    return rows(root)


def arm(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    when: Callable[[int, tuple, dict], bool],
    before: Callable[[], None],
    after: Callable[[], None] | None = None,
) -> None:
    """Wrap ``owner.name``: on the call for which ``when(number, args, kwargs)`` holds, call
    ``before`` first (fill the disk) and ``after`` once it returned or failed."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        hit = when(calls["n"], args, kwargs)
        if hit:
            before()
        try:
            return original(*args, **kwargs)
        finally:
            if hit and after is not None:
                after()

    monkeypatch.setattr(owner, name, wrapper)


def first(n: int, args: tuple, kwargs: dict) -> bool:
    return n == 1


def nth(k: int) -> Callable[[int, tuple, dict], bool]:
    return lambda n, args, kwargs: n == k


def is_state(epoch: int | None = None, finished: bool | None = None):
    """A ``seal`` call for a training state (after ``epoch``) of combo-000."""

    def when(n: int, args: tuple, kwargs: dict) -> bool:
        payload = args[0]
        if "progress" not in payload:
            return False
        progress = payload["progress"]
        return (epoch is None or progress["epoch"] == epoch) and (
            finished is None or progress["finished"] == finished
        )

    return when


def is_checkpoint(n: int, args: tuple, kwargs: dict) -> bool:
    return "state_dict" in args[0]


def simulated(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, k: int) -> None:
    """``owner.name`` fails with ENOSPC on its ``k``-th call (no real disk involved)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == k:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


# Each case: how to arm it (monkeypatch, disk), the file named, the message after the file's
# name, what the re-run's log must show, and extra arguments.
NOTHING = (
    "nothing was trained by this command (results recorded earlier are kept), so re-running "
    "the command starts it again"
)
FINISHED_STATE = (
    "combo-000's training state holds its finished training, so re-running the command "
    "writes its checkpoint and records it without training again"
)
CASES: dict[str, dict[str, Any]] = {
    "combos.tsv": dict(
        arm=lambda mp, d: arm(mp, folder_module.RunFolder, "number_for", first, lambda: fill(d)),
        file="combos.tsv",
        message=NOTHING,
        rerun=["=== combo-000 (1/2)", "=== combo-001 (2/2)"],
    ),
    "config.yaml": dict(
        arm=lambda mp, d: arm(mp, grid_module, "run_info", first, lambda: fill(d)),
        file="config.yaml",
        message=NOTHING,
        rerun=["=== combo-000 (1/2)", "=== combo-001 (2/2)"],
    ),
    "combo config.yaml": dict(
        arm=lambda mp, d: arm(mp, trial, "load_state", nth(2), lambda: None, lambda: fill(d)),
        file="combo-001/config.yaml",
        message="combo-001 was not trained by this command; combo-001 has no training state saved, "
        "so re-running the command trains it from the start",
        rerun=["combo-000: already finished, skipped", "=== combo-001", "epoch 0: loss"],
    ),
    "metrics.jsonl": dict(
        arm=lambda mp, d: arm(mp, trial, "_append", nth(4), lambda: fill(d)),
        file="combo-001/metrics.jsonl",
        message="combo-001 stopped in epoch 0; combo-001 has no training state saved, so "
        "re-running the command trains it from the start",
        rerun=["combo-000: already finished, skipped", "epoch 0: loss"],
    ),
    "metrics.jsonl after a saved state (simulated)": dict(
        arm=lambda mp, d: simulated(mp, trial, "_append", 5),
        file="combo-001/metrics.jsonl",
        message="combo-001 stopped in epoch 1; combo-001's training state is saved up to epoch "
        "1, so re-running the command continues it from epoch 1",
        rerun=["combo-000: already finished, skipped", "resuming combination 1 from epoch 1"],
    ),
    "training_state.pth": dict(
        arm=lambda mp, d: arm(mp, checkpoint, "seal", is_state(epoch=2), lambda: fill(d)),
        file="combo-000/training_state.pth",
        warning="warning: could not save the training state {folder}/combo-000/training_state.pth "
        "after epoch 1 (No space left on device); training goes on (if it is interrupted, "
        "combo-000's training state is saved up to epoch 1, so re-running the command continues "
        "it from epoch 1)",
        checkpoint=True,
        message="combo-000 finished training (best epoch {best}), but its checkpoint is not "
        "written and it is not recorded; combo-000's training state is saved up to epoch 1, so "
        "re-running the command continues it from epoch 1",
        rerun=["resuming combination 0 from epoch 1"],
    ),
    "checkpoint": dict(
        arm=lambda mp, d: arm(mp, checkpoint, "seal", is_checkpoint, lambda: fill(d)),
        checkpoint=True,
        message="combo-000 finished training (best epoch {best}), but its checkpoint is not "
        f"written and it is not recorded; {FINISHED_STATE}",
        rerun=["resuming combination 0 from epoch 3"],
    ),
    "checkpoint without training states": dict(
        arm=lambda mp, d: arm(mp, checkpoint, "seal", is_checkpoint, lambda: fill(d)),
        extra=["--save_every=0"],
        checkpoint=True,
        message="combo-000 finished training (best epoch {best}), but its checkpoint is not "
        "written and it is not recorded; combo-000 has no training state saved, so re-running "
        "the command trains it from the start",
        rerun=["=== combo-000 (1/2)", "epoch 0: loss"],
    ),
    "results.jsonl": dict(
        arm=lambda mp, d: arm(mp, folder_module.RunFolder, "record", first, lambda: fill(d)),
        file="results.jsonl",
        message=f"combo-000 is trained and its checkpoint written, but it is not recorded; "
        f"{FINISHED_STATE}",
        rerun=["resuming combination 0 from epoch 3"],
    ),
    "run.json and index.csv": dict(
        arm=lambda mp, d: arm(mp, grid_module, "note_progress", first, lambda: fill(d)),
        file="run.json",
        message="combo-000 is recorded in results.jsonl, but the run's run.json and the results "
        "index (index.csv) are not updated; re-running the command updates them (finished "
        "combinations are not trained again)",
        rerun=["combo-000: already finished, skipped", "=== combo-001"],
    ),
    "curve.png": dict(
        arm=lambda mp, d: arm(mp, report, "plot_curve", first, lambda: fill(d), lambda: free(d)),
        warning="warning: could not draw {folder}/combo-000/curve.png (No space left on device); "
        "combo-000 is recorded and its curve's numbers are in its metrics.jsonl (a re-run does "
        "not draw it again)",
        rerun=["combo-000: already finished, skipped", "combo-001: already finished, skipped"],
    ),
    "summary.md": dict(
        arm=lambda mp, d: arm(mp, report, "summary_markdown", first, lambda: None, lambda: fill(d)),
        file="summary.md",
        message="every finished combination is recorded in results.jsonl, but the summary is not "
        "written; re-running the command writes it (finished combinations are not trained again)",
        rerun=["combo-000: already finished, skipped", "combo-001: already finished, skipped"],
    ),
    "grid.png": dict(
        arm=lambda mp, d: arm(mp, report, "plot_grid", first, lambda: fill(d), lambda: free(d)),
        warning="warning: could not draw {folder}/grid.png (No space left on device); the "
        "results and summary.md are written; re-running the command draws it (finished "
        "combinations are not trained again)",
        rerun=["combo-000: already finished, skipped", "combo-001: already finished, skipped"],
    ),
    "--output": dict(
        arm=lambda mp, d: arm(mp, output_module, "write_output", first, lambda: fill(d)),
        output=True,
        message="the run is finished and recorded in {folder}, but --output is not written; "
        "re-running the command writes it (finished combinations are not trained again)",
        rerun=["combo-000: already finished, skipped", "combo-001: already finished, skipped"],
    ),
}


@pytest.mark.parametrize("point", list(CASES))
def test_a_full_disk_at_each_write_point_says_truly_what_rerunning_does(
    point, disk, reference, tiny, tmp_path, monkeypatch, capsys
):
    case = CASES[point]
    cache = tmp_path / "cache"  # derived data off the small disk: only the run's files on it
    output = disk / "winner.json"
    command = args(tiny, disk, cache, *case.get("extra", []), f"--output={output}")
    with monkeypatch.context() as patched:
        case["arm"](patched, disk)
        code = main(command)
    captured = capsys.readouterr()
    free(disk)
    folder = run_folder(disk)
    fails = "message" in case
    assert code == (1 if fails else 0), captured.err
    assert "Traceback" not in captured.err and "Logging error" not in captured.err
    if fails:
        if case.get("output"):
            path = output
        elif case.get("checkpoint"):
            path = disk / "ckpt" / "tiny" / folder.name / "combo-000.pth"
        else:
            path = folder / case["file"]
        best = reference[next(iter(reference))]["best_epoch"]
        message = case["message"].format(folder=folder, best=best)
        assert captured.err == f"mgrec: error: cannot write {path} {NO_SPACE}: {message}\n"
    else:
        assert captured.err == ""
    if "warning" in case:
        warning = case["warning"].format(folder=folder)
        assert [line for line in captured.out.splitlines() if line == warning] == [warning]
    # What the message promised: re-running finishes, as an uninterrupted run would.
    log = folder / "train.log"
    seen = len(log.read_text()) if log.is_file() else 0
    assert main(command) == 0
    rerun = log.read_text()[seen:]
    for evidence in case["rerun"]:
        assert evidence in rerun, (point, evidence)
    done = rows(disk)
    assert set(done) == set(reference)
    for key, row in reference.items():
        for field in ("best_epoch", "epochs", "valid", "test", "stopped"):
            assert done[key][field] == row[field], (point, field)
        stored = checkpoint.read(Path(done[key]["checkpoint"]))
        assert stored["verified"] and stored["metrics"]["test"] == row["test"]
    assert (folder / "summary.md").is_file() and (folder / "grid.png").is_file()
    assert (disk / "results" / "index.csv").is_file() and (folder / "run.json").is_file()
    assert json.loads(output.read_text())["test"] in [r["test"] for r in reference.values()]
    assert not list(folder.rglob("training_state.pth"))
    curves = {p.parent.name for p in folder.rglob("curve.png")}
    assert curves == ({"combo-001"} if point == "curve.png" else {"combo-000", "combo-001"})


def test_a_log_that_cannot_be_written_is_one_warning_and_the_run_goes_on(
    tiny, tmp_path, monkeypatch, capsys
):
    class Full:
        """A log stream on a full disk."""

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(logs.LogFile, "failed_paths", set())
    monkeypatch.setattr(logs.LogFile, "_open", lambda self: Full())
    assert main(args(tiny, tmp_path, tmp_path / "cache")) == 0
    out = capsys.readouterr().out
    folder = run_folder(tmp_path)
    warning = (
        f"mgrec: warning: cannot write {folder / 'train.log'} {NO_SPACE}: log lines from here on "
        "may be missing from it (the run goes on; its results go to other files)"
    )
    assert [line for line in out.splitlines() if line.startswith("mgrec: warning")] == [warning]
    assert len(rows(tmp_path)) == 2 and (folder / "summary.md").is_file()
