"""The six steps of a preparation, in order: ratings, split, metadata, images, user graph, text.

Each step is a function of the options, the work folder and the results of the steps it needs;
it returns its :class:`~mgrec.prepare.pipeline.Done` (key and summary) and is skipped, its
result reused, when the work folder holds a finished run of it under the same key. Files the
dataset keeps go to ``work.build``; results only later steps need go to ``work.steps``:

* ``interactions.npz`` (ratings): ``users``, ``items`` int64 [rows] (new ids), ``ratings``
  float64 [rows], ``timestamps`` int64 [rows], ``item_names`` S10 [n_items] (asin of each id);
* ``split.npz`` (split): ``users``, ``items``, ``labels`` int64 [rows], in ``.inter`` order;
* ``sentences.json`` (metadata): the sentence of each item, [n_items].
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from mgrec.atomic import atomic_open, atomic_path, write_text
from mgrec.data import user_graph as user_graph_module
from mgrec.errors import UserError
from mgrec.prepare import images as image_file
from mgrec.prepare import metadata as meta_file
from mgrec.prepare import ratings as rating_file
from mgrec.prepare import transforms
from mgrec.prepare.inputs import LineReport, file_fingerprint
from mgrec.prepare.options import Options
from mgrec.prepare.pipeline import Done, Echo, Work, run_step, step_key
from mgrec.prepare.text import TextEncoder, encode_all

USER_MAP, ITEM_MAP = "u_id_mapping.csv", "i_id_mapping.csv"
IMAGE_FEATURES, MISSED_IMAGES = "image_feat.npy", "missed_img_itemIDs.csv"
TEXT_FEATURES, USER_GRAPH = "text_feat.npy", "user_graph_dict.npy"
INTERACTIONS, SPLIT, SENTENCES = "interactions.npz", "split.npz", "sentences.json"


def dataset_files(name: str) -> list[str]:
    """The files of a finished dataset folder (what the steps write into ``work.build``)."""
    return [
        f"{name}.inter", USER_MAP, ITEM_MAP, TEXT_FEATURES, IMAGE_FEATURES, MISSED_IMAGES,
        USER_GRAPH,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- helpers


def _save_table(path: Path, table: pd.DataFrame) -> None:
    """A tab-separated table with a header line, written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


def _decode_ids(names: np.ndarray) -> np.ndarray:
    """Raw byte ids S[n] -> str object [n] (invalid UTF-8 shown with backslash escapes)."""
    return np.array([n.decode("utf-8", errors="backslashreplace") for n in names.tolist()], object)


