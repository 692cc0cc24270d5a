"""Synthetic shards in the real format for a task that needs BOTH modalities: class = 2 * v + a, where
the visual bit v is a red or blue tint of the frames and the audio bit a is energy in
the low or high half of the spectrogram. Either modality alone can reach at most 50%."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avdata.manifest import new_manifest, save_manifest, split_entry
from avdata.recipe import cls_bytes, sample_json
from avdata.shards import encode_npy, shard_name, write_shard

CLASSES = ["v0a0", "v0a1", "v1a0", "v1a1"]


def _sample(label: int, rng: np.random.Generator, kind: str, side: int, bins: int):
    v, a = label // 2, label % 2
    if kind == "events":
        visual = rng.poisson(0.2, (bins, 2, 28, 28)).astype(np.uint16)
        x0 = 3 if v == 0 else 17
        visual[:, :, 10:18, x0:x0 + 8] += rng.poisson(3, (bins, 2, 8, 8)).astype(np.uint16)
        audio = rng.poisson(0.5, (bins, 64)).astype(np.uint16)
        audio[:, (0 if a == 0 else 32):(32 if a == 0 else 64)] += rng.poisson(4, (bins, 32)).astype(np.uint16)
        return {"visual.npy": encode_npy(visual), "audio.npy": encode_npy(audio)}
    frames = rng.integers(0, 60, (2, side, side + side // 3, 3), dtype=np.uint8)
    frames[..., 0 if v == 0 else 2] += 150  # red or blue tint: survives any crop
    spec = rng.normal(-4, 0.5, (64, 24)).astype(np.float32)
    spec[(0 if a == 0 else 32):(32 if a == 0 else 64)] += 3.0
    return {"frames.npy": encode_npy(frames), "spec.npy": encode_npy(spec)}


def make_synthetic_av_shards(out: str | Path, n_train: int = 256, n_val: int = 64, n_test: int = 64,
                             kind: str = "static", seed: int = 0, side: int = 64, bins: int = 4,
                             per_shard: int = 64) -> Path:
    out = Path(out)
    rng = np.random.default_rng(seed)
    feats = ({"frames.npy": {"dtype": "uint8", "shape": [2, side, "W", 3]}, "spec.npy": {"dtype": "float32", "shape": [64, 24]}}
             if kind == "static" else
             {"visual.npy": {"dtype": "uint16", "shape": [bins, 2, 28, 28]}, "audio.npy": {"dtype": "uint16", "shape": [bins, 64]}})
    m = new_manifest(f"synthetic-{kind}", {"seed": seed}, CLASSES, {"cls": {"dtype": "int"}, "json": {"dtype": "json"}, **feats})
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n == 0:
            continue
        samples, counts = [], {c: 0 for c in CLASSES}
        for i in range(n):
            label = i % 4
            counts[CLASSES[label]] += 1
            fields = {"cls": cls_bytes(label), "json": sample_json({"label": label, "split": split}),
                      **_sample(label, rng, kind, side, bins)}
            samples.append((f"{split}_{i:05d}", fields))
        shards = [write_shard(out / shard_name(split, j // per_shard), samples[j:j + per_shard]).to_dict()
                  for j in range(0, n, per_shard)]
        m["splits"][split] = split_entry(shards, counts)
    save_manifest(out, m)
    return out
