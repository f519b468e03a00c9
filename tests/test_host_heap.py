"""The host heap stays bounded: with ``bound_host_heap`` a freed large block goes back to the
OS even after glibc would have raised its mmap threshold (the evaluator's fragmentation)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from mgrec import experiment
if sys.argv[1] == "bounded":
    assert experiment.bound_host_heap()

def rss_mb():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

big = torch.ones(6 << 20)  # 24 MB freed: glibc's threshold rises to 24 MB ...
del big
block = torch.ones(4 << 20)  # ... so this 16 MB block comes from the heap
small = torch.ones(16)  # a kept tensor after it: the heap cannot shrink past it
before = rss_mb()
del block
print(before - rss_mb())
"""


@pytest.mark.slow
@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_a_freed_block_returns_to_the_os_only_with_the_bounded_heap():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = "1"
    released = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                check=True,
            ).stdout
        )
        for mode in ("bounded", "default")
    }  # fmt: skip
    assert released["bounded"] > 12  # the 16 MB went back
    assert released["default"] < 4  # glibc's default keeps it: what the bound prevents