def load_interactions(work: Work) -> dict[str, np.ndarray]:
    """The arrays of ``steps/interactions.npz`` (see the module's docstring)."""
    with np.load(work.steps / INTERACTIONS, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _checked(done: Done, strict: bool) -> Done:
    """``done``, once its report of unparsable lines passes ``--strict``."""
    LineReport.from_json(done.info["report"]).check_strict(strict)
    return done


# ---------------------------------------------------------------------------------- 1. ratings


def _build_ratings(options: Options, work: Work) -> dict[str, Any]:
    report = LineReport(options.ratings.name)
    raw = rating_file.read_ratings(options.ratings, report, options.progress)
    if len(raw.users) == 0:
        raise UserError(
            f"{options.ratings}: no line could be read as user,item,rating,timestamp; "
            "--ratings takes the ratings CSV (ratings_<Category>.csv)"
        )
    lines, parsed, missing = raw.lines, len(raw.users), raw.missing
    unique = transforms.first_occurrences(raw.users, raw.items, raw.timestamps)
    duplicates = int((~unique).sum())
    raw = raw.take(unique)  # (one copy of the rows at a time: bounded memory)
    core, rounds = transforms.k_core(raw.users, raw.items)
    if not core.any():
        raise UserError(
            f"{options.ratings}: nothing is left after the 5-core filter "
            f"({len(raw.users):,} ratings of {len(raw.user_names):,} users); every user "
            "and item needs at least 5 ratings: use a larger category"
        )
    kept = raw.take(core)
    del raw
    users, user_codes = transforms.first_appearance(kept.users)
    items, item_codes = transforms.first_appearance(kept.items)
    user_names = kept.user_names[user_codes]
    item_names = kept.item_names[item_codes]
    _save_table(
        work.build / USER_MAP,
        pd.DataFrame({"user_id": _decode_ids(user_names), "userID": np.arange(len(user_names))}),
    )
    _save_table(
        work.build / ITEM_MAP,
        pd.DataFrame({"asin": _decode_ids(item_names), "itemID": np.arange(len(item_names))}),
    )
    with atomic_open(work.steps / INTERACTIONS, "wb") as handle:
        np.savez(
            handle, users=users, items=items, ratings=kept.ratings, timestamps=kept.timestamps,
            item_names=item_names,
        )  # fmt: skip
    return {
        "lines": lines, "parsed": parsed, "missing": missing, "duplicates": duplicates,
        "rows": len(users), "rounds": rounds, "users": len(user_names),
        "items": len(item_names), "report": report.to_json(),
    }  # fmt: skip


def _describe_ratings(info: dict[str, Any]) -> list[str]:
    return [
        f"{info['lines']:,} lines read; {info['parsed']:,} ratings parsed, "
        f"dropped: {info['missing']:,} with a missing value, {info['duplicates']:,} "
        "repeating a (user, item, timestamp)",
        *LineReport.from_json(info["report"]).describe(),
        f"5-core ({info['rounds']} rounds): {info['rows']:,} ratings of "
        f"{info['users']:,} users and {info['items']:,} items; ids re-indexed by first "
        "appearance (u_id_mapping.csv, i_id_mapping.csv)",
    ]


def ratings(options: Options, work: Work, echo: Echo) -> Done:
    """1. Read the ratings CSV; drop rows missing a value and repeated (user, item, timestamp)
    rows; 5-core; re-index users and items by first appearance.

    Writes the two id mappings and ``steps/interactions.npz``. Summary keys: ``lines``,
    ``parsed``, ``missing``, ``duplicates``, ``rows``, ``rounds``, ``users``, ``items`` (counts)
    and ``report`` (unparsable lines).
    """
    key = step_key(step="ratings", ratings=file_fingerprint(options.ratings))
    outputs = [work.build / USER_MAP, work.build / ITEM_MAP, work.steps / INTERACTIONS]
    build = partial(_build_ratings, options, work)
    done = run_step(work, "ratings", key, build, _describe_ratings, outputs, echo)
    return _checked(done, options.strict)


# ---------------------------------------------------------------------------------- 2. split


def _build_split(options: Options, work: Work) -> dict[str, Any]:
    rows = load_interactions(work)
    order, labels = transforms.split_rows(rows["users"], options.seed)
    inter = pd.DataFrame(
        {
            "userID": rows["users"][order],
            "itemID": rows["items"][order],
            "rating": rows["ratings"][order],
            "timestamp": rows["timestamps"][order],
            "x_label": labels,
        }
    )
    _save_table(work.build / f"{options.name}.inter", inter)
    with atomic_open(work.steps / SPLIT, "wb") as handle:
        np.savez(
            handle, users=inter["userID"].to_numpy(), items=inter["itemID"].to_numpy(),
            labels=labels,
        )  # fmt: skip
    return {"counts": np.bincount(labels, minlength=3).tolist()}


def _describe_split(options: Options, info: dict[str, Any]) -> list[str]:
    train, valid, test = info["counts"]
    return [
        f"{train:,} train / {valid:,} valid / {test:,} test rows (per user, shuffled with "
        f"seed {options.seed}) -> {options.name}.inter"
    ]


def split(options: Options, work: Work, ratings_done: Done, echo: Echo) -> Done:
    """2. Split each user's ratings into train/valid/test by the reference's rule, after a
    shuffle seeded by ``options.seed``.

    Writes ``<name>.inter`` (grouped by user) and ``steps/split.npz``. Summary: ``counts``
    [train, valid, test] rows.
    """
    key = step_key(step="split", ratings=ratings_done.key, seed=options.seed)
    outputs = [work.build / f"{options.name}.inter", work.steps / SPLIT]
    build = partial(_build_split, options, work)
    return run_step(work, "split", key, build, partial(_describe_split, options), outputs, echo)


# ---------------------------------------------------------------------------------- 3. metadata


def _build_metadata(options: Options, work: Work) -> dict[str, Any]:
    names = _decode_ids(load_interactions(work)["item_names"])
    asins = {asin: item for item, asin in enumerate(names.tolist())}
    report = LineReport(options.meta.name)
    sentences, found, duplicates = meta_file.read_sentences(
        options.meta, asins, report, options.progress
    )
    if not found.any():
        raise UserError(
            f"{options.meta}: none of the {len(asins):,} items of the ratings has a line "
            "in this metadata file; --meta takes meta_<Category>.json.gz of the same "
            "category"
        )
    write_text(work.steps / SENTENCES, json.dumps(sentences))
    return {
        "items": len(asins), "found": int(found.sum()), "duplicates": duplicates,
        "without": np.flatnonzero(~found)[:5].tolist(), "report": report.to_json(),
    }  # fmt: skip


def _describe_metadata(info: dict[str, Any]) -> list[str]:
    missing, repeated = info["items"] - info["found"], info["duplicates"]
    lines = [
        f"found for {info['found']:,} of {info['items']:,} items"
        + (f" (later lines of the same asin ignored: {repeated:,})" if repeated else "")
    ]
    if missing:
        ids = ", ".join(map(str, info["without"])) + (", ..." if missing > 5 else "")
        lines.append(f"{missing:,} items without metadata get an empty sentence (itemID {ids})")
    return lines + LineReport.from_json(info["report"]).describe()


def metadata(options: Options, work: Work, ratings_done: Done, echo: Echo) -> Done:
    """3. Build each item's sentence from the metadata file (title, brand, first category path,
    description).

    Writes ``steps/sentences.json``. Summary: ``items``, ``found``, ``duplicates`` (counts),
    ``without`` (the first five items without metadata) and ``report``.
    """
    key = step_key(step="metadata", ratings=ratings_done.key, meta=file_fingerprint(options.meta))
    build = partial(_build_metadata, options, work)
    outputs = [work.steps / SENTENCES]
    done = run_step(work, "metadata", key, build, _describe_metadata, outputs, echo)
    return _checked(done, options.strict)


# ---------------------------------------------------------------------------------- 4. images


def _build_images(options: Options, work: Work) -> dict[str, Any]:
    names = load_interactions(work)["item_names"]
    item_of = {asin: item for item, asin in enumerate(names.tolist())}
    report = LineReport(options.images.name, unit="record")
    with atomic_path(work.build / IMAGE_FEATURES) as tmp:
        # a memory map on disk: only the dataset's items are ever held, never the file
        features = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(len(names), image_file.IMAGE_DIM)
        )
        found, total, matched = image_file.read_image_features(
            options.images, item_of, features, report, options.progress
        )
        if matched == 0:
            raise UserError(
                f"{options.images}: none of the {len(names):,} items of the ratings has a "
                "record in this file; --images takes image_features_<Category>.b of the "
                "same category"
            )
        missed = np.flatnonzero(~found)
        features[missed] = (total / matched).astype(np.float32)
        features.flush()
        del features  # (closes the map before the rename)
    write_text(work.build / MISSED_IMAGES, "".join(f"{item}\n" for item in missed.tolist()))
    return {
        "items": len(names), "found": int(found.sum()), "records": matched,
        "report": report.to_json(),
    }  # fmt: skip


