"""A deterministic generator of SYNTHETIC multimodal recommendation data in MMRec's layout.

Planted structure: users and items have latent factors; a user's interactions are drawn
without replacement with probability ~ softmax(sharpness * <p_u, q_i> / sqrt(k) + popularity_i).
Image features are non-negative (like CNN activations): relu of a random projection of the item
factors plus noise; text features are unit-norm (like sentence embeddings): a normalised noisy
projection. So features carry real signal about who likes what, and a multimodal model can
beat a popularity ranking. The data is split by the reference's rule (``split.py``).

It exists so that everything runs without a download; numbers on it say nothing about Amazon data.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mgrec import atomic
from mgrec.data.files import EMBEDDED_NAME
from mgrec.data.split import split_labels


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and noise of a synthetic dataset. The defaults are the embedded dataset."""

    n_users: int = 1000
    n_items: int = 500
    mean_interactions: float = 12.0  # per user; at least 5 each (a 5-core dataset)
    latent_dim: int = 16
    image_dim: int = 256
    text_dim: int = 384
    sharpness: float = 3.0  # how strongly latent affinity drives choices
    popularity_std: float = 1.0
    image_noise: float = 1.0
    text_noise: float = 1.0
    seed: int = 2024


def _interactions(spec: SyntheticSpec, rng: np.random.Generator, factors: tuple) -> tuple:
    user_f, item_f = factors
    popularity = rng.normal(0.0, spec.popularity_std, spec.n_items)
    extra = rng.exponential(max(spec.mean_interactions - 5.0, 1e-9), spec.n_users)
    counts = np.minimum(5 + extra.astype(np.int64), max(5, spec.n_items // 2))
    users, items = [], []
    chunk = max(1, (1 << 24) // spec.n_items)  # bounded memory at any scale
    for start in range(0, spec.n_users, chunk):
        stop = min(start + chunk, spec.n_users)
        logits = spec.sharpness * (user_f[start:stop] @ item_f.T) / np.sqrt(spec.latent_dim)
        logits += popularity
        # Gumbel top-k: sampling without replacement from softmax(logits)
        logits += rng.gumbel(size=logits.shape)
        k = int(counts[start:stop].max())
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(logits, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1), axis=1)
        keep = np.arange(k)[None, :] < counts[start:stop, None]
        users.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        items.append(top[keep])
    return np.concatenate(users), np.concatenate(items)


def _features(spec: SyntheticSpec, rng: np.random.Generator, item_f: np.ndarray) -> tuple:
    k = spec.latent_dim
    image = item_f @ rng.normal(0.0, 1.0 / np.sqrt(k), (k, spec.image_dim))
    image += rng.normal(0.0, spec.image_noise, image.shape)
    image = np.maximum(image, 0.0).astype(np.float32)
    text = item_f @ rng.normal(0.0, 1.0 / np.sqrt(k), (k, spec.text_dim))
    text += rng.normal(0.0, spec.text_noise, text.shape)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image, text.astype(np.float32)


def generate(spec: SyntheticSpec = SyntheticSpec()) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Generate ``(inter, image_feat, text_feat)``; the same spec always gives the same data.

    ``inter`` has the columns userID, itemID, rating, timestamp, x_label, grouped by user.
    """
    rng = np.random.default_rng(spec.seed)
    user_f = rng.normal(size=(spec.n_users, spec.latent_dim))
    item_f = rng.normal(size=(spec.n_items, spec.latent_dim))
    users, items = _interactions(spec, rng, (user_f, item_f))
    image, text = _features(spec, rng, item_f)
    order, labels = split_labels(users, rng)
    n = len(users)
    inter = pd.DataFrame(
        {
            "userID": users[order],
            "itemID": items[order],
            "rating": rng.integers(1, 6, n).astype(np.float64),
            "timestamp": rng.integers(1_200_000_000, 1_400_000_000, n),
            "x_label": labels,
        }
    )
    return inter, image, text


def write_dataset(
    folder: Path, name: str, inter: pd.DataFrame, image: np.ndarray, text: np.ndarray
) -> Path:
    """Write a dataset folder atomically (built beside the target, then renamed into place);
    ``FileExistsError`` if another process created it meanwhile."""
    with atomic.atomic_dir(Path(folder)) as tmp:
        inter.to_csv(tmp / f"{name}.inter", sep="\t", index=False)
        np.save(tmp / "image_feat.npy", image)
        np.save(tmp / "text_feat.npy", text)
    return Path(folder)


def ensure_embedded(data_path: Path) -> Path:
    """Create the embedded dataset under ``data_path`` if it is not there yet; return its folder.

    Safe when several processes start at once on a fresh ``data_path``: they serialise on a lock
    file, and the generation is deterministic, so whoever writes it writes the same files.
    """
    folder = Path(data_path) / EMBEDDED_NAME
    if (folder / f"{EMBEDDED_NAME}.inter").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{EMBEDDED_NAME}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / f"{EMBEDDED_NAME}.inter").is_file():
            atomic.remove_stale_temps(folder.parent)
            write_dataset(folder, EMBEDDED_NAME, *generate())
    return folder
