"""MNIST-DVS zips (AEDAT 2.0 recordings) and an N-TIDIGITS18 HDF5 file in the real layouts, with
class-dependent events, for tests and the event-data demo."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np

from ..events import DVS_EVENT, write_aedat2

WORDS = {0: "z", 1: "1", 2: "2", 3: "3", 4: "4", 5: "5", 6: "6", 7: "7", 8: "8", 9: "9"}


def dvs_events(digit: int, rng: np.random.Generator, n: int = 3000, duration_us: int = 2_000_000) -> np.ndarray:
    """Events on a 128x128 sensor concentrated in a digit-dependent blob (position on a 4x3 grid)."""
    cx, cy = 24 + (digit % 4) * 26, 30 + (digit // 4) * 34
    ev = np.zeros(n, dtype=DVS_EVENT)
    ev["t"] = np.sort(rng.integers(0, duration_us, n))
    ev["x"] = np.clip(rng.normal(cx, 6, n), 0, 127).astype(np.int16)
    ev["y"] = np.clip(rng.normal(cy, 6, n), 0, 127).astype(np.int16)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def make_mnistdvs_raw(root: str | Path, per_class: int = 6, scales: tuple[int, ...] = (4, 8, 16), seed: int = 0,
                      as_zips: bool = True) -> Path:
    """grabbed_data<d>.zip holding grabbed_data<d>/scale<s>/mnist_<d>_scale<s>_<n>.aedat (or the folders)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for d in range(10):
        members = {}
        for s in scales:
            for n in range(per_class):
                buf = root / f"grabbed_data{d}" / f"scale{s}" / f"mnist_{d}_scale{s:02d}_{n + 1:04d}.aedat"
                write_aedat2(buf, dvs_events(d, rng))
                members[buf.relative_to(root).as_posix()] = buf
        if as_zips:
            with zipfile.ZipFile(root / f"grabbed_data{d}.zip", "w") as zf:
                for name, path in sorted(members.items()):
                    zf.write(path, name)
                    path.unlink()
            for s in scales:
                (root / f"grabbed_data{d}" / f"scale{s}").rmdir()
            (root / f"grabbed_data{d}").rmdir()
    return root


def cochlea_events(digits: str, rng: np.random.Generator, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """Channel addresses and float-second timestamps, channels banded by the spoken digit."""
    chans, times = [], []
    for i, ch in enumerate(digits):
        d = 10 if ch == "o" else (0 if ch == "z" else int(ch))
        chans.append(np.clip(rng.normal(4 + d * 5.5, 2.0, n), 0, 63).astype(np.int16))
        times.append(np.sort(rng.uniform(i * 0.5, i * 0.5 + 0.45, n)))
    return np.concatenate(chans), np.concatenate(times)


def make_ntidigits_h5(path: str | Path, per_class: int = 4, seed: int = 0, name: str = "n-tidigits.hdf5") -> Path:
    """train/test groups `<split>_addresses/<id>`, `<split>_timestamps/<id>`, `<split>_labels` (byte ids
    `<speaker>-<digits>`), with isolated digits, 'o' samples and multi-digit strings."""
    path = Path(path)
    if path.suffix not in (".hdf5", ".h5"):
        path = path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for split in ("train", "test"):
            ids = []
            for d in range(10):
                for k in range(per_class):
                    ids.append(f"{'ab'[k % 2]}{split[:2]}{k:02d}-{WORDS[d]}")
            ids += [f"mo{split[:2]}00-o", f"mm{split[:2]}00-1z3"]
            addr_g, ts_g = f.create_group(f"{split}_addresses"), f.create_group(f"{split}_timestamps")
            for sid in ids:
                a, t = cochlea_events(sid.split("-")[-1], rng)
                addr_g.create_dataset(sid, data=a)
                ts_g.create_dataset(sid, data=t)
            f.create_dataset(f"{split}_labels", data=np.array([s.encode() for s in ids]))
    return path
