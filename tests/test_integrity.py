"""Files mgrec wrote are verified when read back (issue 19): checkpoints and training states
carry a SHA-256 of their contents; damage is one line naming the file, and nothing is evaluated
or resumed from it; every other load failure says in words what is wrong; a file from elsewhere
loads unverified, with a note; nothing read can run code."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from mgrec import checkpoint
from mgrec.cli import main

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
EXCEPTION_NAMES = ("Error", "Exception", "Traceback")


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1"]  # fmt: skip


def vbpr(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return ["--model", "VBPR", "--dataset", "tiny", f"--data_path={data}", "--not_mg",
            "--epochs=3", "--reg_weight=0.1", *outputs(tmp_path), *extra]  # fmt: skip


def results(tmp_path: Path) -> tuple[Path, dict]:
    (folder,) = (tmp_path / "results" / "tiny").glob("VBPR-plain-tiny-*")
    (row,) = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    return folder, row


def flip_inside_a_tensor(path: Path, count: int = 64) -> str:
    """Invert ``count`` bytes in the middle of the largest tensor record of a torch zip file,
    leaving the archive's structure (headers, table of contents) as it was. Returns the record."""
    with zipfile.ZipFile(path) as archive:
        record = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack(
        "<HH", raw[record.header_offset + 26 : record.header_offset + 30]
    )
    start = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    for i in range(start, start + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return record.filename


# --- the checksum ------------------------------------------------------------------------------


def test_the_checksum_covers_every_tensor_byte_and_value():
    payload = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3), "i": torch.tensor([1, 2])},
               "metrics": {"test": {"recall@5": 0.25}}, "config": {"model": "VBPR", "k": [5, 10]}}  # fmt: skip
    sealed = checkpoint.seal(payload)
    assert sealed["checksum"].startswith("sha256:") and len(sealed["checksum"]) == 7 + 64
    assert checkpoint.content_checksum(sealed) == sealed["checksum"]  # stable
    changes = [
        lambda p: p["state_dict"]["w"].view(-1).__setitem__(3, 3.0000002),  # one ulp-ish
        lambda p: p["state_dict"].__setitem__("i", torch.tensor([1, 2], dtype=torch.int32)),
        lambda p: p["state_dict"].__setitem__("w", p["state_dict"]["w"].reshape(3, 2)),
        lambda p: p["metrics"]["test"].__setitem__("recall@5", 0.2500001),
        lambda p: p["config"].__setitem__("model", "VBPR "),
        lambda p: p["config"]["k"].append(20),
    ]
    for change in changes:
        copy = {
            "state_dict": {k: v.clone() for k, v in sealed["state_dict"].items()},
            "metrics": {"test": dict(sealed["metrics"]["test"])},
            "config": {"model": "VBPR", "k": [5, 10]},
        }
        change(copy)
        assert checkpoint.content_checksum(copy) != sealed["checksum"]


