"""glibc heap settings for training on CPU.

glibc hands a freed block above its mmap threshold (at most 32 MiB by default) back to the kernel, and
the next tensor of that size is page-faulted in again, page by page, and zeroed by the kernel. A training
step allocates and frees the same large activations every time, so on a 2-core VM those faults cost
about a fifth of the S-CMRL step (BENCHMARKS.md). Raising the mmap and trim thresholds keeps such blocks
in the heap for reuse; the price is that the process keeps its peak memory instead of returning it
between steps, which a training process reaches again every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("scmrl.train.cpu_memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30  # blocks up to 1 GiB stay in the heap; bigger ones are still mapped and unmapped
_applied = False


def keep_freed_memory() -> bool:
    """Apply the settings once per process (inherited by forked data workers); True when in effect.
    Nothing happens off Linux/glibc (e.g. musl, macOS), where the allocator behaves differently."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) != 1 or mallopt(_M_TRIM_THRESHOLD, 2 * _KEEP_BYTES - 1) != 1:
        log.debug("glibc refused the heap settings; training on CPU as is")
        return False
    _applied = True
    return True
