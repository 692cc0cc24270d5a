"""MNIST-DVS in the real layout: `grabbed_data<d>.zip` holding
`grabbed_data<d>/scale<s>/mnist_<d>_scale<ss>_<nnnn>.aedat` (scale zero-padded to 2 digits, recording
number to 4 and starting at 1, as in the published zips), AEDAT 2.0 files with a jAER header.

Each recording is `n_events` DVS128 events over about 2 s whose pixels gather in a blob at a
digit-dependent place on the 128x128 sensor (a 4x3 grid: centre x = 24 + (d % 4) * 26,
y = 30 + (d // 4) * 34, sigma 6 px), with random polarity, so the class can be learnt from where events
fall. Zips are written with fixed member times: the same arguments give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..events import AEDAT2_HEADER, DVS_EVENT, write_aedat2
from . import write_zip

__all__ = ["AEDAT2_HEADER", "blob_centre", "dvs_events", "make_mnistdvs_raw", "member_name", "write_aedat2"]


def blob_centre(digit: int) -> tuple[int, int]:
    """(x, y) on the 128x128 sensor where a digit's events gather."""
    return 24 + (digit % 4) * 26, 30 + (digit // 4) * 34


def dvs_events(digit: int, rng: np.random.Generator, n: int = 3000, duration_us: int = 2_000_000) -> np.ndarray:
    """n events (DVS_EVENT, t in us from 0, sorted) in the digit's blob."""
    cx, cy = blob_centre(digit)
    ev = np.zeros(n, dtype=DVS_EVENT)
    ev["t"] = np.sort(rng.integers(0, duration_us, n))
    ev["x"] = np.clip(rng.normal(cx, 6, n), 0, 127).astype(np.int16)
    ev["y"] = np.clip(rng.normal(cy, 6, n), 0, 127).astype(np.int16)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def member_name(digit: int, scale: int, n: int) -> str:
    """Path of recording n (1-based) inside grabbed_data<digit>.zip."""
    return f"grabbed_data{digit}/scale{scale}/mnist_{digit}_scale{scale:02d}_{n:04d}.aedat"


def make_mnistdvs_raw(root: str | Path, per_class: int = 6, scales: tuple[int, ...] = (4, 8, 16), seed: int = 0,
                      as_zips: bool = True, n_events: int = 3000) -> Path:
    """Write per_class recordings per digit and scale: the 10 zips in root (as_zips), or the unpacked
    grabbed_data<d>/scale<s>/ folders. Returns root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for d in range(10):
        members: list[tuple[str, Path]] = []
        for s in scales:
            for n in range(1, per_class + 1):
                name = member_name(d, s, n)
                write_aedat2(root / name, dvs_events(d, rng, n_events))
                members.append((name, root / name))
        if as_zips:
            write_zip(root / f"grabbed_data{d}.zip", sorted(members))
            for _, path in members:
                path.unlink()
            for s in scales:
                (root / f"grabbed_data{d}" / f"scale{s}").rmdir()
            (root / f"grabbed_data{d}").rmdir()
    return root
