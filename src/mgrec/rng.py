"""Random state: seeding, seeded blocks, and capturing every generator for an exact resume.

mgrec draws from four generators: Python's ``random``, NumPy's global one (DualGNN/DRAGON's
neighbour padding, as the reference), torch's default generators (CPU and each CUDA device:
initial weights, edge pruning, dropout) and the training sampler's own ``torch.Generator``
(shuffles and negatives). ``capture``/``restore`` turn the global ones into plain data (lists,
ints, tensors) that a checkpoint loaded with ``weights_only=True`` can hold.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def init_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA), as the reference does per combination."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with Python, NumPy and torch (CPU, and ``device`` if CUDA) seeded to ``seed``;
    the caller's random states are put back afterwards."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        # Only the generators in use: torch.manual_seed also queues every CUDA device's seed,
        # which records a stack trace per call on CPU-only runs.
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def capture() -> dict[str, Any]:
    """Every global generator's state as plain data (see ``restore``)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [
            name,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            position,
            has_gauss,
            cached,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back generator states made by ``capture``."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
