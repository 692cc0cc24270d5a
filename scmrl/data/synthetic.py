"""Synthetic shards in the real `avdata prepare` format, for tests and benchmarks.

The task needs BOTH modalities: 4 classes, class = 2 * v + a, where

* the visual bit v is a colour cast of the frames (v = 0: red, v = 1: blue; static data) or where the
  events fall (v = 0: a blob on the left, v = 1: on the right; event data). A colour cast survives any
  RandomResizedCrop and flip, a blob position survives RandomCrop(28, pad 4);
* the audio bit a is where the spectrogram's energy lies (a = 0: the low half of the frequency rows,
  a = 1: the high half), or which half of the 64 cochlea channels fires (event data).

v and a are independent and balanced, so a model that sees one modality can reach at most 50% and an
audio-visual model up to 100%.

Static samples carry `frames.npy` uint8 [K, H, W, 3] (K varies per clip between 1 and `frames`),
`spec.npy` float32 [F, Tspec] (Tspec varies per clip), `cls`, `json`; event samples `visual.npy` uint16
[bins, 2, 28, 28], `audio.npy` uint16 [bins, 64], `cls`, `json`. Output is a pure function of the
arguments (byte-identical shards for the same seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avdata.errors import AvdataError
from avdata.shards.manifest import SHUFFLED_ORDER, Manifest, SplitEntry
from avdata.datasets.recipe import cls_bytes, sample_json
from avdata.shards.npy import encode_npy
from avdata.shards.tar import shard_name, write_shard

__all__ = ["CLASSES", "make_synthetic_av_shards"]

CLASSES = ["v0a0", "v0a1", "v1a0", "v1a1"]


def _static_sample(label: int, rng: np.random.Generator, frame_shape: tuple[int, int], frames: int,
                   spec_shape: tuple[int, int], signal: float, vary_frames: bool) -> dict[str, bytes]:
    v, a = divmod(label, 2)
    h, w = frame_shape
    k = int(rng.integers(1, frames + 1)) if vary_frames else frames
    img = rng.integers(0, 70, (k, h, w, 3), dtype=np.uint8)
    img[..., 0 if v == 0 else 2] += np.uint8(min(185, int(120 * signal)))  # red or blue cast
    f, t = spec_shape
    tspec = max(4, int(t + rng.integers(-t // 4, t // 4 + 1)))
    spec = rng.normal(-4.0, 0.6, (f, tspec)).astype(np.float32)
    half = f // 2
    rows = slice(0, half) if a == 0 else slice(half, f)
    spec[rows] += np.float32(2.5 * signal)
    return {"frames.npy": encode_npy(img), "spec.npy": encode_npy(spec)}


def _event_sample(label: int, rng: np.random.Generator, bins: int, signal: float) -> dict[str, bytes]:
    v, a = divmod(label, 2)
    visual = rng.poisson(0.3, (bins, 2, 28, 28)).astype(np.uint16)
    x0 = 4 if v == 0 else 16
    visual[:, :, 8:20, x0:x0 + 8] += rng.poisson(3.0 * signal, (bins, 2, 12, 8)).astype(np.uint16)
    audio = rng.poisson(0.5, (bins, 64)).astype(np.uint16)
    ch = slice(0, 32) if a == 0 else slice(32, 64)
    audio[:, ch] += rng.poisson(4.0 * signal, (bins, 32)).astype(np.uint16)
    return {"visual.npy": encode_npy(visual), "audio.npy": encode_npy(audio)}


def make_synthetic_av_shards(out_dir: str | Path, n_train: int = 256, n_val: int = 64, n_test: int = 64,
                             kind: str = "static", seed: int = 0, *, frame_shape: tuple[int, int] = (64, 85),
                             frames: int = 3, spec_shape: tuple[int, int] = (64, 24), bins: int = 4,
                             per_shard: int = 64, signal: float = 1.0, vary_frames: bool = True,
                             dataset: str | None = None) -> Path:
    """Write `<split>-NNNNNN.tar` shards (`per_shard` samples each) and manifest.json into `out_dir`.

    `frame_shape` is (short side, long side) of the stored frames (the real recipes store short side
    256, e.g. (256, 341) for CREMA-D); `spec_shape` (F, mean Tspec), e.g. (257, 150) for CREMA-D's
    reference spectrogram. K is drawn in 1..`frames` per clip (`vary_frames=False`: always `frames`).
    Splits with 0 samples are left out (like a prepare run without val)."""
    if kind not in ("static", "events"):
        raise AvdataError(f"kind must be static or events, got {kind!r}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    if kind == "static":
        features: dict[str, Any] = {
            "frames.npy": {"dtype": "uint8", "shape": ["K", frame_shape[0], frame_shape[1], 3],
                           "meaning": "RGB frames; red cast = visual bit 0, blue = 1"},
            "spec.npy": {"dtype": "float32", "shape": [spec_shape[0], "T"],
                         "meaning": "log spectrogram; energy in the low half = audio bit 0, high half = 1"}}
    else:
        features = {
            "visual.npy": {"dtype": "uint16", "shape": [bins, 2, 28, 28],
                           "meaning": "event counts; blob on the left = visual bit 0, right = 1"},
            "audio.npy": {"dtype": "uint16", "shape": [bins, 64],
                          "meaning": "cochlea event counts; low channels = audio bit 0, high = 1"}}
    features = {"cls": {"dtype": "int", "shape": [], "meaning": "class = 2 * visual bit + audio bit"},
                "json": {"dtype": "json", "shape": [], "meaning": "key, label, split"}, **features}
    options = {"kind": kind, "seed": seed, "frame_shape": list(frame_shape), "frames": frames,
               "spec_shape": list(spec_shape), "bins": bins, "per_shard": per_shard, "signal": signal,
               "vary_frames": vary_frames}
    manifest = Manifest(dataset=dataset or f"synthetic-{kind}", classes=list(CLASSES), features=features,
                        options=options)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n <= 0:
            continue
        labels = rng.permutation(np.arange(n) % len(CLASSES))
        counts = {c: 0 for c in CLASSES}
        shards = []
        for j in range(0, n, per_shard):
            samples = []
            for i in range(j, min(n, j + per_shard)):
                label = int(labels[i])
                counts[CLASSES[label]] += 1
                key = f"{split}_{i:06d}"
                fields = (_static_sample(label, rng, frame_shape, frames, spec_shape, signal, vary_frames)
                          if kind == "static" else _event_sample(label, rng, bins, signal))
                samples.append((key, {"cls": cls_bytes(label),
                                      "json": sample_json({"key": key, "label": label, "split": split}), **fields}))
            shards.append(write_shard(out / shard_name(split, j // per_shard), samples))
        manifest.splits[split] = SplitEntry.of_shards(shards, counts)
        manifest.splits[split].extra["order"] = SHUFFLED_ORDER  # labels drawn as a random permutation
    manifest.save(out)
    return out
