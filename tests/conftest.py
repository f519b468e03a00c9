"""Shared fixtures: the golden reference fixtures and small datasets written to temp folders."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mgrec import checkpoint, experiment
from mgrec.config import grid, load_config

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
GOLDEN_DATA = GOLDEN / "data"


@pytest.fixture(scope="session")
def summary() -> dict:
    return json.loads((GOLDEN / "reference" / "summary.json").read_text())


def golden_combo(model: str, summary: dict, **extra) -> dict:
    """The config the golden fixtures were made with: YAML defaults plus summary overrides."""
    overrides = dict(summary["models"][model]["config"])
    if model == "MVGAE":  # the reference's KL weight is MG's beta (one merged key there)
        overrides["kl_weight"] = "mg_beta"
    overrides.update(data_path=str(GOLDEN_DATA), use_gpu=False, **extra)
    return grid(load_config(model, "golden11", mg=True, overrides=overrides))[0]


def golden_experiment(model: str, summary: dict, tmp_path: Path, **extra) -> experiment.Experiment:
    """The composition root's experiment for the golden fixtures' configuration (user graph
    from the fixture folder; derived graphs cached under ``tmp_path``)."""
    return experiment.build(
        golden_combo(model, summary, cache_dir=str(tmp_path / "cache"), **extra)
    )


def build_golden_model(model: str, summary: dict, tmp_path: Path, **extra):
    """A model configured as the golden fixtures were made (DualGNN/DRAGON's neighbour table
    drawn, which is deterministic on this dataset). Returns (model, data, combo)."""
    built = golden_experiment(model, summary, tmp_path, **extra)
    net = built.build_model()
    if net.needs_user_graph:
        net.pre_epoch_processing()
    return net, built.data, built.config


def reference_state(name: str, frozen: bool = True) -> dict[str, torch.Tensor]:
    """The reference's trained state_dict (MMGCN's and MVGAE's with their frozen tensors
    merged in)."""
    state = checkpoint.read(GOLDEN / "reference" / f"{name}.pth")["state_dict"]
    if name in ("MMGCN", "MVGAE") and frozen:
        state.update(checkpoint.read(GOLDEN / "reference" / f"{name}-frozen.pth")["state_dict"])
    return state


def trained(name: str, summary: dict, tmp_path: Path, **extra):
    """The golden model with the reference's trained parameters loaded."""
    model, _, _ = build_golden_model(name, summary, tmp_path, **extra)
    checkpoint.load_strict(model, reference_state(name), name)
    return model


def golden_batch(name: str) -> dict:
    """The reference's batch fixture: ``batch``, ``loss`` and ``grads``."""
    return torch.load(GOLDEN / "reference" / f"{name}-batch.pth", weights_only=True)


def write_inter(
    folder: Path, name: str, rows: list[tuple], header=("userID", "itemID", "x_label")
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(header)).to_csv(folder / f"{name}.inter", sep="\t", index=False)
    return folder


def tiny_dataset(
    root: Path, name: str = "tiny", n_users: int = 30, n_items: int = 60, seed: int = 0
) -> Path:
    """A small valid dataset: every user has 6 train rows, one valid and one test row."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        items = rng.choice(n_items - 1, 8, replace=False)
        if user == 0:
            items[0] = n_items - 1  # the last item id occurs, so n_items is as asked
        rows += [(user, int(i), 0) for i in items[:6]]
        rows += [(user, int(items[6]), 1), (user, int(items[7]), 2)]
    folder = write_inter(root / name, name, rows)
    np.save(folder / "image_feat.npy", rng.random((n_items, 12)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.normal(size=(n_items, 8)).astype(np.float32))
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """data_path holding the dataset 'tiny'."""
    tiny_dataset(tmp_path / "data")
    return tmp_path / "data"


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (a size-limited folder: a full disk on demand)."""
    probe = Path("/tmp") / f"mgrec-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        )
        if done.returncode:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    except OSError:
        return False
    finally:
        probe.rmdir()
