"""Reading the samples of one split for one (rank, worker) slot, with retries.

Shards are found and opened through `avdata.shards` (`open_shards`: a local folder, its http(s) URL, or
.tar files) and read with its one tar reader (`avdata.shards.reader.iter_tar_files`, one copy per member)
and webdataset's key grouping (`webdataset.tariterators.group_by_keys`). Opening a shard is retried with
back-off and a failure names the shard URL (:class:`~scmrl.data.failures.ShardReadError`, which tells the
user to rerun with `--resume`). A stream that breaks in the middle of a shard is reopened and the
samples already delivered are skipped, so no sample is repeated. A shard that yields fewer samples than
its manifest entry counts as broken too.

Which slot reads what is `scmrl.data.partition`; samples become tensors in `scmrl.data.decode`; batches
and the training shuffle buffer are `scmrl.data.batching`. Training order, all seeded by seed + epoch
(reproducible and resumable at epoch boundaries): the shard order is shuffled, and each slot reads its
shards several at a time, drawing each next sample from a random open shard (:func:`_interleaved`),
because shards from elsewhere may be sorted by class.

Shards may come from strangers, so the stream checks what it reads, cheaply: each member against the
size its field may hold (`avdata.shards.member_caps`), each sample's key and class index
(`avdata.samples.key_problem`, `class_index`), a key read twice by a slot, and at start-up a shard file
or a shard's content (sha256) listed twice or in two splits (:func:`check_split_overlap`); any of these
stops the run with a message naming the shard.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import random
import tarfile
import time
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys

from avdata.errors import AvdataError
from avdata.fetch.urls import redact
from avdata.printable import printable
from avdata.samples import class_index, key_problem
from avdata.shards.location import ShardsLocation
from avdata.shards.manifest import Manifest, ShardEntry, event_bins
from avdata.shards.reader import NotAFileError, TarBoundsError, iter_tar_files

from scmrl.data.config import StreamConfig
from scmrl.data.decode import ADAPTERS
from scmrl.data.failures import ShardFailure, ShardReadError, short_reason
from scmrl.data.partition import share_group, slot_count, slot_plan
from avdata.rng import seeded_rng

log = logging.getLogger("scmrl.data.stream")

__all__ = ["ShardStream", "StreamConfig", "check_split_overlap", "slot_offsets"]


def check_split_overlap(manifest: Manifest) -> None:
    """AvdataError when a shard file, or a shard's content (its sha256), is listed twice or in two
    splits: "test" accuracy would then be measured on training data. One pass over the shard list."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for split, shard in manifest.shard_entries():
        # shards with no samples are all the same bytes (the end-of-archive blocks) and harm nothing
        content = (("sha256", shard.sha256.lower()),) if shard.num_samples else ()
        for what in (("file", shard.file), *content):
            if what in seen:
                other_split, other_file = seen[what]
                where = f"twice in split {split!r}" if other_split == split else \
                    f"in splits {other_split!r} and {split!r}"
                same = "listed" if what[0] == "file" else f"the same bytes as {printable(other_file)!r}, listed"
                raise AvdataError(f"shard {printable(shard.file)!r} is {same} {where} of the manifest: "
                                  "each sample must belong to one split once; fix the manifest's shard lists")
            seen[what] = (split, shard.file)


def slot_offsets(counts: list[int]) -> list[int]:
    """The index of each shard's first sample within a slot's shards: one cumulative pass (start-up
    stays linear in the shard count)."""
    return [0, *itertools.accumulate(counts)][:len(counts)]


