"""`acdc.core.allocator`: freed CPU memory kept for reuse (glibc only). Each check runs in a
fresh interpreter: the setting is process-wide and cannot be undone."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc.so" not in (ctypes.util.find_library("c") or ""),
    reason="glibc's malloc only")

# A 256 MB tensor allocated, touched and freed: how much of it the process still holds.
SCRIPT = """
import sys, torch
from acdc.core.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
before = resident()
x = torch.ones(64 * 2 ** 20)
del x
print(kept, (resident() - before) / 2 ** 20)
"""


def run(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], float(out[1])


def test_freed_memory_is_kept_only_when_asked():
    kept, held = run("keep")
    assert kept == "True" and held > 200  # the freed block stays, for the next tensor
    kept, held = run("default")
    assert kept == "None" and held < 50  # glibc unmapped it


def test_asking_twice_is_harmless_and_the_package_exposes_it():
    code = ("import acdc; from acdc.core import allocator; "
            "print(acdc.keep_freed_memory(), acdc.keep_freed_memory(), "
            "acdc.keep_freed_memory is allocator.keep_freed_memory)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["True", "True", "True"]
