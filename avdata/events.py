"""Event data: our own AEDAT 2.0 reader (tonic 1.7's fails on real headers and swaps x and y), the
N-TIDIGITS18 HDF5 layout, and binning events into T time windows as integer counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .errors import MediaError

DVS_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])
AEDAT2_MAGIC = b"#!AER-DAT2.0"


def read_aedat2(path: str | Path, allow_truncated: bool = False) -> np.ndarray:
    """DVS128 events of an AEDAT 2.0 file: header lines start with '#', then big-endian uint32 pairs
    (address, timestamp in us); x = (a & 0xFE) >> 1, y = (a & 0x7F00) >> 8, p = a & 1. Times are made
    relative to the first event."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(path, f"cannot read ({exc.strerror})") from exc
    if not data.startswith(b"#!AER-DAT"):
        raise MediaError(path, "not an AEDAT file (no '#!AER-DAT' first line)")
    if not data.startswith(AEDAT2_MAGIC):
        raise MediaError(path, f"unsupported AEDAT version {data[:16]!r}; only 2.0 is read")
    pos = 0
    while pos < len(data) and data[pos:pos + 1] == b"#":
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise MediaError(path, "header never ends (file cut inside the header)")
        pos = nl + 1
    body = data[pos:]
    extra = len(body) % 8
    if extra:
        if not allow_truncated:
            raise MediaError(path, f"truncated: {extra} trailing bytes after {len(body) // 8} whole events")
        body = body[: len(body) - extra]
    raw = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    addr, ts = raw[:, 0], raw[:, 1].astype(np.int64)
    out = np.empty(len(raw), dtype=DVS_EVENT)
    out["x"] = (addr & 0xFE) >> 1
    out["y"] = (addr & 0x7F00) >> 8
    out["p"] = addr & 1
    out["t"] = ts - ts[0] if len(ts) else ts
    return out


def write_aedat2(path: str | Path, events: np.ndarray, header_lines: list[str] | None = None) -> None:
    """Write DVS128 events (fields t, x, y, p) as AEDAT 2.0 with a jAER-style header."""
    lines = header_lines or [
        "#!AER-DAT2.0",
        "# This is a raw AE data file - do not edit",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        "# Timestamps tick is 1 us",
        "# created Thu Jan 01 00:00:00 CET 2015",
    ]
    addr = (events["y"].astype(np.uint32) << 8) | (events["x"].astype(np.uint32) << 1) | events["p"].astype(np.uint32)
    body = np.empty((len(events), 2), dtype=">u4")
    body[:, 0], body[:, 1] = addr, events["t"].astype(np.uint32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii") + body.tobytes())


def reduce_to_sensor(events: np.ndarray, size: int = 28, method: str = "downsample", src: int = 128) -> np.ndarray:
    """Map 128x128 DVS events to a size x size sensor: 'downsample' scales coordinates (x * size // src),
    'crop' keeps the central size x size window (and drops the rest)."""
    out = events.copy()
    if method == "downsample":
        out["x"] = events["x"].astype(np.int32) * size // src
        out["y"] = events["y"].astype(np.int32) * size // src
        return out
    if method == "crop":
        off = (src - size) // 2
        keep = ((events["x"] >= off) & (events["x"] < off + size) & (events["y"] >= off) & (events["y"] < off + size))
        out = out[keep]
        out["x"] -= off
        out["y"] -= off
        return out
    raise ValueError(f"method must be 'downsample' or 'crop', got {method!r}")


def time_bins(t: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each time: equal windows over [t.min(), t.max()], the last one closed."""
    t = np.asarray(t, dtype=np.float64)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = t.min(), t.max()
    if hi <= lo:
        return np.zeros(t.size, dtype=np.int64)
    idx = np.floor((t - lo) / (hi - lo) * bins).astype(np.int64)
    return np.minimum(idx, bins - 1)


def _counts(flat: np.ndarray, length: int) -> np.ndarray:
    counts = np.bincount(flat, minlength=length)
    if counts.size and counts.max() > np.iinfo(np.uint16).max:
        raise ValueError("an event count exceeds 65535 in one bin; use more bins")
    return counts.astype(np.uint16)


def bin_dvs(events: np.ndarray, bins: int, size: int) -> np.ndarray:
    """uint16 [bins, 2, size, size] event counts; channel 0 = OFF (p=0), 1 = ON (p=1)."""
    b = time_bins(events["t"], bins)
    flat = ((b * 2 + events["p"].astype(np.int64)) * size + events["y"].astype(np.int64)) * size + events["x"]
    return _counts(flat.astype(np.int64), bins * 2 * size * size).reshape(bins, 2, size, size)


def bin_channels(timestamps: np.ndarray, addresses: np.ndarray, bins: int, n_channels: int = 64) -> np.ndarray:
    """uint16 [bins, n_channels] counts of cochlea events per channel and time window."""
    addresses = np.asarray(addresses).astype(np.int64)
    if addresses.size and (addresses.min() < 0 or addresses.max() >= n_channels):
        raise ValueError(f"channel addresses outside 0..{n_channels - 1}")
    b = time_bins(timestamps, bins)
    return _counts(b * n_channels + addresses, bins * n_channels).reshape(bins, n_channels)


def read_ntidigits(h5_path: str | Path, split: str) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """(sample id, digit string, channel addresses, timestamps in s) of every sample of a split; the digit
    string is the id's last '-' field."""
    with h5py.File(h5_path, "r") as f:
        for raw_id in f[f"{split}_labels"][()]:
            sid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            yield (sid, sid.split("-")[-1], np.asarray(f[f"{split}_addresses"][sid][()]),
                   np.asarray(f[f"{split}_timestamps"][sid][()], dtype=np.float64))
