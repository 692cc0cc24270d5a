"""The glibc heap settings scmrl-train applies on CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A 64 MiB block written, freed, and one of the same size written again (an activation of the next
# step). Page faults counted for the second one. Raw malloc + memset: numpy would ask for huge pages.
CHECK = """
import ctypes, resource, sys
from scmrl.train.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
assert not applied or keep_freed_memory()  # idempotent
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
a = libc.malloc(64 << 20); ctypes.memset(a, 1, 64 << 20); libc.free(a)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = libc.malloc(64 << 20); ctypes.memset(a, 1, 64 << 20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHECK, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap settings are Linux-only")
def test_large_freed_blocks_are_kept_for_reuse():
    applied, tuned = _faults("tuned")
    if applied != "True":
        pytest.skip("not glibc")
    _, plain = _faults("plain")
    # 64 MiB is 16,384 pages: faulted in again without the settings, reused from the heap with them
    assert plain > 10_000 and tuned < 1_000
