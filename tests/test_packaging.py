"""A built wheel works on its own: installed (not editable) and run from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgrec.paths import PACKAGE_DIR

CHECKOUT = PACKAGE_DIR.parents[1]
pytestmark = pytest.mark.slow  # builds a wheel and installs it


def test_wheel_trains_vbpr_from_another_directory(tmp_path):
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", str(CHECKOUT), "--no-deps", "--no-build-isolation",
             "-q", "-w", str(wheels)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("mgrec-*.whl")
    site = tmp_path / "site"
    install = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "-q",
        "--target",
        str(site),
        str(wheel),
    ]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MGREC_HOME"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    def mgrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(site / "bin" / "mgrec"), *args], cwd=work, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import mgrec; print(mgrec.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site)  # the wheel's package, not the checkout's
    unknown = mgrec("--model", "Nope")
    assert unknown.returncode == 2 and "choose one of: VBPR, MMGCN, GRCN, DualGNN" in unknown.stderr
    done = mgrec("--model", "VBPR", "--epochs=1", "--use_gpu=False")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "# VBPR on synthetic, with Mirror Gradient: 21 combination(s)" in done.stdout
    # No source tree: the embedded dataset, results and checkpoints go under the working folder.
    assert (work / "data" / "synthetic" / "synthetic.inter").is_file()
    (run,) = (work / "results" / "synthetic").glob("VBPR-mg-synthetic-*")
    assert (run / "summary.md").is_file() and len(
        (run / "results.jsonl").read_text().splitlines()
    ) == 21
    assert len(list((work / "checkpoints" / "synthetic" / run.name).glob("combo-*.pth"))) == 21
