"""Streaming shards (local folder or http URL) into fixed-size batches.

CPU work per sample is kept small: pick the frame(s) for this epoch, crop the centre square and resize
it to a fixed base size, resize the spectrogram to the model's input size. Augmentation runs later on
the device, batched (`scmrl/transforms.py`).

Every sample is seen exactly once per epoch across ranks and workers: shards are dealt out to
(rank, worker) slots when there are enough of them, otherwise every slot reads all shards and keeps
every n-th sample.
"""

from __future__ import annotations

import random
import tarfile
import time
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avdata.errors import AvdataError
from avdata.location import ShardsLocation, open_location
from avdata.shards import decode_npy, iter_shard


def data_kind(manifest: dict[str, Any]) -> str:
    feats = manifest["features"]
    if "frames.npy" in feats and "spec.npy" in feats:
        return "static"
    if "visual.npy" in feats and "audio.npy" in feats:
        return "events"
    raise AvdataError(f"shards of {manifest['dataset']!r} have neither frames+spec nor visual+audio event fields")


def event_bins(manifest: dict[str, Any]) -> int:
    return int(manifest["features"]["visual.npy"]["shape"][0])


@dataclass
class StreamConfig:
    kind: str
    image_size: int = 128  # model input side (static data)
    time_steps: int = 4
    frames_per_step: bool = False
    seed: int = 42
    shuffle_buffer: int = 0  # 0: no shuffling (evaluation)
    retries: int = 3


def _rng(*parts: Any) -> random.Random:
    return random.Random(zlib.crc32(":".join(str(p) for p in parts).encode()))


def center_square(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = img[y0:y0 + s, x0:x0 + s]
    if s == side:
        return sq
    return cv2.resize(sq, (side, side), interpolation=cv2.INTER_AREA if s > side else cv2.INTER_LINEAR)


class ShardStream(IterableDataset):
    """Yields (audio, visual, label) tensors from the shards of one split."""

    def __init__(self, location: ShardsLocation, split: str, cfg: StreamConfig, rank: int = 0, world: int = 1):
        self.location, self.split, self.cfg = location, split, cfg
        self.shards = location.shards(split)
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Data order, frame choice and shuffling depend on (seed, epoch) only, so a resumed run repeats them."""
        self.epoch = epoch

    def _slots(self) -> tuple[int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        return self.rank * nw + wid, self.world * nw

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        slot, nslots = self._slots()
        shards = list(self.shards)
        if self.cfg.shuffle_buffer:
            _rng(self.cfg.seed, self.epoch, "shards").shuffle(shards)
        if self.world == 1 and len(shards) >= nslots:
            mine, sample_slot = shards[slot::nslots], None
        # several ranks: every rank must make the same number of steps (DDP syncs each one), so samples
        # are dealt out one by one, giving every (rank, worker) slot the same count within one
        else:
            mine, sample_slot = shards, slot
        buf: list = []
        rng = _rng(self.cfg.seed, self.epoch, "buffer", slot)
        index = 0
        for shard in mine:
            for key, fields in self._read(shard):
                if sample_slot is not None:
                    index += 1
                    if (index - 1) % nslots != sample_slot:
                        continue
                item = self._convert(key, fields)
                if not self.cfg.shuffle_buffer:
                    yield item
                    continue
                if len(buf) < self.cfg.shuffle_buffer:
                    buf.append(item)
                    continue
                j = rng.randrange(len(buf))
                buf[j], item = item, buf[j]
                yield item
        rng.shuffle(buf)
        yield from buf

    def _read(self, shard: dict[str, Any]) -> Iterator[tuple[str, dict[str, bytes]]]:
        """A shard's samples, retrying a failed read from the start but never yielding a sample twice."""
        done = 0
        for attempt in range(self.cfg.retries + 1):
            seen = 0
            try:
                with self.location.open(shard["file"]) as f:
                    for key, fields in iter_shard(f):
                        seen += 1
                        if seen > done:
                            done = seen
                            yield key, fields
                return
            except (OSError, EOFError, AvdataError, tarfile.TarError) as exc:
                if attempt == self.cfg.retries:
                    raise ShardReadError(shard["url"], exc) from exc
                time.sleep(min(0.2 * 2**attempt, 2.0))

    def _convert(self, key: str, fields: dict[str, bytes]) -> tuple[torch.Tensor, torch.Tensor, int]:
        label = int(fields["cls"])
        if self.cfg.kind == "events":
            visual = torch.from_numpy(decode_npy(fields["visual.npy"]).astype(np.float32))
            audio = torch.from_numpy(decode_npy(fields["audio.npy"]).astype(np.float32))
            return audio, visual, label
        frames = decode_npy(fields["frames.npy"])
        base = 2 * self.cfg.image_size
        rng = _rng(self.cfg.seed, self.epoch, key)
        k = frames.shape[0]
        if self.cfg.frames_per_step:
            idx = sorted(rng.randrange(k) for _ in range(self.cfg.time_steps))
            visual = np.stack([center_square(frames[i], base) for i in idx])  # [T, base, base, 3]
            visual = torch.from_numpy(visual).permute(0, 3, 1, 2).contiguous()
        else:
            i = rng.randrange(k) if self.cfg.shuffle_buffer else k // 2
            visual = torch.from_numpy(center_square(frames[i], base)).permute(2, 0, 1).contiguous()
        spec = decode_npy(fields["spec.npy"]).astype(np.float32)
        spec = cv2.resize(spec, (self.cfg.image_size, self.cfg.image_size), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(spec)[None], visual, label


class ShardReadError(AvdataError):
    def __init__(self, url: str, cause: Exception | None) -> None:
        self.url = url
        super().__init__(f"{url}: could not be read ({cause}); check the server or disk, then rerun with --resume")


def slot_batches(n: int, rank: int, world: int, workers: int, batch: int) -> int:
    """Full batches a rank gets per epoch when n samples are dealt one by one to world x workers slots."""
    nw = max(1, workers)
    nslots = world * nw
    total = 0
    for w in range(nw):
        slot = rank * nw + w
        total += (n // nslots + (1 if slot < n % nslots else 0)) // batch
    return total


def make_loader(location: ShardsLocation, split: str, cfg: StreamConfig, batch_size: int, workers: int,
                train: bool, rank: int = 0, world: int = 1, pin_memory: bool = False) -> tuple[DataLoader, ShardStream]:
    ds = ShardStream(location, split, cfg, rank, world)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, drop_last=train, pin_memory=pin_memory,
                        persistent_workers=False)
    return loader, ds


def open_shards(spec: str) -> ShardsLocation:
    return open_location(spec)