class ShardStream(IterableDataset):
    """Samples of one split, split across ranks and DataLoader workers (see `scmrl.data.partition`)."""

    def __init__(self, source: ShardsLocation, split: str, cfg: StreamConfig, rank: int = 0, world: int = 1) -> None:
        self.source, self.split, self.cfg = source, split, cfg
        self.entries = source.shards(split)
        self.rank, self.world = rank, world
        if cfg.kind not in ADAPTERS:
            raise AvdataError(f"no sample adapter for data of kind {cfg.kind!r} (known: {', '.join(ADAPTERS)})")
        self.adapter = ADAPTERS[cfg.kind]
        check_split_overlap(source.manifest)
        self.num_classes = len(source.manifest.classes)
        self.caps = source.caps()
        # in shared memory: persistent DataLoader workers (forked once) see each new epoch
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        if cfg.kind == "events":
            self.bins = event_bins(source.manifest)
            if self.bins % cfg.time_steps:
                raise AvdataError(f"the shards hold {self.bins} time bins; --time-steps must divide it "
                                  f"(got {cfg.time_steps})")

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating the loader for an epoch (shuffling and frame choice depend on it)."""
        self._epoch[0] = epoch

    def _order(self) -> list[int]:
        order = list(range(len(self.entries)))
        if self.cfg.train:
            seeded_rng(self.cfg.seed, self.epoch, "shards").shuffle(order)
        return order

    def plan(self, rank: int, worker: int, workers: int) -> tuple[list[int], int, int]:
        counts = [e.num_samples for e in self.entries]
        return slot_plan(counts, rank, self.world, worker, workers, self._order())

    def slot_samples(self, rank: int, worker: int, workers: int) -> int:
        counts = [e.num_samples for e in self.entries]
        return slot_count(counts, self.plan(rank, worker, workers))

    def rank_samples(self, rank: int, workers: int = 1) -> int:
        """Samples rank `rank` reads this epoch (over all of its workers)."""
        nw = max(1, workers)
        return sum(self.slot_samples(rank, w, nw) for w in range(nw))

    def batches_per_rank(self, batch_size: int, workers: int = 1) -> list[int]:
        """Full training batches each rank yields this epoch (see `scmrl.data.batching.MixedBatches`)."""
        return [self.rank_samples(r, workers) // batch_size for r in range(self.world)]

    def __iter__(self) -> Iterator[tuple | "ShardFailure"]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        try:
            yield from self.iter_slot(wid, nw)
        except AvdataError as exc:  # handed to the main process as data; the worker ends normally
            yield ShardFailure(type(exc).__name__, str(exc))

    def iter_slot(self, worker: int = 0, workers: int = 1) -> Iterator[tuple]:
        """The samples of one (this rank, worker) slot; usable without a DataLoader (tests).

        Training: the slot's shards are read `interleave` at a time, each next sample drawn from one of the
        open shards at random, weighted by the samples it has left (a uniformly random merge: shards each
        holding one class give a class sequence like a random permutation). The shuffle buffer is not here
        but in `scmrl.data.batching.MixedBatches`, over all workers of the rank."""
        shards, mod, rem = self.plan(self.rank, worker, workers)
        counts = [self.entries[s].num_samples for s in shards]
        offsets = slot_offsets(counts)
        if self.cfg.train and self.cfg.interleave > 1 and len(shards) > 1:
            group = share_group(len(self.entries), self.rank, self.world, worker, workers)
            rng = seeded_rng(self.cfg.seed, self.epoch, "interleave", *group)
            indexed = _interleaved(lambda i: self._indexed(shards[i]), counts, self.cfg.interleave, rng)
        else:
            indexed = ((i, j, sample) for i, s in enumerate(shards) for j, sample in self._indexed(s))
        # which samples a slot keeps depends on their place in the slot's shards, not on the reading order
        epoch = self.epoch  # read once: it is a shared tensor, slow to index per sample
        return (self._convert(sample, epoch) for i, j, sample in _once_each(indexed)
                if (offsets[i] + j) % mod == rem)

    def _indexed(self, shard: int) -> Iterator[tuple[int, dict[str, Any]]]:
        return enumerate(self._read(self.entries[shard]))

    def _read(self, entry: ShardEntry) -> Iterator[dict[str, Any]]:
        """One shard's samples (webdataset tar iteration + key grouping), with retries; never repeats."""
        url = redact(self.source.address(entry.file))  # for messages only: no credentials shown
        expected = entry.num_samples
        done = 0
        failures = 0
        while True:
            seen = 0
            try:
                stream = self.source.open(entry.file)
                change = self.source.change(entry, stream)
                if change is not None:  # another version: the same on a retry
                    stream.close()
                    raise ShardReadError(
                        f"shard {url} {change}. Check it with `avdata verify`, fetch or prepare it again, then rerun "
                        "with --resume (it continues from the last finished epoch)")
                try:
                    files = ({**f, "__url__": url} for f in iter_tar_files(stream, lazy=self._lazy,
                                                                            limit=entry.bytes, caps=self.caps))
                    for sample in group_by_keys(files):
                        seen += 1
                        if seen > done:
                            done = seen
                            yield sample
                finally:
                    stream.close()
                if expected and seen < expected:
                    raise EOFError(f"only {seen} of {expected} samples")
                return
            except NotAFileError as exc:  # a FIFO or device stays one: no retry
                raise ShardReadError(f"shard {url} cannot be read ({exc})") from exc
            except ShardReadError:
                raise
            except TarBoundsError as exc:  # the same bytes come again on a retry: say so now
                raise ShardReadError(f"shard {url} is damaged or tampered with ({exc}); fetch it again "
                                     "(`avdata pull` checks every shard's sha256) or remove it") from exc
            except (OSError, EOFError, ValueError, tarfile.TarError, http.client.HTTPException, AvdataError) as exc:
                failures += 1
                if failures > self.cfg.retries:
                    raise ShardReadError.for_shard(url, short_reason(exc), failures) from exc
                delay = min(self.cfg.backoff * 2 ** (failures - 1), 8.0)
                log.warning("shard %s: %s; retrying in %.1f s", url, short_reason(exc), delay)
                time.sleep(delay)

    def _lazy(self, name: str) -> bool:
        return self.adapter.lazy(name)

    def _convert(self, sample: dict[str, Any], epoch: int) -> tuple:
        key = sample["__key__"]
        url = printable(sample.get("__url__"))
        problem = key_problem(key)
        if problem:
            raise AvdataError(f"shard {url}: {problem}; the shard is damaged or was made by another tool")
        try:
            label = class_index(sample["cls"], self.num_classes)
            audio, visual = self.adapter.decode(sample, key, self.cfg, epoch)
            out: tuple = (audio, visual, label)
        except KeyError as exc:
            raise AvdataError(f"sample {key} of {url}: missing field {printable(exc)}") from exc
        except ValueError as exc:
            raise AvdataError(f"sample {key} of {url}: bad field ({printable(exc)})") from exc
        return out + (key,) if self.cfg.with_keys else out


