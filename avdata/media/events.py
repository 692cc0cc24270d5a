"""Event data: our own AEDAT 2.0 reader and writer (tonic 1.7's read_dvs_128 swaps x and y and fails on
real headers), the N-TIDIGITS18 HDF5 layout, sensor reduction, and binning events into T time windows
as integer counts.

AEDAT 2.0 (jAER): ASCII header lines starting with '#' (the first is `#!AER-DAT2.0`), then big-endian
uint32 pairs (address, timestamp in microseconds). DVS128 address bits: x = (a & 0xFE) >> 1,
y = (a & 0x7F00) >> 8, polarity = a & 1 (1 = ON), bit 15 = external (special) event, which is not a pixel
event and is dropped by default. Origin at the lower left, as the sensor reports it; nothing is flipped.

Binning (`time_bins`): T equal windows over [t_min, t_max] of the sample, the last one closed (the last
event lands in bin T - 1); integer timestamps are binned with exact integer arithmetic, float ones
(N-TIDIGITS seconds) in float64. All counts come from one `np.bincount`, no Python loop over events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from avdata.errors import MediaError

DVS_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])
AEDAT2_MAGIC = b"#!AER-DAT2.0"
EXTERNAL_EVENT_BIT = 0x8000

AEDAT2_HEADER = [
    "#!AER-DAT2.0",
    "# This is a raw AE data file - do not edit",
    "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
    "# Timestamps tick is 1 us",
    "# created Thu Jan 01 00:00:00 CET 2015",
    "# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128",
]


def read_aedat2(path: str | Path, allow_truncated: bool = False, drop_external: bool = True) -> np.ndarray:
    """DVS128 events (DVS_EVENT: t in us relative to the first event, x, y, p) of an AEDAT 2.0 file.

    A file that ends inside an event (size not a whole number of 8-byte events after the header) raises
    MediaError("truncated: ...") unless allow_truncated, which drops the partial event. Timestamps that
    wrap around 2**32 us are unwrapped.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise MediaError(path, "file not found") from exc
    except OSError as exc:
        raise MediaError(path, f"cannot read ({exc.strerror})") from exc
    if data.startswith(b"version https://git-lfs"):
        raise MediaError(path, "Git LFS pointer stub, not the recording")
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
    body = memoryview(data)[pos:]
    extra = len(body) % 8
    if extra:
        if not allow_truncated:
            raise MediaError(path, f"truncated: {extra} trailing bytes after {len(body) // 8} whole events")
        body = body[: len(body) - extra]
    raw = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    addr = raw[:, 0].astype(np.uint32)
    ts = raw[:, 1].astype(np.int64)
    if len(ts) > 1:
        back = np.diff(ts) < -(1 << 31)  # the 32-bit microsecond counter wrapped
        if back.any():
            ts[1:] += np.cumsum(back, dtype=np.int64) << 32
    if drop_external:
        keep = (addr & EXTERNAL_EVENT_BIT) == 0
        if not keep.all():
            addr, ts = addr[keep], ts[keep]
    out = np.empty(len(addr), dtype=DVS_EVENT)
    out["x"] = (addr & 0xFE) >> 1
    out["y"] = (addr & 0x7F00) >> 8
    out["p"] = addr & 1
    out["t"] = ts - ts[0] if len(ts) else ts
    return out


