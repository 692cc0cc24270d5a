"""The seeded random generators of the input pipeline (shard order, interleaving, frame choice, buffer).

Seeded from crc32 of the parts joined, so a (seed, epoch, ...) tuple draws the same in every process and
Python run. This is not `avdata`'s split seeding (`avdata.prepare.splits.seeded_rng`, a different
derivation): the two are kept apart on purpose, since changing either would change prepared shards or
the order the trainer sees samples in.
"""

from __future__ import annotations

import random
import zlib
from typing import Any


def seeded_rng(*parts: Any) -> random.Random:
    """A random.Random seeded from the parts (stable across processes and Python runs)."""
    return random.Random(zlib.crc32("\x1f".join(str(p) for p in parts).encode()))
