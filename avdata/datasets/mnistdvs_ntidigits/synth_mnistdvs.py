"""MNIST-DVS in the real layout: `grabbed_data<d>.zip` holding
`grabbed_data<d>/scale<s>/mnist_<d>_scale<ss>_<nnnn>.aedat` (scale zero-padded to 2 digits, recording
number to 4 and starting at 1, as in the published zips), AEDAT 2.0 files with a jAER header.

Realism taken from the 23 real recordings in `shared/datasets/mnistdvs/sample/` (digit 0 at scale 4,
DVS128, 2008), measured with `avdata.media.events.read_aedat2`:
- events per recording 12,596-21,357 (median 16,244): the default count is drawn uniformly from that range;
- durations 2.055-2.396 s (median 2.274 s), timestamps from 0: the default duration likewise;
- the digit sits near the centre, events at median (x, y) = (67, 63) of 128x128, its 5th-95th percentiles
  spanning about x 51-82 and y 51-75 at scale 4 (about 30 x 23 px), wider than tall as the digit drifts
  sideways by a few pixels about once a second; a central 28x28 crop keeps 80-90% of the events;
- about 3% of events fall anywhere on the sensor (x 0-127, y 1-127: row 0 never fires), and 49% are ON.
Scales 8 and 16 are drawn 2 and 4 times larger about the same centre (no real file of those scales was
at hand, so their event counts stay in the scale-4 range).

Each digit is a fixed stroke glyph (polylines), so the class is learnt from the shape, as in the real
data, and not from where events fall. Zips are written with fixed member times: the same arguments
give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avdata.media.events import AEDAT2_HEADER, DVS_EVENT, write_aedat2
from avdata.datasets.ziputil import write_zip

__all__ = ["AEDAT2_HEADER", "REAL_DURATION_US", "REAL_EVENTS", "SENSOR_CENTRE", "digit_half_size", "dvs_events",
           "glyph", "make_mnistdvs_raw", "member_name", "write_aedat2"]

#: events per real scale-4 recording: (min, max) over the 23 real files (median 16,244)
REAL_EVENTS = (12_596, 21_357)
#: real recording durations in microseconds: (min, max) (median 2,273,787)
REAL_DURATION_US = (2_054_896, 2_396_154)
#: median (x, y) of the real events on the 128x128 sensor
SENSOR_CENTRE = (67.0, 63.0)
NOISE_SHARE = 0.03
ON_SHARE = 0.49


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16) -> list[tuple[float, float]]:
    a = np.linspace(np.radians(a0), np.radians(a1), n)
    return [(cx + rx * np.cos(v), cy + ry * np.sin(v)) for v in a]


#: strokes of each digit in a [-1, 1] box, y up (the sensor's origin is at the lower left)
GLYPHS: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0, 0, 0.8, 1.0, 0, 360, 32)],
    1: [[(0.1, -1.0), (0.1, 1.0), (-0.35, 0.55)]],
    2: [_arc(0, 0.45, 0.7, 0.55, 160, -30) + [(-0.75, -1.0), (0.8, -1.0)]],
    3: [_arc(0, 0.5, 0.65, 0.5, 150, -90), _arc(0, -0.45, 0.75, 0.55, 90, -150)],
    4: [[(0.4, -1.0), (0.4, 1.0), (-0.8, -0.3), (0.85, -0.3)]],
    5: [[(0.7, 1.0), (-0.55, 1.0), (-0.65, 0.1)] + _arc(0, -0.4, 0.7, 0.55, 130, -160)],
    6: [[(0.55, 1.0), (-0.45, 0.2)] + _arc(0, -0.4, 0.65, 0.6, 160, -200, 24)],
    7: [[(-0.8, 1.0), (0.8, 1.0), (-0.2, -1.0)]],
    8: [_arc(0, 0.5, 0.55, 0.48, 0, 360, 24), _arc(0, -0.48, 0.7, 0.52, 0, 360, 24)],
    9: [_arc(0, 0.42, 0.65, 0.58, 0, 360, 24), [(0.65, 0.42), (0.35, -1.0)]],
}


def glyph(digit: int) -> np.ndarray:
    """[k, 2, 2] stroke segments ((x0, y0), (x1, y1)) of a digit in the [-1, 1] box."""
    segs = [(p, q) for line in GLYPHS[digit] for p, q in zip(line[:-1], line[1:])]
    return np.asarray(segs, dtype=np.float64)


def digit_half_size(scale: int) -> tuple[float, float]:
    """Half width and half height in pixels of a digit's glyph box at an MNIST-DVS scale (4, 8, 16):
    chosen so that a generated scale-4 zero spans the real recordings' x 51-82, y 51-75 (5th-95th
    percentile) together with its drift; larger scales grow in proportion."""
    return 15.0 * scale / 4, 10.0 * scale / 4


def dvs_events(digit: int, rng: np.random.Generator, n: int | None = None, duration_us: int | None = None,
               scale: int = 4) -> np.ndarray:
    """Events (DVS_EVENT, t in us from 0 to the duration, sorted) of one recording of a digit: points along
    its strokes (blurred by a stroke width), drifting sideways over time, plus a few sensor-wide noise
    events. n and duration_us default to draws from the real ranges (REAL_EVENTS, REAL_DURATION_US)."""
    n = int(rng.integers(REAL_EVENTS[0], REAL_EVENTS[1] + 1)) if n is None else n
    duration_us = (int(rng.integers(REAL_DURATION_US[0], REAL_DURATION_US[1] + 1)) if duration_us is None
                   else duration_us)
    ev = np.zeros(n, dtype=DVS_EVENT)
    t = np.sort(rng.integers(0, duration_us + 1, n))
    if n:
        t[0], t[-1] = 0, duration_us
    ev["t"] = t
    segs = glyph(digit)
    lengths = np.hypot(*(segs[:, 1] - segs[:, 0]).T)
    seg = rng.choice(len(segs), n, p=lengths / lengths.sum())
    u = rng.random(n)[:, None]
    pts = segs[seg, 0] + u * (segs[seg, 1] - segs[seg, 0])
    hx, hy = digit_half_size(scale)
    f = scale / 4
    # the real digit drifts sideways (centroid x +-3 px at scale 4, about one swing a second)
    phase = rng.uniform(0, 2 * np.pi)
    drift = 3.0 * f * np.cos(2 * np.pi * t / 1.1e6 + phase)
    x = SENSOR_CENTRE[0] + pts[:, 0] * hx + drift + rng.normal(0, 1.6 * f, n)
    y = SENSOR_CENTRE[1] + pts[:, 1] * hy + rng.normal(0, 1.6 * f, n)
    noise = rng.random(n) < NOISE_SHARE
    x[noise] = rng.integers(0, 128, int(noise.sum()))
    y[noise] = rng.integers(1, 128, int(noise.sum()))
    ev["x"] = np.clip(np.rint(x), 0, 127).astype(np.int16)
    ev["y"] = np.clip(np.rint(y), 1, 127).astype(np.int16)
    ev["p"] = rng.random(n) < ON_SHARE
    return ev


def member_name(digit: int, scale: int, n: int) -> str:
    """Path of recording n (1-based) inside grabbed_data<digit>.zip."""
    return f"grabbed_data{digit}/scale{scale}/mnist_{digit}_scale{scale:02d}_{n:04d}.aedat"


def make_mnistdvs_raw(root: str | Path, per_class: int = 6, scales: tuple[int, ...] = (4, 8, 16), seed: int = 0,
                      as_zips: bool = True, n_events: int | None = None) -> Path:
    """Write per_class recordings per digit and scale: the 10 zips in root (as_zips), or the unpacked
    grabbed_data<d>/scale<s>/ folders. n_events fixes every recording's event count (default: drawn from
    the real range). Returns root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for d in range(10):
        members: list[tuple[str, Path]] = []
        for s in scales:
            for n in range(1, per_class + 1):
                name = member_name(d, s, n)
                write_aedat2(root / name, dvs_events(d, rng, n_events, scale=s))
                members.append((name, root / name))
        if as_zips:
            # level 1: event streams barely compress (60% at level 1, 57% at 6) and level 6 takes 7x longer
            write_zip(root / f"grabbed_data{d}.zip", sorted(members), level=1)
            for _, path in members:
                path.unlink()
            for s in scales:
                (root / f"grabbed_data{d}" / f"scale{s}").rmdir()
            (root / f"grabbed_data{d}").rmdir()
    return root
