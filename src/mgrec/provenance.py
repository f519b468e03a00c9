"""What produced a result: the code's version and fingerprint, and the software around it.

``code_fingerprint(model)`` hashes the source a trained model's numbers depend on: the shared
modules (graphs, trainer, strategies, evaluator, metrics, data loading and sampling, the
composition root, the trial) plus that model's own module(s) (``registry.source_files``: its file
and the model modules it imports; for a model from outside mgrec, its own module file). Results
recorded by other code are retrained rather than reported as current; adding or editing another
model's file, the report or the CLI does not invalidate them.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from mgrec.models import registry
from mgrec.paths import PACKAGE_DIR
from mgrec.version import __version__

# Shared source files whose changes can change any model's results (relative to the package).
SHARED_RESULT_CODE = (
    "models/base.py", "graphs.py", "trainer.py", "optim/*.py", "evaluator.py", "metrics.py",
    "experiment.py", "trial.py", "rng.py", "data/dataset.py", "data/sampler.py",
    "data/user_graph.py", "data/split.py", "data/synthetic.py",
)  # fmt: skip


def result_files(model: str) -> list[Path]:
    """The source files ``model``'s results depend on: the shared ones, then its own."""
    shared = [p for pattern in SHARED_RESULT_CODE for p in sorted(PACKAGE_DIR.glob(pattern))]
    own = [p for p in registry.source_files(model) if p not in shared]
    return [*shared, *own]


@functools.cache
def code_fingerprint(model: str) -> str:
    """``<version>+<hash>``: the mgrec version and a hash of the source ``model``'s results
    depend on (``result_files``)."""
    digest = hashlib.sha1()
    for path in result_files(model):
        try:
            name = path.relative_to(PACKAGE_DIR).as_posix()
        except ValueError:  # a model from outside mgrec: its file name, not where it lives
            name = f"external/{path.name}"
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


@functools.cache
def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or None outside a checkout."""
    root = PACKAGE_DIR.parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def run_info(model: str, argv: list[str] | None = None) -> dict[str, Any]:
    """The record saved with a run's config: command line, versions, commit, machine."""
    import torch

    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "cwd": str(Path.cwd()),
        "mgrec": __version__,
        "code": code_fingerprint(model),
        "git_commit": git_commit(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.node(),
    }
