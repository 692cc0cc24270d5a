"""Samples to batches: collation, the training shuffle buffers, and the DataLoader set-up
(:func:`make_loader`); with workers, batches made in a worker reach the main process through reused
shared-memory slots (`scmrl.data.batch_ring`).

How training batches are mixed (all seeded by seed + epoch, hence reproducible and resumable at epoch
boundaries; the shard order is shuffled every epoch): `avdata prepare` writes each split in a seeded random
order and marks it so in the manifest (:func:`written_shuffled`). Such shards are read one at a time and
each slot passes its samples through a shuffle buffer of `--shuffle-buffer` samples (the whole size in
every worker, not a share of it) and batches them in its worker (:class:`BufferedSlots`), a worker's
stream being already mixed; the workers' last partial batches are merged (:class:`FullBatches`). Shards
not so marked (from elsewhere, or made before) may be sorted by class: each slot reads several at a time,
drawing each next sample from a random open shard, and with workers all samples of a rank pass through
one shuffle buffer in the main process (:class:`MixedBatches`) from which every batch is drawn, so that a
batch is not the product of one worker's stream (at the cost of a copy of every sample in the main
process).

Batches are tuples `(audio, visual, labels)`:
static: audio float32 [B, 1, S, S], visual uint8 [B, base, base, 3] (or [B, T, base, base, 3] with
`frames_per_step`, channels last: the device permutes); events: audio float32 [B, T, 64], visual
float32 [B, T, 2, 28, 28]. With `with_keys=True` the sample keys are appended (tests).

Training batches are always full, so a rank drops fewer than one batch of samples per epoch; evaluation
drops nothing. A read error inside a worker arrives as a :class:`~scmrl.data.failures.ShardFailure` and
is raised here.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avdata.shards.location import ShardsLocation
from avdata.shards.manifest import SHUFFLED_ORDER

from scmrl.data.batch_ring import RingBatches, SlotLoader, identity, slots_for
from scmrl.data.failures import CheckedBatches, ShardFailure
from scmrl.data.failures import raise_failures as _raise_failures
from avdata.rng import seeded_rng
from scmrl.data.config import StreamConfig
from scmrl.data.stream import ShardStream

__all__ = ["make_loader", "MixedBatches", "BufferedSlots", "FullBatches", "written_shuffled", "default_shuffle_buffer",
           "collate", "CHUNK"]


def default_shuffle_buffer(samples: int) -> int:
    """The training shuffle buffer for a rank that reads `samples` samples an epoch: a quarter of them,
    at least 1,000 and at most 4,096 (about 1 GB of CREMA-D-format samples, held in the main process, or
    in each worker for shards written in random order, where a worker holds no more than it reads; with
    such shards a larger one buys little), never more than the rank reads."""
    return max(1, min(samples, min(4096, max(1000, samples // 4))))


def _stack(tensors: list[Tensor]) -> Tensor:
    """``torch.stack``; in a DataLoader worker straight into shared memory, so that handing the batch to
    the main process does not copy it again (what torch's default_collate does too). In the main process
    (no workers) numpy's single-threaded copy: torch's parallel one waits on descheduled threads when the
    cores are busy (BENCHMARKS.md, "aug-speed")."""
    first = tensors[0]
    if get_worker_info() is None:
        out = torch.empty((len(tensors), *first.shape), dtype=first.dtype)
        np.stack([t.numpy() for t in tensors], out=out.numpy())
        return out
    storage = first.untyped_storage()._new_shared(len(tensors) * first.numel() * first.element_size())
    out = torch.empty(0, dtype=first.dtype).set_(storage).view(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def collate(batch: list[tuple]) -> tuple | ShardFailure:
    """Stack fixed-size samples (no padding): (audio, visual, labels[, keys])."""
    for b in batch:
        if isinstance(b, ShardFailure):
            return b
    audio = _stack([b[0] for b in batch])
    visual = _stack([b[1] for b in batch])
    labels = torch.tensor([b[2] for b in batch], dtype=torch.long)
    if len(batch[0]) > 3:
        return audio, visual, labels, [b[3] for b in batch]
    return audio, visual, labels


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class MixedBatches:
    """Training batches for one rank: every sample its workers deliver goes through one shuffle buffer of
    `buffer` samples (seeded by seed, epoch and rank), and batches of exactly `batch_size` are drawn from
    it, so a batch mixes the streams of all workers. The rank's last partial batch (< batch_size samples)
    is dropped, so every sample is used at most once per epoch and all but fewer than `batch_size` are.

    The workers hand over chunks of a few samples (collated into shared memory); a sample stays a view of
    its chunk until drawn, and drawn samples are stacked into the batch (one copy). A chunk is freed when
    its last sample is drawn, so the buffer holds about 4 x `buffer` samples' memory with chunks of 32.
    Used with DataLoader workers only (without them :class:`BufferedSlots` mixes as well)."""

    def __init__(self, loader: DataLoader, stream: "ShardStream", batch_size: int, buffer: int,
                 pin_memory: bool = False) -> None:
        self.loader, self.stream, self.batch_size = loader, stream, batch_size
        self.buffer, self.pin_memory = max(1, buffer), pin_memory

    def __iter__(self) -> Iterator[tuple]:
        # the loader's iterator is made now, so its workers start on the epoch before the first batch is asked for
        rng = seeded_rng(self.stream.cfg.seed, self.stream.epoch, "buffer", self.stream.rank)
        return self._batches(iter(self.loader), rng)

    def _batches(self, chunks: Iterator, rng: random.Random) -> Iterator[tuple]:
        out: list[tuple] = []
        for row in _shuffle_buffer(_rows(_raise_failures(chunks)), self.buffer, rng):
            out.append(row)
            if len(out) == self.batch_size:
                yield self._batch(out)
                out = []

    def _batch(self, rows: list[tuple]) -> tuple:
        fields = []
        for k, parts in enumerate(zip(*rows)):
            if k == 2:
                fields.append(torch.tensor(parts, dtype=torch.long))
            elif isinstance(parts[0], torch.Tensor):
                first = parts[0]
                res = torch.empty((len(parts), *first.shape), dtype=first.dtype, pin_memory=self.pin_memory)
                # numpy's single-threaded copy: torch.stack's parallel one spins against the busy workers
                # for CPU time (measured 20x slower on 2 cores with 2 workers)
                np.stack([t.numpy() for t in parts], out=res.numpy())
                fields.append(res)
            else:
                fields.append(list(parts))
        if self.pin_memory:
            fields[2] = fields[2].pin_memory()
        return tuple(fields)


def _rows(chunks: Iterable) -> Iterator[tuple]:
    """The samples of the collated chunks the workers hand over: (audio[c], visual[c], [labels][, [keys]])."""
    for chunk in chunks:
        labels = chunk[2]
        keys = chunk[3] if len(chunk) > 3 else None
        for i in range(len(labels)):
            yield (chunk[0][i], chunk[1][i], labels[i]) + ((keys[i],) if keys is not None else ())


def _collate_chunk(batch: list[tuple]) -> tuple | ShardFailure:
    """A worker's chunk of training samples: stacked tensors, labels (and keys) as lists. Each tensor costs
    a shared-memory segment and a file-descriptor hand-over (about a millisecond on the 2-core machine),
    so the labels travel pickled."""
    for b in batch:
        if isinstance(b, ShardFailure):
            return b
    out = (_stack([b[0] for b in batch]), _stack([b[1] for b in batch]), [b[2] for b in batch])
    return out + ([b[3] for b in batch],) if len(batch[0]) > 3 else out


def _shuffle_buffer(items: Iterable, size: int, rng: random.Random, initial: int | None = None) -> Iterator:
    """`items` through a shuffle buffer of `size`: each arriving item replaces a random held one, which is
    passed on; the last `size` leave in random order. A ShardFailure is passed on at once.

    `initial` < `size`: the first item leaves once `initial` are held, and until the buffer is full two
    arrive for each one that leaves (it fills while it yields), so an epoch's first batch does not wait
    for the whole buffer to be read and decoded."""
    initial = size if initial is None else max(1, min(initial, size))
    buf: list = []
    arrived = 0
    for item in items:
        if isinstance(item, ShardFailure):
            yield item
            return
        arrived += 1
        if len(buf) < size:
            buf.append(item)
            # growing: one leaves for every second arrival once `initial` are held
            if len(buf) > initial and arrived % 2 == 0:
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
            continue
        j = rng.randrange(len(buf))
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


class BufferedSlots(IterableDataset):
    """The samples of each (rank, worker) slot of `stream` through a shuffle buffer of its own, of `buffer`
    samples (the loader's whole buffer, not a share of it: at most `workers` x `buffer` samples in memory),
    seeded by seed, epoch, rank and worker. Each worker then batches its own samples (into its reused
    shared-memory slots, `scmrl.data.batch_ring`), so the main process copies each batch once and mixes
    nothing: for shards written in random order (by `avdata prepare`), where a worker's own stream is
    already mixed. With `initial`, the buffer fills while it yields (see :func:`_shuffle_buffer`).
    See :func:`make_loader`."""

    def __init__(self, stream: ShardStream, buffer: int, initial: int | None = None) -> None:
        self.stream, self.buffer, self.initial = stream, max(1, buffer), initial

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        st = self.stream
        rng = seeded_rng(st.cfg.seed, st.epoch, "buffer", st.rank, wid)
        return _shuffle_buffer(iter(st), self.buffer, rng, self.initial)


class FullBatches:
    """Batches of exactly `batch_size` from a DataLoader whose workers batch their own samples: the partial
    batch each worker ends its epoch with is merged with the others' (concatenated, in worker order), so a
    rank drops fewer than `batch_size` samples per epoch whatever the number of workers."""

    def __init__(self, loader: DataLoader, batch_size: int) -> None:
        self.loader, self.batch_size = loader, batch_size

    def __iter__(self) -> Iterator[tuple]:
        return self._full(iter(self.loader))  # made now: the workers start on the epoch at once

    def _full(self, batches: Iterator) -> Iterator[tuple]:
        carry: list[tuple] = []
        held = 0
        for batch in _raise_failures(batches):
            n = len(batch[2])
            if n == self.batch_size:
                yield batch
                continue
            carry.append(batch)
            held += n
            if held >= self.batch_size:
                merged = _cat(carry)
                yield tuple(m[:self.batch_size] for m in merged)
                held -= self.batch_size
                carry = [tuple(m[self.batch_size:] for m in merged)] if held else []


def _cat(batches: list[tuple]) -> tuple:
    return tuple(torch.cat(parts) if isinstance(parts[0], torch.Tensor) else [x for p in parts for x in p]
                 for parts in zip(*batches))


def written_shuffled(source: ShardsLocation, split: str) -> bool:
    """Whether the manifest says this split's samples were written in a seeded random order."""
    entry = source.manifest.splits.get(split)
    return entry is not None and entry.extra.get("order") == SHUFFLED_ORDER


# samples a DataLoader worker hands over at a time in training (see MixedBatches): each hand-over costs
# about a millisecond, so small chunks slow the loader (8: 0.6x, 32: 0.85x the speed of 128 on 2 cores),
# while a buffered sample keeps its whole chunk alive (memory ~ H(CHUNK) = 1 + 1/2 + ... + 1/CHUNK x buffer)
CHUNK = 32


# batches a DataLoader asks of its workers ahead of the one being used (each a whole batch in a slot)
PREFETCH = 2


def _slot_loader(samples: IterableDataset, batch_size: int, workers: int, pin_memory: bool,
                 common: dict, keep: bool = True) -> SlotLoader:
    """Workers batch their own samples into reused shared-memory slots (`scmrl.data.batch_ring`), kept
    between epochs when `keep`."""
    ring = RingBatches(samples, batch_size, workers, slots_for(PREFETCH, workers), keep)
    loader = DataLoader(ring, batch_size=None, collate_fn=identity, prefetch_factor=PREFETCH, **common)
    return SlotLoader(loader, ring, pin_memory)


def make_loader(source: ShardsLocation, split: str, cfg: StreamConfig, batch_size: int, workers: int = 0,
                rank: int = 0, world: int = 1, pin_memory: bool = False) -> tuple[Iterable, ShardStream]:
    """Batches of one split for this rank, and the stream (call `stream.set_epoch(e)` before each epoch;
    the workers are started once and read the epoch from shared memory).

    Training (`cfg.train`): only full batches; the rank's remainder (< batch_size) is dropped. The shuffle
    buffer is `cfg.shuffle_buffer` samples (default :func:`default_shuffle_buffer`). Two ways to batch:

    * shards whose manifest marks the split as written in random order (:func:`written_shuffled`), and
      any shards without workers: each worker (or the process) shuffles its own slot through a buffer of
      that size and batches it itself (:class:`BufferedSlots`, :class:`FullBatches`); a worker's stream
      is then already mixed, and the batches reach the trainer with no copy in the main process;
    * other shards with workers (they may be sorted by class), or `cfg.mix_across_workers=True`: all
      workers' samples go through one buffer in the main process (:class:`MixedBatches`), so that a batch
      draws from every worker's stream; this costs a copy of every sample in the main process (about
      0.7x the samples per CPU-second with 2 workers on 2 cores, BENCHMARKS.md).

    Shards marked as written in random order are read one at a time (`interleave=1`): interleaving buys
    them no mixing and cost about 10% of the CPU time per sample (BENCHMARKS.md).

    Evaluation: every sample, in order, the last batches of each worker possibly smaller."""
    shuffled = written_shuffled(source, split)
    if cfg.train and shuffled:
        cfg = replace(cfg, interleave=1)
    ds = ShardStream(source, split, cfg, rank, world)
    common = dict(num_workers=workers, worker_init_fn=_worker_init if workers else None,
                  persistent_workers=workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    if not cfg.train:
        if workers:
            return CheckedBatches(_slot_loader(ds, batch_size, workers, pin_memory, common, keep=False)), ds
        return CheckedBatches(DataLoader(ds, batch_size=batch_size, collate_fn=collate, pin_memory=pin_memory,
                                             **common)), ds
    buffer = cfg.shuffle_buffer
    if buffer is None:
        buffer = default_shuffle_buffer(ds.rank_samples(rank, max(1, workers)))
    across = cfg.mix_across_workers if cfg.mix_across_workers is not None else not shuffled
    # shards written in random order: the buffer fills while it yields, so an epoch starts at once
    slots = BufferedSlots(ds, buffer, initial=batch_size if shuffled else None)
    if not workers:
        return FullBatches(DataLoader(slots, batch_size=batch_size, collate_fn=collate, pin_memory=pin_memory,
                                      **common), batch_size), ds
    if not across:
        return FullBatches(_slot_loader(slots, batch_size, workers, pin_memory, common), batch_size), ds
    # chunks of CHUNK samples; about 4 batches in flight per worker, as for evaluation
    loader = DataLoader(ds, batch_size=CHUNK, collate_fn=_collate_chunk, drop_last=False,
                        prefetch_factor=max(2, 4 * batch_size // CHUNK), **common)
    return MixedBatches(loader, ds, batch_size, buffer, pin_memory), ds
