"""Streaming prepared shards into fixed-size batches for the trainer.

Where shards come from (`open_shards(spec)`):

* a local shards folder (the one `avdata prepare` wrote, with its `manifest.json`);
* an http(s) URL of such a folder (`avdata.shards.location.open_location` reads its manifest);
* an explicit list of `.tar` files: a comma-separated string, a glob, or a Python list. The split of a
  shard is read from its name (`<split>-NNNNNN.tar`). When `manifest.json` lies beside them its entries
  for those files are used; otherwise the classes must be given and a manifest is built by scanning the
  tar headers (sample counts) and the first sample (field names and shapes).

How tar files are read: with :func:`scmrl.data.tar_reader.iter_tar_files` (one copy per member) and
webdataset's key grouping (`webdataset.tariterators.group_by_keys`) over a stream this module opens itself,
so that opening a shard is retried with back-off and a failure names the shard URL
(:class:`ShardReadError`, which tells the user to rerun with `--resume`). A stream that breaks in the
middle of a shard is reopened and the samples already delivered are skipped, so no sample is repeated.
A shard that yields fewer samples than its manifest entry counts as broken too.

Who reads what (:func:`slot_plan`): every sample is delivered exactly once per epoch across all ranks
and DataLoader workers. Shards (in a per-epoch seeded order for training) are dealt to ranks
(`r::world`) and then to the workers of each rank (`w::workers`) when there are enough of them; when a
rank has fewer shards than workers its workers read all of the rank's shards and keep every
`workers`-th sample; when there are fewer shards than ranks every (rank, worker) slot reads every shard
and keeps every `world * workers`-th sample. The sample count of each slot is known in advance from the
manifest (:meth:`ShardStream.batches_per_rank`), which the trainer uses to give every rank the same
step schedule. Training batches are always full, so a rank drops fewer than one batch of samples per
epoch; evaluation drops nothing.

How training batches are mixed (all seeded by seed + epoch, hence reproducible and resumable at epoch
boundaries; the shard order is shuffled every epoch): `avdata prepare` writes each split in a seeded random
order and marks it so in the manifest (:func:`written_shuffled`). Such shards are read one at a time and
each slot passes its samples through a shuffle buffer of `--shuffle-buffer` samples (default
:func:`default_shuffle_buffer`; the whole size in every worker, not a share of it) and batches them in its
worker (:class:`BufferedSlots`), a worker's stream being already mixed; the workers' last partial batches
are merged (:class:`FullBatches`). Shards not so marked (from elsewhere, or made before) may be sorted
by class: each slot reads them several at a time, drawing each next sample from a random open shard
(:func:`_interleaved`), and with workers all samples of a rank pass through one shuffle buffer in the
main process (:class:`MixedBatches`) from which every batch is drawn, so that a batch is not the product
of one worker's stream (at the cost of a copy of every sample in the main process).
A read error inside a DataLoader worker is passed to the main process as data (:class:`ShardFailure`)
and raised there with its own message.

CPU work per sample is small on purpose; augmentation runs batched on the device
(`scmrl/transforms.py`):

* static data (`frames.npy` uint8 [K, H, W, 3], `spec.npy` float32 [F, T]): the frame is picked from a
  zero-copy view of the stored array (training: a random stored frame, drawn anew every epoch from
  (seed, epoch, key); evaluation: one fixed seeded frame per clip (seed, key); `frames_per_step`: one
  frame per time step, sorted random in training, evenly spaced in evaluation). The centre square of
  side = the frame's short side is cut and resized to `base_size` x `base_size` (default 256, the
  stored short side, so normally no resize happens; cv2 INTER_AREA when shrinking, INTER_LINEAR when
  enlarging). Choice documented: the reference applies RandomResizedCrop to the whole 256 x 341 frame;
  here training crops are drawn from its centre 256 x 256 square, which keeps batches fixed-size without
  padding. Evaluation is unchanged by this: Resize(256) + CenterCrop(128) lies inside that square.
  The spectrogram is resized as an image to `image_size` x `image_size` (128 x 128) with OpenCV's
  bilinear interpolation, or, with `spec_resize="pil-bilinear"` (`--protocol reference`), with
  Pillow's antialiased bilinear filter as the authors' loader does (`scmrl/spec_resize.py`).
* event data (`visual.npy` uint16 [T, 2, 28, 28], `audio.npy` uint16 [T, 64]): the stored bins as
  float32 (when the model's T divides the stored bins, adjacent bins are summed down to T).

Batches are tuples `(audio, visual, labels)`:
static: audio float32 [B, 1, S, S], visual uint8 [B, base, base, 3] (or [B, T, base, base, 3] with
`frames_per_step`, channels last: the device permutes); events: audio float32 [B, T, 64], visual
float32 [B, T, 2, 28, 28]. With `with_keys=True` the sample keys are appended (tests).
"""

