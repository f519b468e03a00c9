"""A run's code identity is the code that computed it: the shared modules plus that model's own
module(s). Adding or editing another model's file leaves finished results current; editing the
model's own file or a shared module retrains them. Exercised on a copy of the package, as a
researcher adding a model to a checkout would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mgrec.models import registry
from mgrec.paths import PACKAGE_DIR
from mgrec.provenance import code_fingerprint, result_files

NEW_MODEL = '''
"""MFBPR: a model added by a researcher."""

from mgrec.models.base import Recommender
from mgrec.models.losses import bpr_logsigmoid


class MFBPR(Recommender):
    name = "MFBPR"
    modalities = "none"

    def calculate_loss(self, batch):
        return bpr_logsigmoid(batch.float(), batch.float())
'''


def test_a_models_files_are_its_module_and_the_model_modules_it_imports():
    own = {p.name for p in registry.source_files("DRAGON")}
    assert own == {"dragon.py", "modality_gcn.py", "losses.py", "ops.py"}
    assert {p.name for p in registry.source_files("VBPR")} == {"vbpr.py", "losses.py", "ops.py"}
    files = result_files("VBPR")
    assert PACKAGE_DIR / "trainer.py" in files and PACKAGE_DIR / "optim" / "mirror.py" in files
    assert PACKAGE_DIR / "models" / "dragon.py" not in files
    assert code_fingerprint("VBPR") != code_fingerprint("DRAGON")


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package to edit, and a runner of its command line."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE_DIR, src / "mgrec", ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(src), "MGREC_HOME": str(home), "OMP_NUM_THREADS": "1"}

    def mgrec(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mgrec", "--model", "VBPR", "--not_mg", "--epochs=1",
             "--reg_weight=[0.1,0.01]", "--use_gpu=False", *args],
            cwd=home, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    return src / "mgrec", mgrec


def states(dry_run_output: str) -> list[str]:
    return [line.split()[1] for line in dry_run_output.splitlines() if "combo-0" in line]


@pytest.mark.slow
def test_adding_a_model_leaves_other_results_current(package_copy):
    package, mgrec = package_copy
    mgrec()  # VBPR's two combinations, trained
    assert states(mgrec("--dry_run")) == ["finished", "finished"]
    (package / "models" / "mfbpr.py").write_text(NEW_MODEL)
    (package / "configs" / "model" / "MFBPR.yaml").write_text("embedding_size: 8\n")
    assert states(mgrec("--dry_run")) == ["finished", "finished"]
    # the new model is a model: listed in --help, and it has its own identity
    assert "MFBPR" in mgrec("--help")
    # editing VBPR's own module (or a module it imports) retrains it, and says why
    with open(package / "models" / "vbpr.py", "a") as handle:
        handle.write("\n# an edit\n")
    plan = mgrec("--dry_run")
    assert states(plan) == ["to", "to"] and "to retrain (other code)" in plan
