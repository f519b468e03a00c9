"""What produced a result: the code's version and fingerprint, and the software around it.

``code_fingerprint`` hashes the source of every module that can change a trained model's numbers
(models, graphs, trainer, evaluator, metrics, data loading and sampling, the composition root),
so results recorded by other code are retrained rather than reported as current; editing the
report or the CLI does not invalidate them.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from mgrec import __version__
from mgrec.paths import PACKAGE_DIR

# Source files whose changes can change a result (relative to the package).
RESULT_CODE = (
    "models/*.py", "graphs.py", "trainer.py", "evaluator.py", "metrics.py", "experiment.py",
    "trial.py", "rng.py", "data/dataset.py", "data/sampler.py", "data/user_graph.py",
    "data/split.py", "data/synthetic.py",
)  # fmt: skip


@functools.cache
def code_fingerprint() -> str:
    """``<version>+<hash>``: the mgrec version and a hash of the result-changing source files."""
    digest = hashlib.sha1()
    for pattern in RESULT_CODE:
        for path in sorted(PACKAGE_DIR.glob(pattern)):
            digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
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


def run_info(argv: list[str] | None = None) -> dict[str, Any]:
    """The record saved with a run's config: command line, versions, commit, machine."""
    import torch

    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "cwd": str(Path.cwd()),
        "mgrec": __version__,
        "code": code_fingerprint(),
        "git_commit": git_commit(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.node(),
    }