from __future__ import annotations

import glob as globlib
import http.client
import io
import json
import logging
import math
import random
import re
import tarfile
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys

from avdata.errors import AvdataError
from avdata.fetch.urls import is_url
from avdata.shards.location import ShardsLocation, open_location
from avdata.shards.manifest import MANIFEST_NAME, load_manifest

from scmrl.data.spec_resize import resize_spectrogram
from scmrl.data.tar_reader import MemberSlice, TarBoundsError, iter_tar_files

log = logging.getLogger("scmrl.data.stream")

__all__ = [
    "ShardSource", "ShardStream", "StreamConfig", "ShardReadError", "open_shards", "data_kind", "event_bins",
    "slot_plan", "make_loader", "MixedBatches", "default_shuffle_buffer", "collate", "decode_npy_view", "center_square", "choose_frames", "seeded_rng",
]

SHARD_NAME_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-\d+\.tar$")


class ShardReadError(AvdataError):
    """A shard could not be read after retries. The message names the shard URL and the way out.

    Constructed from one message string so that it survives DataLoader workers (torch re-raises a
    worker's exception as `type(exc)(message)` in the main process)."""

    @classmethod
    def for_shard(cls, url: str, cause: BaseException | str, attempts: int) -> "ShardReadError":
        return cls(f"shard {url} could not be read after {attempts} attempts ({cause}); "
                   "check the server or disk, then rerun with --resume to continue from the last checkpoint")

    def clean(self) -> "ShardReadError":
        """The original message without the DataLoader's 'Caught ... in worker' traceback wrapper."""
        text = str(self)
        marker = f"{type(self).__name__}: "
        if "Traceback" in text and marker in text:
            text = text.rsplit(marker, 1)[1].strip()
        return type(self)(text)


# --------------------------------------------------------------------------------------------- sources

def data_kind(manifest: dict[str, Any]) -> str:
    """'static' (frames + spectrogram) or 'events' (event-count bins), from the manifest's features."""
    feats = manifest.get("features", {})
    if "frames.npy" in feats and "spec.npy" in feats:
        return "static"
    if "visual.npy" in feats and "audio.npy" in feats:
        return "events"
    raise AvdataError(f"shards of {manifest.get('dataset')!r} have neither frames.npy + spec.npy nor "
                      f"visual.npy + audio.npy fields (they have: {', '.join(feats) or 'none'})")


def event_bins(manifest: dict[str, Any]) -> int:
    shape = manifest["features"]["visual.npy"].get("shape", [])
    if not shape or not isinstance(shape[0], int):
        raise AvdataError("the manifest does not say how many time bins visual.npy has")
    return int(shape[0])


