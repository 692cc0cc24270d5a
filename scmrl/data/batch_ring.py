"""Batches made in DataLoader workers and handed over through shared-memory slots that are reused.

Why: torch's default hand-over stacks every batch into a fresh shared-memory block, and filling a fresh
25 MB block (a CREMA-D batch of 128) costs about 22 ms on the 2-core machine, the kernel allocating and
zeroing its pages, against 3.5 ms into a block filled before; each block's file descriptor also travels
through a socket. Here each worker owns a few batch buffers (slots) in shared memory, sent to the main
process once, the first time each is used; afterwards a batch travels as a few bytes (worker, slot,
count, labels). The main process copies each batch out of its slot at once, into its own (or pinned)
memory, and frees the slot, so what the loader yields is owned by the caller as before and a slot is
never written while it is read. BENCHMARKS.md ("Loader against stock webdataset") has the figures.

The slot states live in a small shared tensor made before the workers start: a worker fills only a
free slot and marks it full; the main process marks it free after its copy. A worker starting an epoch
frees all of its slots: the main process has by then copied every batch it took and dropped the rest
(a persistent worker's unread batches are discarded when the next epoch begins).
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from scmrl.data.failures import ShardFailure

__all__ = ["RingBatches", "SlotBatch", "SlotLoader", "read_slots", "slots_for", "identity"]

FREE, FULL = 0, 1


def slots_for(prefetch_factor: int, workers: int) -> int:
    """Slots per worker: as many batches as the DataLoader may ask of one worker before it takes any (all
    of them go to one worker once the others are done), one being filled, one spare; so a worker never
    waits on a batch the main process is not about to take. Slots are made when first needed: a worker
    holds only as many as it has had in flight at once."""
    return prefetch_factor * max(1, workers) + 2


class SlotBatch:
    """What a worker hands over: which slot holds the batch, how many rows, the labels (and keys); the slot's
    tensors only the first time the slot is used (they reach the main process once, as shared memory)."""

    __slots__ = ("worker", "slot", "count", "tensors", "labels", "keys")

    def __init__(self, worker: int, slot: int, count: int, tensors: tuple[Tensor, ...] | None,
                 labels: list[int], keys: list[str] | None) -> None:
        self.worker, self.slot, self.count, self.tensors = worker, slot, count, tensors
        self.labels, self.keys = labels, keys

    def __reduce__(self):
        return SlotBatch, (self.worker, self.slot, self.count, self.tensors, self.labels, self.keys)


def identity(item: object) -> object:
    """The DataLoader's collate_fn here: the worker has batched already (module-level: picklable)."""
    return item


class RingBatches(IterableDataset):
    """Batches of `batch_size` samples of `samples` (tuples: tensor, tensor, label[, key]), made in each
    worker into its own slots; the last batch of a worker's epoch may be smaller. Read them with
    :func:`read_slots`. Made in the main process before the workers start (the slot states are shared).
    `keep`: slots are kept from one epoch to the next (training); else a worker lets go of its slots when
    its epoch ends (evaluation, which runs now and then: its slots would hold shared memory in between)."""

    def __init__(self, samples: IterableDataset, batch_size: int, workers: int, slots: int,
                 keep: bool = True) -> None:
        self.samples, self.batch_size, self.slots, self.keep = samples, batch_size, slots, keep
        self.state = torch.zeros(max(1, workers), slots, dtype=torch.int32).share_memory_()
        self._buffers: dict[int, tuple[Tensor, ...]] = {}  # in each worker: slot -> its tensors
        self._sent: set[int] = set()  # in each worker: slots whose tensors went to the main process

    def __iter__(self) -> Iterator[SlotBatch | ShardFailure]:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        state = self.state.numpy()[wid]
        # a slot still full was never taken: its batch was dropped with the last epoch, and with it the
        # slot's tensors if they travelled in it, so they are sent again
        self._sent.difference_update(int(k) for k in np.flatnonzero(state == FULL))
        state[:] = FREE
        rows: list[tuple] = []
        for item in self.samples:
            if isinstance(item, ShardFailure):
                yield item
                return
            rows.append(item)
            if len(rows) == self.batch_size:
                yield self._fill(wid, state, rows)
                rows = []
        if rows:
            yield self._fill(wid, state, rows)
        if not self.keep:  # the main process's copies stay valid: it maps the memory itself
            self._buffers.clear()
            self._sent.clear()

    def _fill(self, wid: int, state: np.ndarray, rows: list[tuple]) -> SlotBatch:
        k = _free_slot(state)
        bufs = self._buffers.get(k)
        if bufs is None or any(b.shape[1:] != r.shape or b.dtype != r.dtype for b, r in zip(bufs, rows[0][:2])):
            bufs = tuple(torch.empty((self.batch_size, *r.shape), dtype=r.dtype).share_memory_() for r in rows[0][:2])
            self._buffers[k] = bufs
            self._sent.discard(k)
        new = k not in self._sent
        self._sent.add(k)
        n = len(rows)
        for j, buf in enumerate(bufs):
            torch.stack([r[j] for r in rows], out=buf[:n])
        state[k] = FULL
        keys = [r[3] for r in rows] if len(rows[0]) > 3 else None
        return SlotBatch(wid, k, n, bufs if new else None, [r[2] for r in rows], keys)


