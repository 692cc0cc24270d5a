"""Independent references for the AVE tests: a full decode of every frame and of the whole audio track."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def full_decode_per_second(path: str | Path, seconds: int = 10) -> tuple[list[np.ndarray], list[float]]:
    """Every frame decoded (no shortcut) in the order the decoder outputs them, which is presentation
    order (checked); the first frame at or after each whole second 0 .. seconds-1 (from the first frame;
    a frame is taken once even when it is the first after several seconds) is converted to RGB."""
    frames, times = [], []
    t0 = last = None
    nxt = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        for f in c.decode(s):
            assert last is None or f.pts > last, "decoder output not in presentation order"
            last = f.pts
            t0 = f.pts if t0 is None else t0
            t = (f.pts - t0) * tb
            if nxt < seconds and t >= nxt - 1e-6:
                frames.append(f.to_ndarray(format="rgb24"))
                times.append(t)
                nxt = int(t + 1e-6) + 1
    return frames, times


def full_decode_all(path: str | Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame (RGB) and its time from the first frame, in presentation order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        decoded = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(s)), key=lambda x: x[0])
    t0 = decoded[0][0]
    return [img for _, img in decoded], [(p - t0) * tb for p, _ in decoded]


def decode_audio_mono(path: str | Path) -> tuple[np.ndarray, int, int]:
    """The whole first audio track as float32 mono (channel mean), its rate and channel count."""
    with av.open(str(path)) as c:
        chunks, rate, channels = [], 0, 0
        for f in c.decode(audio=0):
            a = f.to_ndarray()  # AAC decodes to planar float: [channels, n]
            assert f.format.name == "fltp", f.format.name
            chunks.append(a.mean(axis=0, dtype=np.float32))
            rate, channels = f.sample_rate, a.shape[0]
    return np.concatenate(chunks), rate, channels


def has_reordered_frames(path: str | Path) -> bool:
    """True when packets come in an order other than presentation order (B-frames)."""
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    return pts != sorted(pts)