@dataclass
class ShardSource:
    """The shards of a dataset: its manifest, each split's shard entries, and how to open one.

    `entries[split]` are dicts with `file`, `url` and `num_samples`. Picklable (DataLoader workers)."""

    manifest: dict[str, Any]
    entries: dict[str, list[dict[str, Any]]]
    description: str
    timeout: float = 60.0

    def shards(self, split: str) -> list[dict[str, Any]]:
        if split not in self.entries:
            raise AvdataError(f"{self.description}: no split {split!r} (it has {', '.join(self.entries) or 'none'})")
        return self.entries[split]

    def num_samples(self, split: str) -> int:
        return sum(int(e["num_samples"]) for e in self.shards(split))

    @property
    def splits(self) -> list[str]:
        return list(self.entries)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def kind(self) -> str:
        return data_kind(self.manifest)

    def open(self, entry: dict[str, Any]) -> IO[bytes]:
        """Open one shard for streaming; raises OSError / AvdataError (the caller retries)."""
        url = entry["url"]
        if is_url(url):
            import urllib.error
            import urllib.request

            try:
                return urllib.request.urlopen(url, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                raise AvdataError(f"HTTP {exc.code}") from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise AvdataError(str(getattr(exc, "reason", exc))) from exc
        return open(url, "rb", buffering=1 << 20)

    def fingerprint(self) -> str:
        """A short id of the shard lists (resume checks it has not changed)."""
        text = json.dumps({s: [(e["file"], e["num_samples"]) for e in es] for s, es in self.entries.items()},
                          sort_keys=True)
        return f"{zlib.crc32(text.encode()):08x}"


def _from_location(loc: ShardsLocation, description: str) -> ShardSource:
    entries = {split: [{"file": s["file"], "url": s["url"], "num_samples": int(s["num_samples"]),
                        "bytes": int(s["bytes"])}
                       for s in loc.shards(split)] for split in loc.manifest["splits"]}
    return ShardSource(loc.manifest, entries, description)


def _tar_list(spec: str | Sequence[str | Path]) -> list[str] | None:
    """The tar files named by `spec` (comma list, glob, or sequence), or None when spec is a folder/URL."""
    if isinstance(spec, (list, tuple)):
        items = [str(s) for s in spec]
    else:
        spec = str(spec)
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        globbed = lambda p: not is_url(p) and any(ch in p for ch in "*?[")  # noqa: E731
        if not any(p.endswith(".tar") or globbed(p) for p in parts):
            return None
        items = []
        for p in parts:
            if globbed(p):
                found = sorted(globlib.glob(p))
                if not found:
                    raise AvdataError(f"{p}: no shard files match")
                items.extend(found)
            else:
                items.append(p)
    bad = [i for i in items if not i.endswith(".tar")]
    if bad:
        raise AvdataError(f"not .tar files: {', '.join(bad)}")
    return items


def _split_of(name: str) -> str:
    m = SHARD_NAME_RE.match(name)
    if not m:
        raise AvdataError(f"{name}: shard names must look like <split>-NNNNNN.tar (train-000000.tar) "
                          "so that the split is known")
    return m.group("split")


def _scan_tar(path: str) -> tuple[int, dict[str, int], dict[str, list[int]]]:
    """(number of samples, class index counts, {field: shape of the first sample}) of a local tar."""
    keys: list[str] = []
    counts: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, fld = m.name.partition(".")
            if not keys or keys[-1] != key:
                keys.append(key)
            if fld == "cls":
                f = tar.extractfile(m)
                c = f.read().decode().strip() if f else ""
                counts[c] = counts.get(c, 0) + 1
            elif fld.endswith(".npy") and len(keys) == 1:
                f = tar.extractfile(m)
                if f is not None:
                    shapes[fld] = list(decode_npy_view(f.read()).shape)
            elif len(keys) == 1:
                shapes.setdefault(fld, [])
    return len(keys), counts, shapes


def _from_tar_list(files: list[str], classes: Sequence[str] | None) -> ShardSource:
    folders = {str(Path(f).parent) if not is_url(f) else f.rsplit("/", 1)[0] for f in files}
    desc = f"{len(files)} shard file(s)"
    manifest: dict[str, Any] | None = None
    if len(folders) == 1:
        folder = next(iter(folders))
        try:
            manifest = open_location(folder).manifest if is_url(folder) else (
                load_manifest(folder) if (Path(folder) / MANIFEST_NAME).exists() else None)
        except AvdataError:
            manifest = None
    if manifest is not None:
        by_file = {s["file"]: (split, s) for split, e in manifest["splits"].items() for s in e["shards"]}
        entries: dict[str, list[dict[str, Any]]] = {}
        for f in files:
            name = f.rsplit("/", 1)[-1]
            if name not in by_file:
                raise AvdataError(f"{f}: not listed in the manifest.json beside it")
            split, s = by_file[name]
            entries.setdefault(split, []).append({"file": name, "url": f, "num_samples": int(s["num_samples"])})
        if classes is not None and list(classes) != manifest["classes"]:
            raise AvdataError(f"the classes given ({', '.join(classes)}) differ from the manifest's "
                              f"({', '.join(manifest['classes'])})")
        return ShardSource(manifest, entries, desc)
    if classes is None:
        raise AvdataError(f"no manifest.json beside {files[0]}: give the class names (--classes a,b,c) "
                          "or point --shards at the shards folder")
    if any(is_url(f) for f in files):
        raise AvdataError("shard URLs without a manifest.json beside them cannot be sized; serve the manifest too")
    entries = {}
    features: dict[str, Any] = {}
    total_counts: dict[str, dict[str, int]] = {}
    for f in files:
        if not Path(f).exists():
            raise AvdataError(f"{f}: no such file")
        n, counts, shapes = _scan_tar(f)
        split = _split_of(Path(f).name)
        entries.setdefault(split, []).append({"file": Path(f).name, "url": f, "num_samples": n})
        for c, k in counts.items():
            name = classes[int(c)] if c.isdigit() and int(c) < len(classes) else c
            total_counts.setdefault(split, {})
            total_counts[split][name] = total_counts[split].get(name, 0) + k
        for fld, shape in shapes.items():
            features.setdefault(fld, {"shape": shape})
    manifest = {"dataset": "custom", "classes": list(classes), "features": features,
                "splits": {s: {"num_samples": sum(e["num_samples"] for e in es), "class_counts": total_counts.get(s, {}),
                               "shards": [{"file": e["file"], "num_samples": e["num_samples"]} for e in es]}
                           for s, es in entries.items()}}
    if "frames.npy" in features:  # several frame counts across clips: the first sample's is not the rule
        features["frames.npy"]["shape"] = ["K", *features["frames.npy"]["shape"][1:]]
    return ShardSource(manifest, entries, desc)


def open_shards(spec: str | Path | Sequence[str | Path], classes: Sequence[str] | None = None) -> ShardSource:
    """A shards folder, its URL, or a list of .tar files (see the module docstring)."""
    files = _tar_list(spec if isinstance(spec, (list, tuple)) else str(spec))
    if files is None:
        loc = open_location(str(spec))
        if classes is not None and list(classes) != loc.manifest["classes"]:
            raise AvdataError("the classes given differ from the manifest's")
        src = _from_location(loc, str(spec))
    else:
        src = _from_tar_list(files, classes)
    data_kind(src.manifest)
    return src


# ----------------------------------------------------------------------------------------- per sample

def seeded_rng(*parts: Any) -> random.Random:
    """A random.Random seeded from the parts (stable across processes and Python runs)."""
    return random.Random(zlib.crc32("\x1f".join(str(p) for p in parts).encode()))


def decode_npy_view(data: bytes | memoryview) -> np.ndarray:
    """A read-only, zero-copy array over .npy bytes (only the picked frame gets copied later)."""
    shape, fortran, dtype, offset = _npy_header(bytes(data[:4096]) if isinstance(data, memoryview) else data)
    count = int(np.prod(shape)) if shape else 1
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


_NPY_HEADER_RE = re.compile(
    rb"^\x93NUMPY\x01\x00(..)\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), "
    rb"'shape': \(([\d, ]*)\), \}", re.S)


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the array data) of .npy bytes (at least the header).

    The header numpy writes is matched directly (numpy's own parser evaluates it as Python source,
    a quarter of the per-sample time of the input pipeline); anything else goes to numpy."""
    m = _NPY_HEADER_RE.match(data)
    if m:
        shape = tuple(int(d) for d in m.group(4).split(b",") if d.strip())
        offset = 10 + int.from_bytes(m.group(1), "little")
        return shape, m.group(3) == b"True", np.dtype(m.group(2).decode()), offset
    bio = io.BytesIO(data)
    version = np.lib.format.read_magic(bio)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(bio)
    return shape, fortran, dtype, bio.tell()


def frame_reader(field: bytes | MemberSlice) -> tuple[int, Callable[[int], np.ndarray]]:
    """(K, frame(i) -> [H, W, 3]) of a ``frames.npy`` field ([K, H, W, 3], or one [H, W, 3] frame).
    For a member left in the file only the frames asked for are read (a third of the bytes for K=3)."""
    if isinstance(field, MemberSlice):
        head = field.read(0, min(field.size, 4096))
        shape, fortran, dtype, offset = _npy_header(head)
        if not fortran and len(shape) == 4:
            step = int(np.prod(shape[1:])) * dtype.itemsize
            if offset + shape[0] * step != field.size:
                raise ValueError(f"{field.name}: {field.size} bytes do not hold an array of shape {shape}")
            return shape[0], lambda i: field.read_array(offset + i * step, step).view(dtype).reshape(shape[1:])
        field = field.read()
    frames = decode_npy_view(field)
    if frames.ndim == 3:
        frames = frames[None]
    return frames.shape[0], frames.__getitem__


def center_square(img: np.ndarray, side: int) -> np.ndarray:
    """The centre square of side = short side, resized to side x side (INTER_AREA down, LINEAR up).

    Where no resize is needed it is a view of `img`: the batch collation copies it once, into shared
    memory (a second copy here made the data workers about a fifth slower on the H100 machine, BENCHMARKS.md)."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = img[y0:y0 + s, x0:x0 + s]
    if s == side:
        return sq
    return cv2.resize(np.ascontiguousarray(sq), (side, side),
                      interpolation=cv2.INTER_AREA if s > side else cv2.INTER_LINEAR)


