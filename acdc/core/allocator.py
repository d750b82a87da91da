"""Freed CPU memory kept for reuse (glibc's malloc, on Linux).

glibc serves each request above its mmap threshold (at most 32 MB) with a new anonymous
mapping and unmaps it when freed. The kernel zeroes every page of a new mapping when it is
first touched (a page fault per 4 kB), so a tensor of that size allocated at every layer or
every edge test costs more to allocate than to fill: 36 x 1500 x 768 floats (a GPT-2-small
layer's head inputs at batch 100 x 15) took 65 ms allocated and filled, 23 ms filled in place.
TransformerLens' own forward pass allocates its logits that way.

`keep_freed_memory()` turns the mappings off, so that every block comes from the heap, and
keeps up to `KEPT_BYTES` of freed memory at the heap's top instead of returning it: freed
blocks are reused, already touched. The price: after a peak the process's resident memory stays
up to `KEPT_BYTES` above what it uses. It changes no value a computation returns.

The `circuit` command calls it at start-up, as do its sweep worker processes; from Python,
call `acdc.keep_freed_memory()` once. Where the C library is not glibc (macOS, musl,
Windows) it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

KEPT_BYTES = 1 << 30  # freed memory kept at the heap's top before it is returned
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4

_kept = False


def keep_freed_memory() -> bool:
    """Reuse freed CPU memory instead of mapping new pages (see the module docstring). True
    when glibc took the settings (now or at an earlier call), False where there is no glibc."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES))
    return _kept
