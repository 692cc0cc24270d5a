"""The project's one seeded random generator (prepare's splits and order, the trainer's shard order, frame
choice and buffer).

`random.Random` seeded with a string gives the same sequence on every platform and Python version since
3.2, so whatever it draws depends only on the seed and the salt parts, never on the process or the run.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["seeded_rng"]


def seeded_rng(seed: Any, *salt: Any) -> random.Random:
    """A `random.Random` seeded from the string "avdata:<seed>:<salt>:..." (salt parts joined by ':')."""
    return random.Random(":".join(str(p) for p in ("avdata", seed, *salt)))
