"""Large buffers go back to the operating system when they are freed.

A request's tensors are large (a 640x640 float32 image is 4.9 MB, a 224x224 one 0.6 MB) and a burst holds many at
once (the predictor's queue, the transformer's requests in flight). glibc serves allocations over its mmap
threshold (128 KiB) with mmap, and returns them with munmap when freed, but the first such free raises the
threshold to the freed size (dynamic threshold, up to 32 MiB): from then on these buffers come from the heap
arenas, whose freed space is kept. One burst then leaves the process at its peak for good: at 4x the capacity
(benchmarks/overload.py) the predictor went from 237 to 385 MB and stayed there, and the 10-minute soak's
predictor RSS grew 16 % after one slow minute. Fixing the threshold (which also turns the dynamic adjustment
off) keeps each burst's buffers mmapped, so the RSS comes back down after it; the cost is a page fault per
page of each new buffer, small beside decoding or running the model on it.

`MALLOC_MMAP_THRESHOLD_` in the environment is glibc's own way to set this and wins: we leave it alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter number, glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own default, fixed
ENVIRONMENT = "MALLOC_MMAP_THRESHOLD_"


def return_large_buffers_to_the_os(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; True when it was set. Elsewhere (not Linux, musl, an
    operator's own `MALLOC_MMAP_THRESHOLD_`) nothing changes and it says False."""
    if not sys.platform.startswith("linux") or ENVIRONMENT in os.environ:
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
