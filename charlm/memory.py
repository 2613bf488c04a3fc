"""Keep freed memory in the process instead of handing it back to the operating system.

A training step allocates and frees the same large tensors every time (the ``[rows, vocabulary]``
softmax blocks, the gradient of the output layer, ...). With glibc's default settings a block of
a few megabytes is served by ``mmap`` and returned to the kernel when freed, so the next step
gets fresh pages and pays a page fault for every 4 KiB it touches: about 10,000 faults per
``ptb-char-small`` step, a tenth of the step's time on this project's CPU machine.

:func:`keep_freed_memory` raises glibc's ``mmap`` threshold to its maximum (32 MiB) and stops it
from trimming the heap, so freed blocks are reused. The ``charlm`` commands call it at start-up;
it changes no number, only where memory comes from, and the resident memory of the process stays
at its peak instead of shrinking. On other C libraries (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
NEVER_TRIM = 2**31 - 1  # mallopt takes an int


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the setting once per process; return whether the C library accepted it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