def _free_slot(state: np.ndarray) -> int:
    """The first free slot (the lowest, so that few are ever made), waiting if none is: the main process
    frees slots as it receives them, so a wait is short; a worker whose parent has gone exits instead."""
    parent = os.getppid()
    checked = time.monotonic()
    while True:
        free = np.flatnonzero(state == FREE)
        if len(free):
            return int(free[0])
        time.sleep(0.0002)
        if time.monotonic() - checked > 1.0:
            if os.getppid() != parent:
                raise SystemExit(0)
            checked = time.monotonic()


def read_slots(loader: Iterable, ring: RingBatches, cache: dict[tuple[int, int], tuple[Tensor, ...]],
               pin_memory: bool = False) -> Iterator[tuple | ShardFailure]:
    """The batches of a DataLoader over `ring`, each copied out of its slot (into pinned memory when asked)
    and the slot freed: (tensor, tensor, labels[, keys]). Failures are passed on. `cache` holds the slots'
    tensors as received, (worker, slot) -> tensors, kept across epochs as persistent workers keep theirs."""
    state = ring.state.numpy()
    for msg in loader:
        if not isinstance(msg, SlotBatch):
            yield msg
            continue
        if msg.tensors is not None:
            cache[msg.worker, msg.slot] = msg.tensors
        out = []
        for buf in cache[msg.worker, msg.slot]:
            dst = torch.empty((msg.count, *buf.shape[1:]), dtype=buf.dtype, pin_memory=pin_memory)
            # numpy's single-threaded copy: torch's parallel one spins against the busy workers
            np.copyto(dst.numpy(), buf[:msg.count].numpy())
            out.append(dst)
        state[msg.worker, msg.slot] = FREE
        labels = torch.tensor(msg.labels, dtype=torch.long)
        if pin_memory:
            labels = labels.pin_memory()
        yield (*out, labels) + ((msg.keys,) if msg.keys is not None else ())


class SlotLoader:
    """A DataLoader over a :class:`RingBatches`, iterable once per epoch like the DataLoader itself."""

    def __init__(self, loader: Iterable, ring: RingBatches, pin_memory: bool = False) -> None:
        self.loader, self.ring, self.pin_memory = loader, ring, pin_memory
        self.cache: dict[tuple[int, int], tuple[Tensor, ...]] = {}

    def __iter__(self) -> Iterator[tuple | ShardFailure]:
        # the DataLoader's iterator is made now, not at the first batch asked for: its workers start on the
        # epoch at once (the trainer makes the next epoch's iterator before evaluating)
        return self._read(iter(self.loader))

    def _read(self, batches: Iterator) -> Iterator[tuple | ShardFailure]:
        yield from read_slots(batches, self.ring, self.cache, self.pin_memory)
        if not self.ring.keep:  # the workers made new slots for their next epoch
            self.cache.clear()
