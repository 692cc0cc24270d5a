"""Event data: our own AEDAT 2.0 reader and writer (tonic 1.7's read_dvs_128 swaps x and y and fails on
real headers), sensor reduction, and binning events into T time windows as integer counts.

AEDAT 2.0 (jAER): ASCII header lines starting with '#' (the first is `#!AER-DAT2.0`), then big-endian
uint32 pairs (address, timestamp in microseconds). DVS128 address bits: x = (a & 0xFE) >> 1,
y = (a & 0x7F00) >> 8, polarity = a & 1 (1 = ON), bit 15 = external (special) event, which is not a pixel
event and is dropped by default. Origin at the lower left, as the sensor reports it; nothing is flipped.

Binning (`time_bins`): T equal windows over [t_min, t_max] of the sample, the last one closed (the last
event lands in bin T - 1); integer timestamps are binned with exact integer arithmetic, float ones
(N-TIDIGITS seconds) in float64. All counts come from one `np.bincount`, no Python loop over events.
Budgets (events per file, counts per bin) are in `avdata.media.budget`; N-TIDIGITS18's HDF5 file is
read by `avdata.media.ntidigits`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avdata.errors import AvdataError, MediaError
from avdata.media import budget
from avdata.media.files import require_media_file

DVS_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])
AEDAT2_MAGIC = b"#!AER-DAT2.0"
EXTERNAL_EVENT_BIT = 0x8000
HEADER_LIMIT = 1 << 20  # bytes of '#' lines read before the events; a real header is about 200

AEDAT2_HEADER = [
    "#!AER-DAT2.0",
    "# This is a raw AE data file - do not edit",
    "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
    "# Timestamps tick is 1 us",
    "# created Thu Jan 01 00:00:00 CET 2015",
    "# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128",
]


class EventRangeError(AvdataError):
    """Events that cannot be binned as the shard format says: a count over a bin's uint16, a coordinate or
    channel outside the sensor. Bad input, not a bug: a recipe skips the clip with this message."""


def read_aedat2(path: str | Path, allow_truncated: bool = False, drop_external: bool = True) -> np.ndarray:
    """DVS128 events (DVS_EVENT: t in us relative to the first event, x, y, p) of an AEDAT 2.0 file.

    A file that ends inside an event (size not a whole number of 8-byte events after the header) raises
    MediaError("truncated: ...") unless allow_truncated, which drops the partial event. Timestamps that
    wrap around 2**32 us are unwrapped. The header is read in a bounded piece and the event count comes
    from the file's size, so a file over `budget.MAX_EVENTS_PER_FILE` is refused (MediaError)
    before its body is read.
    """
    path = Path(path)
    require_media_file(path, "AEDAT recording")  # a FIFO would block, /dev/zero never end
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_LIMIT)
            pos = _header_end(path, head)
            n, extra = divmod(max(os.fstat(f.fileno()).st_size - pos, 0), 8)
            if extra and not allow_truncated:
                raise MediaError(path, f"truncated: {extra} trailing bytes after {n} whole events")
            budget.check_event_count(path, n)
            f.seek(pos)
            body = f.read(n * 8)
    except FileNotFoundError as exc:
        raise MediaError(path, "file not found") from exc
    except OSError as exc:
        raise MediaError(path, f"cannot read ({exc.strerror})") from exc
    if len(body) != n * 8:
        raise MediaError(path, "file shrank while being read")
    raw = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    addr = raw[:, 0].astype(np.uint32)
    ts = raw[:, 1].astype(np.int64)
    del raw, body
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


def _header_end(path: Path, head: bytes) -> int:
    """Offset of the first event: after the '#' lines at the start of `head` (the file's first bytes)."""
    if head.startswith(b"version https://git-lfs"):
        raise MediaError(path, "Git LFS pointer stub, not the recording")
    if not head.startswith(b"#!AER-DAT"):
        raise MediaError(path, "not an AEDAT file (no '#!AER-DAT' first line)")
    if not head.startswith(AEDAT2_MAGIC):
        raise MediaError(path, f"unsupported AEDAT version {head[:16]!r}; only 2.0 is read")
    pos = 0
    while pos < len(head) and head[pos:pos + 1] == b"#":
        nl = head.find(b"\n", pos)
        if nl < 0:
            if len(head) < HEADER_LIMIT:
                raise MediaError(path, "header never ends (file cut inside the header)")
            raise MediaError(path, f"header longer than {HEADER_LIMIT:,} bytes (a real one is about 200)")
        pos = nl + 1
    if pos == len(head) == HEADER_LIMIT:
        raise MediaError(path, f"header longer than {HEADER_LIMIT:,} bytes (a real one is about 200)")
    return pos


def dvs128_address(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """uint32 DVS128 addresses: y << 8 | x << 1 | p."""
    x, y, p = (np.asarray(v).astype(np.uint32) for v in (x, y, p))
    if x.size and (x.max() > 127 or y.max() > 127 or p.max() > 1):
        raise EventRangeError("DVS128 events need 0 <= x, y < 128 and p in {0, 1}")
    return (y << 8) | (x << 1) | p


def write_aedat2(path: str | Path, events: np.ndarray, header_lines: list[str] | None = None) -> None:
    """Write DVS128 events (fields t in us, x, y, p) as AEDAT 2.0 with a jAER-style header (CRLF lines)."""
    lines = header_lines or AEDAT2_HEADER
    if not lines[0].startswith("#!AER-DAT2.0") or not all(line.startswith("#") for line in lines):
        raise AvdataError("AEDAT 2.0 header lines must start with '#', the first with '#!AER-DAT2.0'")
    t = np.asarray(events["t"], dtype=np.int64)
    if t.size and (t.min() < 0 or t.max() >= 1 << 32):
        raise EventRangeError("AEDAT 2.0 timestamps are uint32 microseconds")
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
    raise AvdataError(f"--sensor must be 'downsample' or 'crop', got {method!r}")


def time_bins(t: np.ndarray, bins: int) -> np.ndarray:
    """int64 bin index of each time: `bins` equal windows over [t.min(), t.max()], the last one closed.
    Integer times use exact integer arithmetic ((t - lo) * bins // (hi - lo)) where int64 holds the product;
    floats (and integer spans too long for that) use float64. A NaN or infinite time is EventRangeError."""
    if bins < 1:
        raise AvdataError(f"--bins must be >= 1, got {bins}")
    t = np.asarray(t)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(t.dtype, np.integer) and int(t.max()) - int(t.min()) <= (1 << 62) // bins:
        ti = t.astype(np.int64)
        lo, hi = int(ti.min()), int(ti.max())
        if hi <= lo:
            return np.zeros(t.size, dtype=np.int64)
        idx = (ti - lo) * bins // (hi - lo)
    else:
        tf = t.astype(np.float64)
        if not np.isfinite(tf).all():
            raise EventRangeError("a timestamp is NaN or infinite")
        lo, hi = tf.min(), tf.max()
        if not hi > lo:
            return np.zeros(t.size, dtype=np.int64)
        idx = np.floor((tf - lo) / (hi - lo) * bins).astype(np.int64)
    return np.minimum(idx, bins - 1)


def _counts(flat: np.ndarray, length: int) -> np.ndarray:
    counts = np.bincount(flat, minlength=length)
    if counts.size and counts.max() > budget.MAX_COUNT_PER_BIN:
        raise EventRangeError(f"{int(counts.max()):,} events in one bin, over the uint16 count of "
                              f"{budget.MAX_COUNT_PER_BIN}; more --bins may fit them")
    return counts.astype(np.uint16)


def bin_dvs(events: np.ndarray, bins: int, size: int) -> np.ndarray:
    """uint16 [bins, 2, size, size] event counts; channel 0 = OFF (p=0), 1 = ON (p=1); index [.., y, x]."""
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = events["p"].astype(np.int64)
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= size or y.max() >= size):
        raise EventRangeError(f"event coordinates outside the {size}x{size} sensor; reduce_to_sensor first")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise EventRangeError("polarity must be 0 or 1")
    b = time_bins(events["t"], bins)
    flat = ((b * 2 + p) * size + y) * size + x
    return _counts(flat, bins * 2 * size * size).reshape(bins, 2, size, size)


def bin_channels(timestamps: np.ndarray, addresses: np.ndarray, bins: int, n_channels: int = 64) -> np.ndarray:
    """uint16 [bins, n_channels] counts of cochlea events per time window and channel."""
    addresses = np.asarray(addresses).astype(np.int64)
    if len(addresses) != len(timestamps):
        raise EventRangeError(f"{len(addresses)} addresses but {len(timestamps)} timestamps")
    if addresses.size and (addresses.min() < 0 or addresses.max() >= n_channels):
        raise EventRangeError(f"channel addresses {int(addresses.min())}..{int(addresses.max())} outside the "
                              f"{n_channels}-channel range 0..{n_channels - 1}")
    b = time_bins(timestamps, bins)
    return _counts(b * n_channels + addresses, bins * n_channels).reshape(bins, n_channels)
