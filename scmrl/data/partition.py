"""Who reads what: shards and samples dealt to (rank, DataLoader worker) slots, each sample once per epoch.

Shards (in a per-epoch seeded order for training) are dealt to ranks (`r::world`) and then to the
workers of each rank (`w::workers`) when there are enough of them; when a rank has fewer shards than
workers its workers read all of the rank's shards and keep every `workers`-th sample; when there are
fewer shards than ranks every slot reads every shard and keeps every `world * workers`-th sample. The
sample count of each slot is known in advance from the manifest, which the trainer uses to give every
rank the same step schedule.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["slot_plan", "share_group", "slot_count"]


def slot_plan(counts: Sequence[int], rank: int, world: int, worker: int, workers: int,
              order: Sequence[int] | None = None) -> tuple[list[int], int, int]:
    """Which shards (indices into `counts`) slot (rank, worker) reads, and which of their samples it keeps:
    returns (shards, modulus, remainder): keep the i-th sample read (0-based, counted over the slot's
    shards in order) when i % modulus == remainder."""
    idx = list(order) if order is not None else list(range(len(counts)))
    n = len(idx)
    if n >= world * workers:
        mine = idx[rank::world]
        return mine[worker::workers], 1, 0
    if n >= world:
        return idx[rank::world], workers, worker
    return idx, world * workers, rank * workers + worker


def share_group(n: int, rank: int, world: int, worker: int, workers: int) -> tuple:
    """The slots that read the same shards in the same order (see :func:`slot_plan`): their interleaving
    must be drawn from one seed so that each keeps its own every-k-th sample of one common sequence."""
    if n >= world * workers:
        return (rank, worker)
    if n >= world:
        return (rank,)
    return ()


def slot_count(counts: Sequence[int], plan: tuple[list[int], int, int]) -> int:
    shards, mod, rem = plan
    total = sum(int(counts[i]) for i in shards)
    return max(0, math.ceil((total - rem) / mod))