def test_a_checkpoint_with_flipped_tensor_bytes_is_refused(tiny, tmp_path, capsys):
    assert main(vbpr(tmp_path, tiny)) == 0
    _, row = results(tmp_path)
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(Path(row["checkpoint"]).read_bytes())
    flip_inside_a_tensor(damaged)
    # The damage is invisible to torch: the archive opens and the tensors load, with other values.
    assert zipfile.ZipFile(damaged).namelist() == zipfile.ZipFile(row["checkpoint"]).namelist()
    loaded = torch.load(damaged, weights_only=True)
    original = torch.load(row["checkpoint"], weights_only=True)
    assert any(
        not torch.equal(loaded["state_dict"][k], original["state_dict"][k])
        for k in original["state_dict"]
    )
    capsys.readouterr()
    assert main(["--resume", str(damaged), f"--data_path={tiny}", *outputs(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"mgrec: error: {damaged}: is damaged: its contents do not match the checksum written "
        "with it (changed since mgrec saved it); nothing was read from it\n"
    )
    assert captured.out == ""  # nothing evaluated


def test_a_damaged_file_without_a_checksum_is_caught_by_its_archive_crc(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.randn(64, 64)}, plain)
    assert checkpoint.read(plain)["verified"] is False
    record = flip_inside_a_tensor(plain)
    with pytest.raises(checkpoint.DamagedFile, match=f"its record {record} fails its CRC check"):
        checkpoint.read(plain)


def test_a_damaged_training_state_is_not_resumed_from(tiny, tmp_path, caplog):
    args = vbpr(tmp_path, tiny, "--keep_training_state=True")
    assert main(args) == 0
    folder, first = results(tmp_path)
    state = folder / "combo-000" / "training_state.pth"
    intact = state.read_bytes()
    # Unrecorded, with an intact state: the re-run continues from it (finishing at once).
    (folder / "results.jsonl").unlink()
    assert main(args) == 0
    assert "resuming combination 0 from epoch 3" in (folder / "train.log").read_text()
    # Unrecorded, with a damaged state: the re-run trains it again from the start.
    (folder / "results.jsonl").unlink()
    state.write_bytes(intact)
    flip_inside_a_tensor(state)
    (folder / "train.log").unlink()
    assert main(args) == 0
    log = (folder / "train.log").read_text()
    assert (
        f"warning: {state}: is damaged: its contents do not match the checksum written with it "
        "(changed since mgrec saved it); nothing was read from it; combo-000 is trained again "
        "from the start"
    ) in log
    assert "resuming combination" not in log and "epoch 0: loss" in log
    _, again = results(tmp_path)
    assert again["valid"] == first["valid"] and again["test"] == first["test"]


# --- every load error in words ------------------------------------------------------------------


def resume_error(path: Path, tiny: Path, tmp_path: Path, capsys) -> str:
    assert main(["--resume", str(path), f"--data_path={tiny}", *outputs(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mgrec: error: {path}: ")
    assert not any(name in err for name in EXCEPTION_NAMES), err
    return err.strip()


def test_load_errors_say_what_is_wrong_in_words(tiny, tmp_path, capsys, monkeypatch):
    assert main(vbpr(tmp_path, tiny)) == 0
    _, row = results(tmp_path)
    good = Path(row["checkpoint"])
    capsys.readouterr()
    cases = tmp_path / "cases"
    cases.mkdir()
    truncated = cases / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    empty = cases / "empty.pth"
    empty.write_bytes(b"")
    text = cases / "notes.pth"
    text.write_text("these are my notes\n")
    listing = cases / "list.pth"
    torch.save([1, 2, 3], listing)
    mixed = cases / "mixed.pth"
    torch.save({"w": torch.zeros(2), "n": 3}, mixed)
    legacy = cases / "legacy.pth"
    torch.save({"w": torch.zeros(1000)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:1000])
    expected = {
        truncated: "is truncated: its archive ends before its table of contents",
        empty: "is empty (0 bytes): not a checkpoint",
        text: "is not a checkpoint: not a file written by torch.save",
        listing: "is not a checkpoint: it holds a list, not a state_dict",
        mixed: "is not a state_dict: some values are not tensors",
        legacy: "is truncated: it ends in the middle of its data",
        cases / "missing.pth": "checkpoint file not found",
        good.parent: f"is a directory, not a checkpoint file (it holds {good.name})",
    }
    for path, words in expected.items():
        assert words in resume_error(path, tiny, tmp_path, capsys), path

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)  # (root reads any file: the error is simulated)
    assert "cannot be read (permission denied)" in resume_error(good, tiny, tmp_path, capsys)


# --- nothing read runs code ----------------------------------------------------------------------


class Booby:
    """A pickle that runs a command when loaded (it must never be loaded)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_booby_trapped_checkpoint_is_refused_and_runs_nothing(tiny, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    trap = tmp_path / "trap.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "config": Booby(marker)}, trap)
    bare = tmp_path / "bare-trap.pth"
    torch.save({"w": torch.zeros(2), "b": Booby(marker)}, bare)
    for path in (trap, bare):
        err = resume_error(path, tiny, tmp_path, capsys)
        assert "refused: it holds Python objects other than tensors and plain data" in err
        assert "could run code" in err
    assert not marker.exists()


def test_a_booby_trapped_training_state_is_refused_and_runs_nothing(tiny, tmp_path):
    args = vbpr(tmp_path, tiny, "--keep_training_state=True")
    assert main(args) == 0
    folder, _ = results(tmp_path)
    (folder / "results.jsonl").unlink()
    marker = tmp_path / "PWNED"
    torch.save({"progress": Booby(marker)}, folder / "combo-000" / "training_state.pth")
    assert main(args) == 0
    assert not marker.exists()
    log = (folder / "train.log").read_text()
    assert "refused: it holds Python objects other than tensors and plain data" in log
    assert "combo-000 is trained again from the start" in log


# --- files from elsewhere -------------------------------------------------------------------------


def test_a_reference_checkpoint_loads_unverified_with_a_note(tmp_path, capsys):
    reference = GOLDEN / "reference" / "VBPR.pth"
    stored = checkpoint.read(reference)
    assert stored["verified"] is False and stored["config"] is None
    args = ["--resume", str(reference), "--model", "VBPR", "--dataset", "golden11",
            f"--data_path={GOLDEN / 'data'}", *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        f"Note: {reference} carries no checksum (a state_dict from elsewhere, or a checkpoint of "
        "an older mgrec), so it could not be verified." in out
    )
    assert "Stored metrics: none in this file (a bare state_dict), so nothing to compare." in out


def test_the_checksum_format_is_fixed():
    # The checksum is part of the file format: a change to its encoding would make every
    # checkpoint written before unverifiable (reported as damaged). Pinned on a fixed payload
    # covering every kind of value it encodes; each field's change moves it.
    from mgrec.checkpoint import content_checksum

    payload = {
        "state_dict": {"w": torch.tensor([[1.0, -2.0], [0.5, 3.0]]), "i": torch.arange(3)},
        "config": {"model": "VBPR", "epochs": 3, "lr": 0.001, "mg": True, "topk": [5, 10],
                   "clip": None},
        "best_epoch": 2,
        "dtype": torch.float32,
    }  # fmt: skip
    expected = "sha256:7f590fb89d204d4d48b49f5d97f25cdd2f38365c51bcfbed141b2e8997cfa7de"
    assert content_checksum(payload) == expected
    changed = [
        {**payload, "best_epoch": 3},
        {**payload, "config": {**payload["config"], "mg": False}},
        {**payload, "config": {**payload["config"], "lr": 0.002}},
        {**payload, "config": {**payload["config"], "clip": 0}},
        {**payload, "config": {**payload["config"], "topk": [5, 20]}},
        {**payload, "config": {**payload["config"], "model": "BM3"}},
        {**payload, "dtype": torch.float64},
        {**payload, "state_dict": {**payload["state_dict"], "i": torch.arange(4)}},
    ]
    assert len({content_checksum(p) for p in changed} | {expected}) == len(changed) + 1