def _describe_images(info: dict[str, Any]) -> list[str]:
    missing = info["items"] - info["found"]
    return [
        f"{info['found']:,} of {info['items']:,} items have an image record -> "
        f"image_feat.npy [{info['items']:,}, {image_file.IMAGE_DIM}]; {missing:,} filled with "
        "the mean of the found ones (missed_img_itemIDs.csv)",
        *LineReport.from_json(info["report"]).describe(),
    ]


def images(options: Options, work: Work, ratings_done: Done, echo: Echo) -> Done:
    """4. Gather each item's 4096-d image feature, in item order; items without a record get
    the mean of the dataset's found ones.

    Writes ``image_feat.npy`` float32 [n_items, 4096] and ``missed_img_itemIDs.csv`` (one
    itemID a line). Summary: ``items``, ``found``, ``records`` (counts) and ``report``.
    """
    key = step_key(step="images", ratings=ratings_done.key, images=file_fingerprint(options.images))
    outputs = [work.build / IMAGE_FEATURES, work.build / MISSED_IMAGES]
    build = partial(_build_images, options, work)
    done = run_step(work, "images", key, build, _describe_images, outputs, echo)
    return _checked(done, options.strict)


# ---------------------------------------------------------------------------------- 5. user graph


def _build_user_graph(options: Options, work: Work, n_users: int) -> dict[str, Any]:
    with np.load(work.steps / SPLIT, allow_pickle=False) as data:
        train = data["labels"] == 0
        users, items = data["users"][train], data["items"][train]
    graph = user_graph_module.build(users, items, n_users, progress=options.progress)
    with atomic_path(work.build / USER_GRAPH) as tmp:  # (whatever temp file save_reference
        user_graph_module.save_reference(tmp, graph)  # uses, the result gets the usual mode)
    return {"users": n_users, "edges": int(graph.lengths.sum())}


