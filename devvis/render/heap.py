"""The C heap during a CPU render: a step's freed tensors stay with the process for the next step.

PyTorch's CPU allocator takes every tensor from the C library's ``malloc``. glibc serves a block above its
*mmap threshold* (128 KiB at start, rising with the blocks freed, at most 32 MiB) with fresh pages from the
kernel and hands them back when it is freed, and hands the free top of its heap back above a *trim
threshold*. A render allocates the same activations at every step, so every step pays the kernel's page
faults on them again: 16 images of resnet18 to ``layer3.1`` at 224 px fault in 52–65 k pages a step, 0.09–0.10 s
of kernel time in a 0.78 s step (kept: 4.5–5.8 k pages, 0.009 s).

:func:`kept_heap` raises both thresholds for the block (on glibc, for a render on the CPU; the mmap one to
1 GiB, or to 32 MiB where glibc caps it there), so freed blocks stay in the heap and the next step reuses
them, and on exit sets them to glibc's usual ceiling (mmap 32 MiB, trim 64 MiB) and hands the free memory
back (``malloc_trim``). Measured with
``benchmarks/run.py``: 16 channels of layer3.1 take 6–10% less process time per step; batch-1 renders,
whose blocks are small, change by less than the runs' noise. The memory held during the render is what a
step needs, as before; it stays with the process until the render ends instead of going back at every step.

glibc has no call that reads the thresholds, so the ones it had are not restored: after a render they are
the fixed ceiling that its own adjustment reaches once a 32 MiB block has been freed. Other C libraries
(macOS, musl, Windows) and a ``malloc`` preloaded in glibc's place (jemalloc, tcmalloc) keep freed memory on
their own terms; there, and when :data:`ENABLED` is ``False``, the block changes nothing.

>>> import torch
>>> with kept_heap(torch.device("cpu")) as kept:
...     x = torch.zeros(1 << 22)
>>> kept in (True, False)
True
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import threading
from typing import Iterator

import torch

#: Set to ``False`` to leave the C heap as it is during renders.
ENABLED = True

# glibc's mallopt parameters (malloc.h) and the values kept_heap sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_MMAP, _KEEP_TRIM = 1 << 30, (1 << 31) - 1  # blocks up to 1 GiB from the heap; its top kept up to 2 GiB
_AFTER_MMAP, _AFTER_TRIM = 32 << 20, 64 << 20    # glibc's own ceiling for the two

_lock = threading.Lock()
_depth = 0
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def glibc() -> ctypes.CDLL | None:
    """The process's glibc with ``mallopt`` and ``malloc_trim`` typed, or ``None`` on another C library."""
    global _libc
    if _libc is False:
        _libc = None
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                lib = ctypes.CDLL("libc.so.6")
                lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                _libc = lib
            except (OSError, AttributeError):
                _libc = None
    return _libc  # type: ignore[return-value]


@contextlib.contextmanager
def kept_heap(device: torch.device) -> Iterator[bool]:
    """Inside the block, freed blocks stay in the process's heap (see the module docstring); yields whether
    the heap is kept (glibc, a CPU device, :data:`ENABLED`). Nested and concurrent blocks share one setting,
    undone when the last one ends, also on errors."""
    global _depth
    lib = glibc() if ENABLED and torch.device(device).type == "cpu" else None
    if lib is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            # a glibc that caps the mmap threshold (at 32 MiB: HEAP_MAX_SIZE / 2) refuses 1 GiB; the cap then.
            # Never leave it unset: the trim threshold's mallopt also ends glibc's own adjustment of it.
            if not lib.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP):
                lib.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
            lib.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
                lib.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)
                lib.malloc_trim(0)