def choose_frames(k: int, key: str, seed: int, epoch: int, train: bool, per_step: int | None) -> list[int]:
    """Indices of the stored frames to use for one clip.

    One frame: training draws from (seed, epoch, key), so a new frame every epoch, reproducible;
    evaluation uses one fixed frame per clip (seed, key). `per_step=T`: T frames, sorted random draws
    (without replacement when K >= T) in training, evenly spaced in evaluation."""
    rng = seeded_rng(seed, epoch if train else "eval", key)
    if per_step is None:
        return [rng.randrange(k)]
    if not train:
        return [min(k - 1, int((i + 0.5) * k / per_step)) for i in range(per_step)]
    if k >= per_step:
        return sorted(rng.sample(range(k), per_step))
    return sorted(rng.randrange(k) for _ in range(per_step))


@dataclass
class StreamConfig:
    kind: str  # static | events
    image_size: int = 128  # spectrogram side (static data); the model's input side
    base_size: int | None = None  # frame side handed to the device (default 2 * image_size = 256)
    time_steps: int = 4
    frames_per_step: bool = False
    seed: int = 42
    train: bool = False  # training: per-epoch frame choice, shuffled shard order, interleave and buffer
    shuffle_buffer: int | None = None  # samples, for the whole loader of a rank; None: default_shuffle_buffer
    # training with workers: batches drawn from one buffer over all workers (MixedBatches)? None: only for
    # shards not marked as written in random order (see make_loader)
    mix_across_workers: bool | None = None
    interleave: int = 4  # training: shards a slot reads at once, samples drawn from them at random (1 for
    # shards marked as written in random order: see make_loader)
    retries: int = 4  # attempts after the first failure to open/read a shard
    backoff: float = 0.5  # seconds before the first retry, doubled each time (max 8 s)
    with_keys: bool = False
    spec_resize: str = "linear"  # linear | pil-bilinear (scmrl.data.spec_resize)

    @property
    def frame_side(self) -> int:
        return self.base_size or 2 * self.image_size


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