def _once_each(indexed: Iterator[tuple[int, int, dict[str, Any]]]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """`indexed` as it is, AvdataError when a sample key comes a second time (a shard listed twice under
    another name, or samples copied between shards): a set of the keys this slot has read."""
    seen: set[str] = set()
    for item in indexed:
        key = item[2]["__key__"]
        if key in seen:
            raise AvdataError(f"sample key {printable(key)!r} is read a second time, in shard "
                              f"{printable(item[2].get('__url__'))}: each sample must be in the shards once")
        seen.add(key)
        yield item


def _interleaved(reader: Callable[[int], Iterator[tuple[int, Any]]], counts: list[int], width: int,
                 rng: random.Random) -> Iterator[tuple[int, int, Any]]:
    """(reader index, sample index, sample) from readers ``reader(i)`` for i in 0..len(counts)-1 (made
    when first needed, in order, at most `width` open at a time), each next one from an open reader
    chosen at random with weight = the samples it has left."""
    pending = list(range(len(counts)))[::-1]
    open_: list[int] = []
    left: dict[int, int] = {}
    readers: dict[int, Iterator[tuple[int, Any]]] = {}
    while open_ or pending:
        while pending and len(open_) < width:
            i = pending.pop()
            open_.append(i)
            left[i] = counts[i]
            readers[i] = reader(i)
        pick = rng.choices(range(len(open_)), weights=[max(1, left[i]) for i in open_])[0]
        i = open_[pick]
        item = next(readers[i], None)
        if item is None:
            open_.pop(pick)
            del readers[i], left[i]
            continue
        left[i] -= 1
        yield (i, *item)