def dvs128_address(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """uint32 DVS128 addresses: y << 8 | x << 1 | p."""
    x, y, p = (np.asarray(v).astype(np.uint32) for v in (x, y, p))
    if x.size and (x.max() > 127 or y.max() > 127 or p.max() > 1):
        raise ValueError("DVS128 events need 0 <= x, y < 128 and p in {0, 1}")
    return (y << 8) | (x << 1) | p


def write_aedat2(path: str | Path, events: np.ndarray, header_lines: list[str] | None = None) -> None:
    """Write DVS128 events (fields t in us, x, y, p) as AEDAT 2.0 with a jAER-style header (CRLF lines)."""
    lines = header_lines or AEDAT2_HEADER
    if not lines[0].startswith("#!AER-DAT2.0") or not all(line.startswith("#") for line in lines):
        raise ValueError("AEDAT 2.0 header lines must start with '#', the first with '#!AER-DAT2.0'")
    t = np.asarray(events["t"], dtype=np.int64)
    if t.size and (t.min() < 0 or t.max() >= 1 << 32):
        raise ValueError("AEDAT 2.0 timestamps are uint32 microseconds")
    body = np.empty((len(events), 2), dtype=">u4")
    body[:, 0] = dvs128_address(events["x"], events["y"], events["p"])
    body[:, 1] = t.astype(np.uint32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii") + body.tobytes())


def reduce_to_sensor(events: np.ndarray, size: int = 28, method: str = "downsample", src: int = 128) -> np.ndarray:
    """Map src x src DVS events to a size x size sensor.

    'downsample': every event kept, coordinates scaled down with integer arithmetic (x * size // src), so
    a block of about (src / size)^2 pixels adds up into one; 'crop': only events inside the central
    size x size window [(src - size) // 2, (src - size) // 2 + size) are kept, shifted to start at 0.
    """
    out = events.copy()
    if method == "downsample":
        out["x"] = events["x"].astype(np.int32) * size // src
        out["y"] = events["y"].astype(np.int32) * size // src
        return out
    if method == "crop":
        off = (src - size) // 2
        keep = (events["x"] >= off) & (events["x"] < off + size) & (events["y"] >= off) & (events["y"] < off + size)
        out = out[keep]
        out["x"] -= off
        out["y"] -= off
        return out
    raise ValueError(f"method must be 'downsample' or 'crop', got {method!r}")


def time_bins(t: np.ndarray, bins: int) -> np.ndarray:
    """int64 bin index of each time: `bins` equal windows over [t.min(), t.max()], the last one closed.
    Integer times use exact integer arithmetic ((t - lo) * bins // (hi - lo)); floats use float64."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    t = np.asarray(t)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(t.dtype, np.integer):
        ti = t.astype(np.int64)
        lo, hi = int(ti.min()), int(ti.max())
        if hi <= lo:
            return np.zeros(t.size, dtype=np.int64)
        idx = (ti - lo) * bins // (hi - lo)
    else:
        tf = t.astype(np.float64)
        lo, hi = tf.min(), tf.max()
        if not hi > lo:
            return np.zeros(t.size, dtype=np.int64)
        idx = np.floor((tf - lo) / (hi - lo) * bins).astype(np.int64)
    return np.minimum(idx, bins - 1)


def _counts(flat: np.ndarray, length: int) -> np.ndarray:
    counts = np.bincount(flat, minlength=length)
    if counts.size and counts.max() > np.iinfo(np.uint16).max:
        raise ValueError("an event count exceeds 65535 in one bin; use more bins")
    return counts.astype(np.uint16)


def bin_dvs(events: np.ndarray, bins: int, size: int) -> np.ndarray:
    """uint16 [bins, 2, size, size] event counts; channel 0 = OFF (p=0), 1 = ON (p=1); index [.., y, x]."""
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = events["p"].astype(np.int64)
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= size or y.max() >= size):
        raise ValueError(f"event coordinates outside the {size}x{size} sensor; reduce_to_sensor first")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("polarity must be 0 or 1")
    b = time_bins(events["t"], bins)
    flat = ((b * 2 + p) * size + y) * size + x
    return _counts(flat, bins * 2 * size * size).reshape(bins, 2, size, size)


def bin_channels(timestamps: np.ndarray, addresses: np.ndarray, bins: int, n_channels: int = 64) -> np.ndarray:
    """uint16 [bins, n_channels] counts of cochlea events per time window and channel."""
    addresses = np.asarray(addresses).astype(np.int64)
    if len(addresses) != len(timestamps):
        raise ValueError(f"{len(addresses)} addresses but {len(timestamps)} timestamps")
    if addresses.size and (addresses.min() < 0 or addresses.max() >= n_channels):
        raise ValueError(f"channel addresses outside 0..{n_channels - 1}")
    b = time_bins(timestamps, bins)
    return _counts(b * n_channels + addresses, bins * n_channels).reshape(bins, n_channels)


def ntidigits_label(sample_id: str) -> str:
    """The spoken digit string of an N-TIDIGITS18 id: its last '-' field ('o' = oh, 'z' = zero)."""
    return sample_id.split("-")[-1]


def read_ntidigits(h5_path: str | Path, split: str) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """(sample id, digit string, int64 channel addresses, float64 timestamps in s) of every sample of a
    split, in the order of `{split}_labels`; the layout is `{split}_labels` (byte-string ids),
    `{split}_addresses/<id>` and `{split}_timestamps/<id>` (as tonic's NTIDIGITS18 reads it)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        f = h5py.File(h5_path, "r")
    except OSError as exc:
        raise MediaError(h5_path, f"not a readable HDF5 file ({exc})") from exc
    with f:
        for name in (f"{split}_labels", f"{split}_addresses", f"{split}_timestamps"):
            if name not in f:
                raise MediaError(h5_path, f"not the N-TIDIGITS18 layout: no '{name}'")
        addr_g, ts_g = f[f"{split}_addresses"], f[f"{split}_timestamps"]
        for raw_id in f[f"{split}_labels"][()]:
            sid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if sid not in addr_g or sid not in ts_g:
                raise MediaError(h5_path, f"sample {sid!r} lacks addresses or timestamps")
            addr = np.asarray(addr_g[sid][()]).astype(np.int64)
            ts = np.asarray(ts_g[sid][()], dtype=np.float64)
            if addr.shape != ts.shape:
                raise MediaError(h5_path, f"sample {sid!r}: {addr.size} addresses but {ts.size} timestamps")
            yield sid, ntidigits_label(sid), addr, ts