def _describe_user_graph(info: dict[str, Any]) -> list[str]:
    return [
        f"top-{user_graph_module.TOP_NEIGHBOURS} co-interaction neighbours of "
        f"{info['users']:,} users ({info['edges']:,} entries) -> user_graph_dict.npy"
    ]


def user_graph(
    options: Options, work: Work, ratings_done: Done, split_done: Done, echo: Echo
) -> Done:
    """5. Build DualGNN/DRAGON's user graph from the training rows, as ``--build_user_graph``.

    Writes ``user_graph_dict.npy`` (the reference's pickled dict). Summary: ``users``, ``edges``.
    """
    key = step_key(step="user graph", split=split_done.key)
    build = partial(_build_user_graph, options, work, int(ratings_done.info["users"]))
    outputs = [work.build / USER_GRAPH]
    return run_step(work, "user graph", key, build, _describe_user_graph, outputs, echo)


# ---------------------------------------------------------------------------------- 6. text


def _build_text(options: Options, work: Work, encoder: TextEncoder) -> dict[str, Any]:
    sentences = json.loads((work.steps / SENTENCES).read_text(encoding="utf-8"))
    features = encode_all(encoder.load(), sentences, options.progress)
    with atomic_open(work.build / TEXT_FEATURES, "wb") as handle:
        np.save(handle, features)
    return {"shape": list(features.shape)}


def _describe_text(encoder: TextEncoder, info: dict[str, Any]) -> list[str]:
    rows, dim = info["shape"]
    return [f"{rows:,} sentences encoded by {encoder.identity} -> text_feat.npy [{rows:,}, {dim}]"]


def text(
    options: Options, work: Work, metadata_done: Done, encoder: TextEncoder, echo: Echo
) -> Done:
    """6. Encode the sentences (the text model is loaded only here, if the step runs).

    Writes ``text_feat.npy`` float32 [n_items, dim]. Summary: ``shape`` [n_items, dim].
    """
    key = step_key(step="text", metadata=metadata_done.key, encoder=encoder.identity)
    build = partial(_build_text, options, work, encoder)
    describe = partial(_describe_text, encoder)
    return run_step(work, "text", key, build, describe, [work.build / TEXT_FEATURES], echo)


# ---------------------------------------------------------------------------------- all six


def run_all(options: Options, work: Work, encoder: TextEncoder, echo: Echo) -> dict[str, Done]:
    """Run (or reuse) the six steps in order; their results by step name.

    On any failure (Ctrl-C included) the work folder is kept for a re-run if a step finished,
    and removed otherwise.
    """
    work.open()
    try:
        done: dict[str, Done] = {}
        done["ratings"] = ratings(options, work, echo)
        done["split"] = split(options, work, done["ratings"], echo)
        done["metadata"] = metadata(options, work, done["ratings"], echo)
        done["images"] = images(options, work, done["ratings"], echo)
        done["user graph"] = user_graph(options, work, done["ratings"], done["split"], echo)
        done["text"] = text(options, work, done["metadata"], encoder, echo)
    except BaseException:
        work.discard_unless_useful()
        raise
    return done
