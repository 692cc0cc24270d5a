"""Probing and decoding video frames with PyAV.

Only the frames we keep are converted to RGB and resized, and decoding stops once the last needed frame
is taken, so preparing a clip costs little more than decoding it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import MediaError
from .lfs import is_lfs_pointer

# A file whose decoded frames cover less than this fraction of its declared duration is "truncated".
TRUNCATED_FRACTION = 0.5


@dataclass
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    num_frames: int | None
    has_audio: bool


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if is_lfs_pointer(path):
        raise MediaError(path, "Git LFS pointer stub, not the video: run `git lfs pull` in the clone "
                               "or download with `avdata download cremad`")


def _why(exc: Exception) -> str:
    """The decoder's message without the file path (reasons go into manifests, which hold no paths)."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).split(": '")[0]


def _open(path: Path):
    _check_file(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, f"not a readable video container ({_why(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream")
    return container


def _info(container, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not fps or not math.isfinite(fps):
        raise MediaError(path, "frame rate is 0 or unknown (a stub or broken file); cannot place frames in time")
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    ctx = stream.codec_context
    return VideoInfo(codec=ctx.name, width=ctx.width, height=ctx.height, fps=fps, duration_s=max(duration, 0.0),
                     num_frames=stream.frames or None, has_audio=bool(container.streams.audio))


def probe_video(path: str | Path) -> VideoInfo:
    path = Path(path)
    container = _open(path)
    try:
        return _info(container, path)
    finally:
        container.close()


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    if scale == 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _rgb(frame, short_side: int) -> np.ndarray:
    """RGB uint8 with the short side resized, converted and scaled in one swscale call (area filter)."""
    w, h = frame.width, frame.height
    scale = short_side / min(w, h)
    if scale == 1:
        return frame.to_ndarray(format="rgb24")
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return frame.reformat(width=size[0], height=size[1], format="rgb24",
                          interpolation="AREA" if scale < 1 else "BILINEAR").to_ndarray()


def read_frames(
    path: str | Path, mode: str = "per_second", k: int | None = None, short_side: int = 256
) -> tuple[np.ndarray, list[float], VideoInfo]:
    """Frames as uint8 [K, H, W, 3] RGB (short side resized), their times in seconds, and the probe info.

    mode "per_second": the first frame at or after each whole second (the reference's 1 frame/s);
    mode "even": k frames evenly spaced over the clip's decoded frames (by index; fewer if the clip is shorter).
    """
    path = Path(path)
    if mode not in ("per_second", "even"):
        raise ValueError(f"mode must be 'per_second' or 'even', got {mode!r}")
    if mode == "even" and (k is None or k < 1):
        raise ValueError("mode 'even' needs k >= 1")
    container = _open(path)
    try:
        info = _info(container, path)
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        kept: list[np.ndarray] = []
        times: list[float] = []
        decoded: list = []  # mode "even": every decoded frame (still YUV), chosen once the count is known
        next_second, t0, n = 0, None, 0
        last_t = 0.0
        tb = float(stream.time_base) if stream.time_base else 0.0  # plain float: Fraction maths per frame is slow
        try:
            for n, frame in enumerate(container.decode(stream)):
                pts = frame.pts
                t = pts * tb if pts is not None and tb else n / info.fps
                if t0 is None:
                    t0 = t
                t -= t0
                last_t = t
                if mode != "per_second":
                    decoded.append((frame, t))
                elif t >= next_second - 1e-6:
                    next_second = math.floor(t + 1e-6) + 1
                    kept.append(_rgb(frame, short_side))
                    times.append(round(t, 6))
            else:
                n += 1
        except av.error.FFmpegError as exc:
            if not kept:
                raise MediaError(path, f"undecodable video ({_why(exc)})") from exc
            raise MediaError(path, f"truncated or corrupt: decoding failed after {len(kept)} kept frames ({_why(exc)})") from exc
        if mode == "even" and decoded:
            for i in sorted({int(i) for i in np.linspace(0, len(decoded) - 1, k).round()}):
                frame, t = decoded[i]
                kept.append(_rgb(frame, short_side))
                times.append(round(t, 6))
        if not kept:
            raise MediaError(path, "no frame could be decoded")
        if mode == "per_second" and info.duration_s > 1.0 and last_t + 1.0 / info.fps < TRUNCATED_FRACTION * info.duration_s:
            raise MediaError(path, f"truncated: frames end at {last_t:.2f} s of a declared {info.duration_s:.2f} s")
        return np.stack(kept), times, info
    finally:
        container.close()


def decode_all_frames_count(path: str | Path) -> int:
    """Decode every frame (no conversion): the decode-only baseline of the prepare benchmark."""
    container = _open(Path(path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        return sum(1 for _ in container.decode(stream))
    finally:
        container.close()