def _share_group(n: int, rank: int, world: int, worker: int, workers: int) -> tuple:
    """The slots that read the same shards in the same order (see :func:`slot_plan`): their interleaving
    must be drawn from one seed so that each keeps its own every-k-th sample of one common sequence."""
    if n >= world * workers:
        return (rank, worker)
    if n >= world:
        return (rank,)
    return ()


def default_shuffle_buffer(samples: int) -> int:
    """The training shuffle buffer for a rank that reads `samples` samples an epoch: a quarter of them,
    at least 1,000 and at most 4,096 (about 1 GB of CREMA-D-format samples, held in the main process, or
    in each worker for shards written in random order, where a worker holds no more than it reads; with
    such shards a larger one buys little), never more than the rank reads."""
    return max(1, min(samples, min(4096, max(1000, samples // 4))))


def _slot_count(counts: Sequence[int], plan: tuple[list[int], int, int]) -> int:
    shards, mod, rem = plan
    total = sum(int(counts[i]) for i in shards)
    return max(0, math.ceil((total - rem) / mod))


class ShardStream(IterableDataset):
    """Samples of one split, split across ranks and DataLoader workers (see :func:`slot_plan`)."""

    def __init__(self, source: ShardSource, split: str, cfg: StreamConfig, rank: int = 0, world: int = 1) -> None:
        self.source, self.split, self.cfg = source, split, cfg
        self.entries = source.shards(split)
        self.rank, self.world = rank, world
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
        counts = [e["num_samples"] for e in self.entries]
        return slot_plan(counts, rank, self.world, worker, workers, self._order())

    def slot_samples(self, rank: int, worker: int, workers: int) -> int:
        counts = [e["num_samples"] for e in self.entries]
        return _slot_count(counts, self.plan(rank, worker, workers))

    def rank_samples(self, rank: int, workers: int = 1) -> int:
        """Samples rank `rank` reads this epoch (over all of its workers)."""
        nw = max(1, workers)
        return sum(self.slot_samples(rank, w, nw) for w in range(nw))

    def batches_per_rank(self, batch_size: int, workers: int = 1) -> list[int]:
        """Full training batches each rank yields this epoch (see :class:`MixedBatches`)."""
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
        but in :class:`MixedBatches`, over all workers of the rank."""
        shards, mod, rem = self.plan(self.rank, worker, workers)
        counts = [int(self.entries[s]["num_samples"]) for s in shards]
        offsets = [sum(counts[:i]) for i in range(len(shards))]
        if self.cfg.train and self.cfg.interleave > 1 and len(shards) > 1:
            group = _share_group(len(self.entries), self.rank, self.world, worker, workers)
            rng = seeded_rng(self.cfg.seed, self.epoch, "interleave", *group)
            indexed = _interleaved([self._indexed(s) for s in shards], counts, self.cfg.interleave, rng)
        else:
            indexed = ((i, j, sample) for i, s in enumerate(shards) for j, sample in self._indexed(s))
        # which samples a slot keeps depends on their place in the slot's shards, not on the reading order
        return (self._convert(sample) for i, j, sample in indexed if (offsets[i] + j) % mod == rem)

    def _indexed(self, shard: int) -> Iterator[tuple[int, dict[str, Any]]]:
        return enumerate(self._read(self.entries[shard]))

    def _read(self, entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """One shard's samples (webdataset tar iteration + key grouping), with retries; never repeats."""
        url = entry["url"]
        expected = int(entry.get("num_samples") or 0)
        done = 0
        failures = 0
        while True:
            seen = 0
            try:
                stream = self.source.open(entry)
                try:
                    files = ({**f, "__url__": url} for f in iter_tar_files(stream, lazy=self._lazy,
                                                                            limit=entry.get("bytes")))
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
            except TarBoundsError as exc:  # the same bytes come again on a retry: say so now
                raise ShardReadError(f"shard {url} is damaged or tampered with ({exc}); fetch it again "
                                     "(`avdata pull` checks every shard's sha256) or remove it") from exc
            except (OSError, EOFError, ValueError, tarfile.TarError, http.client.HTTPException, AvdataError) as exc:
                failures += 1
                if failures > self.cfg.retries:
                    raise ShardReadError.for_shard(url, _short(exc), failures) from exc
                delay = min(self.cfg.backoff * 2 ** (failures - 1), 8.0)
                log.warning("shard %s: %s; retrying in %.1f s", url, _short(exc), delay)
                time.sleep(delay)

    def _lazy(self, name: str) -> bool:
        """Members read on demand (local shards): the stored frames, of which one (or T) is used."""
        return self.cfg.kind == "static" and name.endswith(".frames.npy")

    def _convert(self, sample: dict[str, Any]) -> tuple:
        key = sample["__key__"]
        try:
            label = int(bytes(sample["cls"]).decode().strip())
            if self.cfg.kind == "events":
                visual = decode_npy_view(sample["visual.npy"]).astype(np.float32)
                audio = decode_npy_view(sample["audio.npy"]).astype(np.float32)
                t = self.cfg.time_steps
                if visual.shape[0] != t:
                    g = visual.shape[0] // t
                    visual = visual.reshape(t, g, *visual.shape[1:]).sum(1)
                    audio = audio.reshape(t, g, *audio.shape[1:]).sum(1)
                out: tuple = (torch.from_numpy(audio), torch.from_numpy(visual), label)
            else:
                count, frame = frame_reader(sample["frames.npy"])
                per_step = self.cfg.time_steps if self.cfg.frames_per_step else None
                idx = choose_frames(count, key, self.cfg.seed, self.epoch, self.cfg.train, per_step)
                side = self.cfg.frame_side
                if per_step is None:
                    visual = center_square(frame(idx[0]), side)  # [side, side, 3]
                    if not visual.flags.writeable:  # a view of the shard's bytes (streamed, not local)
                        visual = visual.copy()
                else:
                    visual = np.stack([center_square(frame(i), side) for i in idx])  # [T, side, side, 3]
                spec = decode_npy_view(sample["spec.npy"])
                s = self.cfg.image_size
                spec = resize_spectrogram(spec, s, self.cfg.spec_resize)
                out = (torch.from_numpy(spec)[None], torch.from_numpy(visual), label)
        except (KeyError, ValueError) as exc:
            raise AvdataError(f"sample {key} of {sample.get('__url__')}: bad or missing field ({exc})") from exc
        return out + (key,) if self.cfg.with_keys else out


def _interleaved(readers: list[Iterator[tuple[int, Any]]], counts: list[int], width: int,
                 rng: random.Random) -> Iterator[tuple[int, int, Any]]:
    """(reader index, sample index, sample) from `readers` (opened lazily, in order, at most `width` at a
    time), each next one from an open reader chosen at random with weight = the samples it has left."""
    pending = list(range(len(readers)))[::-1]
    open_: list[int] = []
    left: dict[int, int] = {}
    while open_ or pending:
        while pending and len(open_) < width:
            i = pending.pop()
            open_.append(i)
            left[i] = counts[i]
        pick = rng.choices(range(len(open_)), weights=[max(1, left[i]) for i in open_])[0]
        i = open_[pick]
        item = next(readers[i], None)
        if item is None:
            open_.pop(pick)
            continue
        left[i] -= 1
        yield (i, *item)


def _short(exc: BaseException) -> str:
    text = str(exc).split(" @ <")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class ShardFailure:
    """A read error met in a DataLoader worker, passed on as data so that the main process raises it with
    its own message (no worker traceback) and the workers shut down at once."""

    kind: str
    message: str

    def error(self) -> AvdataError:
        return ShardReadError(self.message) if self.kind == "ShardReadError" else AvdataError(self.message)


def _raise_failures(batches: Iterable) -> Iterator[tuple]:
    for batch in batches:
        if isinstance(batch, ShardFailure):
            raise batch.error()
        yield batch


class CheckedBatches:
    """A DataLoader that raises the read errors its workers pass on (see :class:`ShardFailure`)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple]:
        return _raise_failures(self.loader)


def _stack(tensors: list[Tensor]) -> Tensor:
    """``torch.stack``; in a DataLoader worker straight into shared memory, so that handing the batch to
    the main process does not copy it again (what torch's default_collate does too)."""
    if get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
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
    """Training batches for one rank, for shards that may be sorted by class (see :func:`make_loader`):
    every sample its workers deliver goes through one shuffle buffer of `buffer` samples (seeded by seed,
    epoch and rank), and batches of exactly `batch_size` are drawn from it, so a batch mixes the streams
    of all workers. The rank's last partial batch (< batch_size samples) is dropped, so every sample is
    used at most once per epoch and all but fewer than `batch_size` are.

    The workers hand over chunks of a few samples (collated into shared memory); a sample stays a view of
    its chunk until drawn, and drawn samples are stacked into the batch (one copy). A chunk is freed when
    its last sample is drawn, so the buffer holds about 4 x `buffer` samples' memory with chunks of 32.
    Without workers the samples arrive one by one and the buffer holds exactly `buffer`."""

    def __init__(self, loader: DataLoader, stream: "ShardStream", batch_size: int, buffer: int,
                 pin_memory: bool = False) -> None:
        self.loader, self.stream, self.batch_size = loader, stream, batch_size
        self.buffer, self.pin_memory = max(1, buffer), pin_memory

    def __iter__(self) -> Iterator[tuple]:
        rng = seeded_rng(self.stream.cfg.seed, self.stream.epoch, "buffer", self.stream.rank)
        buf: list[tuple] = []
        out: list[tuple] = []
        for rows in _rows(_raise_failures(self.loader)):
            for row in rows:
                if len(buf) < self.buffer:
                    buf.append(row)
                    continue
                j = rng.randrange(len(buf))
                out.append(buf[j])
                buf[j] = row
                if len(out) == self.batch_size:
                    yield self._batch(out)
                    out = []
        rng.shuffle(buf)
        for row in buf:
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
                if self.loader.num_workers:
                    # numpy's single-threaded copy: torch.stack's parallel one spins against the busy
                    # workers for CPU time (measured 20x slower on 2 cores with 2 workers)
                    np.stack([t.numpy() for t in parts], out=res.numpy())
                else:
                    torch.stack(parts, out=res)
                fields.append(res)
            else:
                fields.append(list(parts))
        if self.pin_memory:
            fields[2] = fields[2].pin_memory()
        return tuple(fields)


def _rows(items: Iterable) -> Iterator[list[tuple]]:
    """Samples from a loader that yields collated chunks (workers) or single samples (no workers)."""
    for item in items:
        if isinstance(item[2], list):  # a chunk: (audio[c], visual[c], [labels][, [keys]])
            labels = item[2]
            keys = item[3] if len(item) > 3 else None
            yield [(item[0][i], item[1][i], labels[i]) + ((keys[i],) if keys is not None else ())
                   for i in range(len(labels))]
        else:
            yield [item]


def _collate_chunk(batch: list[tuple]) -> tuple | ShardFailure:
    """A worker's chunk of training samples: stacked tensors, labels (and keys) as lists. Each tensor costs
    a shared-memory segment and a file-descriptor hand-over (about a millisecond on the 2-core machine),
    so the labels travel pickled."""
    for b in batch:
        if isinstance(b, ShardFailure):
            return b
    out = (_stack([b[0] for b in batch]), _stack([b[1] for b in batch]), [b[2] for b in batch])
    return out + ([b[3] for b in batch],) if len(batch[0]) > 3 else out


def _shuffle_buffer(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """`items` through a shuffle buffer of `size`: each arriving item replaces a random held one, which is
    passed on; the last `size` leave in random order. A ShardFailure is passed on at once."""
    buf: list = []
    for item in items:
        if isinstance(item, ShardFailure):
            yield item
            return
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(len(buf))
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


class BufferedSlots(IterableDataset):
    """The samples of each (rank, worker) slot of `stream` through a shuffle buffer of its own, of `buffer`
    samples (the loader's whole buffer, not a share of it: at most `workers` x `buffer` samples in memory),
    seeded by seed, epoch, rank and worker. Each worker then batches its own samples (DataLoader + collate
    into shared memory), so the main process copies nothing: for shards written in random order (by
    `avdata prepare`), where a worker's own stream is already mixed. See :func:`make_loader`."""

    def __init__(self, stream: "ShardStream", buffer: int) -> None:
        self.stream, self.buffer = stream, max(1, buffer)

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        st = self.stream
        rng = seeded_rng(st.cfg.seed, st.epoch, "buffer", st.rank, wid)
        return _shuffle_buffer(iter(st), self.buffer, rng)


class FullBatches:
    """Batches of exactly `batch_size` from a DataLoader whose workers batch their own samples: the partial
    batch each worker ends its epoch with is merged with the others' (concatenated, in worker order), so a
    rank drops fewer than `batch_size` samples per epoch whatever the number of workers."""

    def __init__(self, loader: DataLoader, batch_size: int) -> None:
        self.loader, self.batch_size = loader, batch_size

    def __iter__(self) -> Iterator[tuple]:
        carry: list[tuple] = []
        held = 0
        for batch in _raise_failures(self.loader):
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


# the manifest's mark, per split, of samples written in seeded random order (`avdata prepare`, synthetic shards)
SHUFFLED_ORDER = "shuffled"


def written_shuffled(source: ShardSource, split: str) -> bool:
    """Whether the manifest says this split's samples were written in a seeded random order."""
    entry = source.manifest.get("splits", {}).get(split, {})
    return isinstance(entry, dict) and entry.get("order") == SHUFFLED_ORDER


# samples a DataLoader worker hands over at a time in training (see MixedBatches): each hand-over costs
# about a millisecond, so small chunks slow the loader (8: 0.6x, 32: 0.85x the speed of 128 on 2 cores),
# while a buffered sample keeps its whole chunk alive (memory ~ H(CHUNK) = 1 + 1/2 + ... + 1/CHUNK x buffer)
CHUNK = 32


def make_loader(source: ShardSource, split: str, cfg: StreamConfig, batch_size: int, workers: int = 0,
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
        loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate, drop_last=False, pin_memory=pin_memory,
                            prefetch_factor=4 if workers else None, **common)
        return CheckedBatches(loader), ds
    buffer = cfg.shuffle_buffer
    if buffer is None:
        buffer = default_shuffle_buffer(ds.rank_samples(rank, max(1, workers)))
    across = cfg.mix_across_workers if cfg.mix_across_workers is not None else not shuffled
    if not workers or not across:
        loader = DataLoader(BufferedSlots(ds, buffer), batch_size=batch_size, collate_fn=collate, drop_last=False,
                            pin_memory=pin_memory, prefetch_factor=4 if workers else None, **common)
        return FullBatches(loader, batch_size), ds
    # chunks of CHUNK samples; about 4 batches in flight per worker, as for evaluation
    loader = DataLoader(ds, batch_size=CHUNK, collate_fn=_collate_chunk, drop_last=False,
                        prefetch_factor=max(2, 4 * batch_size // CHUNK), **common)
    return MixedBatches(loader, ds, batch_size, buffer, pin_memory), ds
