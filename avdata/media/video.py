"""Probing and decoding video frames with PyAV.

Why this file is long: the key-frame-aware fast path and the full-decode fallback share the probing,
the frame choice and the conversion; apart, each would reach into the other's internals.

How frames are read (`read_frames`):

1. The container is demuxed once: every video packet is kept (compressed, small) with its timestamp. A
   plain FLV (CREMA-D) is read by `avdata.media.flv` and its packets go straight to FFmpeg's decoder:
   opening it with FFmpeg would first probe it by decoding (about 1.5 ms of a real clip's 27); any other
   file, or an FLV that reader does not take, is demuxed by FFmpeg.
2. The frames to keep are chosen from those timestamps before anything is decoded:
   - mode "per_second": for s = 0, 1, 2, ... the first frame whose time (relative to the first frame) is
     >= s, as the reference keeps frame index s * fps of a constant-rate clip; a gap longer than a second
     skips the missing seconds rather than repeating a frame;
   - mode "even": k frames at indices round(linspace(0, N - 1, k)) of the clip's N frames (fewer when
     N < k: indices are not repeated).
3. Packets are decoded in order; only the chosen frames are converted to RGB and resized, and decoding
   stops as soon as the last chosen frame is out, so a per-second read skips the clip's tail. For codecs
   whose key frames need nothing before them and that do not reorder frames (FLV1/Sorenson, H.263,
   MPEG-4 part 2 without B-frames, MJPEG, On2 VP6: `KEYFRAME_SAFE`), only the packets from the last key
   frame at or before each chosen frame up to it are decoded, the same frames a full decode gives (tests
   compare them). Real CREMA-D videos (VP6) have a single key frame per clip, so a per-second read
   decodes every packet up to its last chosen frame (about 90% of the clip) and nothing after it; the
   VP6 decoder has no threading and ignores `skip_frame`, so that is all FFmpeg can save exactly
   (BENCHMARKS.md). Clips with key frames every 12 frames (FFmpeg's encoders' default) skip most packets.
4. When the decoder's frames do not match the packets (a missing or undecodable packet, no timestamps),
   the clip is decoded again from the start and frames are chosen from what was actually decoded.

Errors (`MediaError`, reason without the path): file missing, empty, a Git LFS pointer stub, not a video
container, a still image (PNG, JPEG, GIF, ... under a video's name), no video stream, frame rate 0 or
unknown, nothing decodable, and "truncated": the frames end well before the duration the video stream or
the whole clip (its longest track: a video that stops while the audio runs on) declares (see
`is_truncated`). `OverBudget` (`avdata.media.budget`) when the kept frames x their pixels, the working
frames and the demuxed packets would pass `max_bytes`:
decided from the packets' timestamps and the picture size before the kept frames' array is allocated (an
FLV of tiny skip frames one second apart keeps one frame per second), and counted as the full-decode
fallback holds frames.

Rotation: a frame whose display matrix turns it by a multiple of 90 degrees (an MP4 `tkhd` rotation, as
phones store portrait video) is turned upright before resizing, as FFmpeg's and OpenCV's readers show it;
`VideoInfo` keeps the coded width and height. A stream whose picture size changes mid-clip has its later
kept frames scaled to the first one's size (as FFmpeg's command line keeps its output size).

Conversion and resizing: libswscale converts YUV to RGB at the native size through a reused
reformatter (0.05 ms per 480x360 frame; `to_ndarray("rgb24")` builds a new one each call, 0.19 ms), then
`resize_short_side` scales with OpenCV: bit-exact bilinear (INTER_LINEAR_EXACT, integer arithmetic, the
same bytes on every CPU) when enlarging or shrinking by a factor of at least 1/2, the area filter below
that, where bilinear would alias. For CREMA-D (480x360 to 341x256) that is 0.33 ms a frame against
0.49 ms for swscale's own area filter, whose output it matches to within 0.3 grey levels on average.
The same function resizes images that are not video frames (UrbanSound8K-AV JPEGs). Output size: the
short side becomes `short_side`, the long one round(long * short_side / short).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from avdata.errors import AvdataError, MediaError
from avdata.media.budget import (DEFAULT_MAX_DECODED_BYTES, PACKET_BYTES, OverBudget, check_decoded, max_packets,
                                 video_bytes)
from avdata.media.files import require_media_file
from avdata.media.flv import FlvVideo, read_flv_video

#: A clip is "truncated" when its frames end before this fraction of the declared duration AND at least
#: TRUNCATED_MIN_GAP_S seconds early (a container's duration may exceed the video's by a few audio
#: frames, which must not count).
TRUNCATED_FRACTION = 0.8
TRUNCATED_MIN_GAP_S = 0.5

_EPS = 1e-6  # seconds: timestamps are rounded to microseconds; a frame at 0.9999996 s counts as 1 s


@dataclass
class VideoInfo:
    """What the container says. duration_s is 0.0 when the container declares none; num_frames is None
    when the container does not record a frame count (FLV does not)."""

    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    num_frames: int | None
    has_audio: bool
    #: the whole clip's (the container's: the longest track's), when longer than the video's duration_s
    clip_duration_s: float = 0.0



def _why(exc: Exception) -> str:
    """The decoder's message without the file path (reasons go into manifests, which hold no paths)."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).split(": '")[0]


def _open(path: Path):
    require_media_file(path, "video")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise MediaError(path, f"not a readable video container ({_why(exc)})") from exc
    fmt = container.format.name
    if fmt in ("image2", "gif", "apng") or fmt.endswith("_pipe"):  # FFmpeg's image readers (PNG, JPEG, ...)
        container.close()
        raise MediaError(path, f"a still image ({fmt.removesuffix('_pipe')}), not a video")
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream")
    _one_thread(container.streams.video[0].codec_context)
    return container


def _one_thread(ctx) -> None:
    """One decoding thread: callers parallelise over clips with processes; threads only add start-up cost."""
    ctx.thread_type = "SLICE"
    ctx.thread_count = 1


def _info(container, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate
    if not rate:
        # FFmpeg's guess falls back to 1 / time base (1000 "fps" for FLV's millisecond ticks) when it has
        # nothing to go on: that is not a frame rate.
        tick = 1 / stream.time_base if stream.time_base else None
        rate = next((r for r in (stream.guessed_rate, stream.base_rate) if r and r != tick), None)
    fps = float(rate) if rate else 0.0
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise MediaError(path, "frame rate is 0 or unknown (a stub or broken file); cannot place frames in time")
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise MediaError(path, "video stream has no picture size (broken header)")
    return VideoInfo(codec=ctx.name, width=ctx.width, height=ctx.height, fps=fps,
                     duration_s=max(duration, 0.0) if math.isfinite(duration) else 0.0,
                     num_frames=stream.frames or None, has_audio=bool(container.streams.audio),
                     clip_duration_s=_finite(container.duration / av.time_base if container.duration else 0.0))


def _finite(seconds: float) -> float:
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Codec, size, frame rate, declared duration, frame count (if recorded) and audio presence."""
    path = Path(path)
    container = _open(path)
    try:
        return _info(container, path)
    finally:
        container.close()


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after `resize_short_side`: known before decoding, so budgets can count it."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize_to(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """An HxWxC uint8 image at exactly width x height, with `resize_short_side`'s filters."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    how = cv2.INTER_AREA if 2 * width < w or 2 * height < h else cv2.INTER_LINEAR_EXACT
    return cv2.resize(rgb, (width, height), interpolation=how)


def _one_size(frames: list[np.ndarray]) -> np.ndarray:
    """[K, H, W, 3] of frames at the first one's size: a stream whose picture size changes mid-clip (an FLV
    or H.264 stream may, packet by packet) has its later frames scaled to it, as FFmpeg's command line
    keeps its output size."""
    h, w = frames[0].shape[:2]
    return np.stack([_resize_to(f, w, h) for f in frames])


def resize_short_side(rgb: np.ndarray, short_side: int | None, out: np.ndarray | None = None) -> np.ndarray:
    """An HxWxC uint8 image resized so min(H, W) == short_side, aspect kept (None: unchanged). Bit-exact
    bilinear down to half size and for enlarging, area filter for stronger shrinking (see module doc).
    `out`: written there when it has the result's shape (saves stacking the frames of a clip after)."""
    h, w = rgb.shape[:2]
    size = target_size(w, h, short_side)
    fits = out is not None and out.shape == (size[1], size[0], *rgb.shape[2:]) and out.dtype == rgb.dtype
    dst = out if fits else None
    if size == (w, h):
        if dst is not None:
            np.copyto(dst, rgb)
            return dst
        return rgb
    strong_shrink = 2 * size[0] < w or 2 * size[1] < h
    how = cv2.INTER_AREA if strong_shrink else cv2.INTER_LINEAR_EXACT
    if dst is not None:
        cv2.resize(rgb, size, dst=dst, interpolation=how)
        return dst
    return cv2.resize(rgb, size, interpolation=how)


_local = threading.local()

#: SWS_BILINEAR | SWS_BITEXACT: swscale then avoids the conversion code paths whose rounding differs between
#: CPUs, so frames (and shards) come out the same on any machine; no slower here (0.05 ms a 480x360 frame).
_SWS_BITEXACT_BILINEAR = 0x2 | 0x80000


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that show the frame upright: its display matrix (an MP4's `tkhd`
    rotation, as phones record portrait video), as FFmpeg's and OpenCV's readers apply it by default.
    Other angles than multiples of 90 degrees are left alone (FFmpeg does not rotate them either)."""
    angle = float(getattr(frame, "rotation", 0) or 0)
    turns = round(angle / 90)
    return turns % 4 if abs(angle - 90 * turns) < 1 else 0


def _display_size(frame) -> tuple[int, int]:
    """(width, height) of the frame as shown, after its rotation."""
    return (frame.height, frame.width) if _quarter_turns(frame) % 2 else (frame.width, frame.height)


def _rgb(frame, short_side: int | None, out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 at the native size through a reused reformatter, turned upright (`_quarter_turns`), then
    resized (see module docstring), into `out` when it has the right shape."""
    # One per thread and process: a forked child must not reuse its parent's swscale context.
    cached = getattr(_local, "reformatter", None)
    if cached is None or cached[0] != os.getpid():
        cached = _local.reformatter = (os.getpid(), VideoReformatter())
    # threads=1: swscale's default (0 = one thread per CPU) oversubscribes the per-clip worker processes
    # and leaves a thread pool that a fork cannot inherit.
    rgb = cached[1].reformat(frame, format="rgb24", interpolation=_SWS_BITEXACT_BILINEAR, threads=1).to_ndarray()
    turns = _quarter_turns(frame)
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    return resize_short_side(rgb, short_side, out)


def select_per_second(times: list[float] | np.ndarray) -> list[int]:
    """Indices (into ascending `times`, seconds from the first frame) of the first frame at or after each
    whole second: 0, 1, 2, ... A second with no frame of its own (a gap) is skipped."""
    out: list[int] = []
    nxt = 0.0
    for i, t in enumerate(times):
        if t >= nxt - _EPS:
            out.append(i)
            nxt = math.floor(t + _EPS) + 1.0
    return out


def select_even(n: int, k: int) -> list[int]:
    """k indices evenly spaced over n frames, first and last included (no repeats when n < k)."""
    if n <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def is_truncated(frames_end_s: float, duration_s: float) -> bool:
    """True when frames ending at `frames_end_s` cover too little of a declared `duration_s` (0 = none)."""
    if duration_s <= 0:
        return False
    gap = duration_s - frames_end_s
    return frames_end_s < TRUNCATED_FRACTION * duration_s and gap >= TRUNCATED_MIN_GAP_S


def _select(mode: str, k: int | None, times: list[float]) -> list[int]:
    return select_per_second(times) if mode == "per_second" else select_even(len(times), k or 1)


#: Codecs (FFmpeg names) whose key frames reference nothing before them: decoding may start at any key
#: frame, provided the stream has no B-frames (checked separately). On2 VP6 (`vp6f` in FLV, real CREMA-D):
#: a key frame is intra-coded and resets the golden (long-term) reference too, so nothing before it is
#: referenced (tested on real VP6 clips joined packet by packet).
KEYFRAME_SAFE = frozenset({"flv", "h263", "h263p", "mpeg4", "mjpeg", "vp6", "vp6f"})


def packets_to_decode(keyframes: list[bool], chosen: list[int]) -> list[bool]:
    """Which packets (in decode order) must be decoded to get the `chosen` ones: for each, the run from
    the last key frame at or before it (the first packet when there is none) up to it."""
    start, last_key = [], 0
    for i, key in enumerate(keyframes):
        last_key = i if key else last_key
        start.append(last_key)
    need = [False] * len(keyframes)
    for c in chosen:
        need[start[c]:c + 1] = [True] * (c + 1 - start[c])
    return need


def _check_frames(path: Path, kept: int, width: int, height: int, short_side: int | None, packets: int,
                  max_bytes: int) -> None:
    """OverBudget when `kept` frames of width x height (resized for `short_side`) and the working frames pass
    `max_bytes`."""
    out_w, out_h = target_size(width, height, short_side)
    check_decoded(path, f"{kept:,} kept frames of {out_w}x{out_h} (from {width}x{height}, {packets:,} packets)",
                  video_bytes(kept, out_w, out_h, width, height, packets), max_bytes)


def _fast_path(packets, tb: float, ctx, mode: str, k: int | None, short_side: int | None, path: Path,
               max_bytes: int = DEFAULT_MAX_DECODED_BYTES):
    """Choose frames from packet timestamps, decode only what they need (with decoder `ctx`). None when the
    decoded frames do not line up with the packets (the caller then decodes everything). OverBudget before
    any decoding when the picture size is known (FFmpeg's probe), else at the first decoded frame."""
    pts = [p.pts for p in packets]
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return None
    order = sorted(pts)
    t0 = order[0]
    times = [(p - t0) * tb for p in order]
    picked = _select(mode, k, times)
    chosen = {order[i]: round(times[i], 6) for i in picked}
    if ctx.width and ctx.height:
        _check_frames(path, len(chosen), ctx.width, ctx.height, short_side, len(packets), max_bytes)
    if ctx.name in KEYFRAME_SAFE and not ctx.has_b_frames and pts == order:
        need = packets_to_decode([p.is_keyframe for p in packets], picked)
    else:
        need = [True] * len(packets)
    kept: dict[int, np.ndarray] = {}
    # the kept frames go straight into one [K, H, W, 3] array (in time order) when they share a size
    row = {p: i for i, p in enumerate(sorted(chosen))}
    out: np.ndarray | None = None
    decoded = 0
    skipping = False
    try:
        for packet, wanted in zip(packets + [None], need + [True]):
            if not wanted:
                skipping = True
                continue
            resumed = skipping
            if skipping:  # resume at a key frame with a clean decoder
                ctx.flush_buffers()
                skipping = False
            for frame in ctx.decode(packet):
                if resumed and not frame.key_frame:
                    return None  # the container called it a key frame; the decoder disagrees
                resumed = False
                decoded += 1
                if frame.pts in chosen and frame.pts not in kept:
                    if out is None:
                        _check_frames(path, len(chosen), frame.width, frame.height, short_side, len(packets),
                                      max_bytes)
                        w, h = target_size(*_display_size(frame), short_side)
                        out = np.empty((len(chosen), h, w, 3), dtype=np.uint8)
                    kept[frame.pts] = _rgb(frame, short_side, out[row[frame.pts]])
            if len(kept) == len(chosen):
                break
    except av.error.FFmpegError as exc:
        if not all(need):
            return None  # perhaps a packet we skipped was needed after all: decode everything instead
        raise MediaError(path, f"undecodable video: decoding failed after {decoded} of {len(packets)} frames "
                               f"({_why(exc)})") from exc
    if len(kept) != len(chosen):
        return None
    keys = sorted(kept)
    frames = [kept[p] for p in keys]
    if out is None or not all(f.base is out for f in frames):  # a size changed mid-stream
        out = _one_size(frames)
    return out, [chosen[p] for p in keys], times[-1], len(packets)


def _slow_path(path: Path, mode: str, k: int | None, short_side: int | None, fps: float,
               max_bytes: int = DEFAULT_MAX_DECODED_BYTES):
    """Decode every frame (kept as YUV), then choose among what was actually decoded; OverBudget as soon as
    the frames held pass `max_bytes`."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else 0.0
        frames, times = [], []
        held = 0
        for n, frame in enumerate(container.decode(stream)):
            t = frame.pts * tb if frame.pts is not None and tb else n / fps
            held += sum(p.buffer_size for p in frame.planes)
            check_decoded(path, f"every frame ({n + 1:,} decoded so far, the full decode a damaged clip needs)",
                          held, max_bytes)
            frames.append(frame)
            times.append(t)
        if not frames:
            return [], [], 0.0, 0
        order = sorted(range(len(times)), key=lambda i: (times[i], i))
        t0 = times[order[0]]
        rel = [times[i] - t0 for i in order]
        pick = _select(mode, k, rel)
        kept = _one_size([_rgb(frames[order[i]], short_side) for i in pick])
        return kept, [round(rel[i], 6) for i in pick], rel[-1], len(frames)
    finally:
        container.close()


def _demux(container, stream, path: Path, max_bytes: int) -> list:
    """The stream's non-empty packets; OverBudget once they (payloads and bookkeeping) pass `max_bytes`."""
    packets = []
    held = 0
    try:
        for p in container.demux(stream):
            if p.size:
                packets.append(p)
                held += p.size + PACKET_BYTES
                if held > max_bytes:
                    check_decoded(path, f"{len(packets):,}+ demuxed packets", held, max_bytes)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"unreadable video stream ({_why(exc)})") from exc
    return packets


def _ffmpeg_read(path: Path, mode: str, k: int | None, short_side: int | None,
                 max_bytes: int = DEFAULT_MAX_DECODED_BYTES):
    """`read_frames` through FFmpeg's demuxer: the fast path, or every frame when it gives up."""
    container = _open(path)
    try:
        info = _info(container, path)
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else 0.0
        packets = _demux(container, stream, path, max_bytes)
        result = (_fast_path(packets, tb, stream.codec_context, mode, k, short_side, path, max_bytes)
                  if packets and tb else None)
    finally:
        container.close()
    if result is None:
        try:
            result = _slow_path(path, mode, k, short_side, info.fps, max_bytes)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"undecodable video ({_why(exc)})") from exc
    return result, info


def flv_decoder(flv: FlvVideo):
    """FFmpeg's decoder for an FLV read by `avdata.media.flv`, and its packets as PyAV packets."""
    ctx = av.CodecContext.create(flv.codec, "r")
    if flv.extradata:
        ctx.extradata = flv.extradata
    _one_thread(ctx)
    packets = []
    for pts, key, data in flv.packets:
        packet = av.Packet(data)  # type: ignore[arg-type]  # any buffer will do; PyAV's stubs say bytes
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        packets.append(packet)
    return ctx, packets


def _flv_fast_path(flv: FlvVideo, mode: str, k: int | None, short_side: int | None, path: Path,
                   max_bytes: int = DEFAULT_MAX_DECODED_BYTES):
    """The fast path on packets read by `avdata.media.flv` (no FFmpeg probe), or None: then FFmpeg reads the
    file, and words any error (but a budget's: the file is refused here). The decoder and its input are
    FFmpeg's own, so are the frames."""
    ctx, packets = flv_decoder(flv)
    try:
        result = _fast_path(packets, 0.001, ctx, mode, k, short_side, path, max_bytes)  # FLV counts milliseconds
    except OverBudget:
        raise
    except MediaError:
        return None
    if result is None or not ctx.width or not ctx.height:
        return None
    # FFmpeg's FLV demuxer takes both the stream's and the clip's duration from onMetaData
    info = VideoInfo(codec=ctx.name, width=ctx.width, height=ctx.height, fps=flv.fps, duration_s=flv.duration_s,
                     num_frames=None, has_audio=flv.has_audio, clip_duration_s=flv.duration_s)
    return result, info


def read_frames(
    path: str | Path, mode: str = "per_second", k: int | None = None, short_side: int | None = 256,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> tuple[np.ndarray, list[float], VideoInfo]:
    """Frames as uint8 [K, H, W, 3] RGB (short side resized to `short_side`; None keeps the size), their
    times in seconds from the first frame, and the probe info. See the module docstring for the modes;
    OverBudget (a MediaError) when the clip would decode to more than `max_bytes`."""
    path = Path(path)
    if mode not in ("per_second", "even"):
        raise AvdataError(f"frame mode must be 'per_second' or 'even', got {mode!r}")
    if mode == "even" and (k is None or k < 1):
        raise AvdataError(f"frame mode 'even' needs --frames >= 1, got {k}")
    require_media_file(path, "video")  # before the FLV reader opens it (a FIFO would block it)
    flv = read_flv_video(path, max_packets(max_bytes)) if path.suffix.lower() == ".flv" else None
    from_flv = _flv_fast_path(flv, mode, k, short_side, path, max_bytes) if flv is not None else None
    if from_flv is not None:
        result, info = from_flv
    else:
        result, info = _ffmpeg_read(path, mode, k, short_side, max_bytes)
    kept, times, last_t, n_frames = result
    if not len(kept):
        raise MediaError(path, "no frame could be decoded")
    end = last_t + 1.0 / info.fps
    # against the clip's length too: a video track that stops while the audio runs on (one frame of a
    # 10 s clip) is truncated, not a clip of one frame
    declared = max(info.duration_s, info.clip_duration_s)
    if is_truncated(end, declared):
        expected = round(declared * info.fps)
        frames = f"{n_frames} frame{'' if n_frames == 1 else 's'}"
        whose = "clip" if declared > info.duration_s else "declared"
        raise MediaError(path, f"truncated: holds {frames} of {expected} expected "
                               f"(frames end at {end:.2f} s of a {whose} {declared:.2f} s)")
    return kept, times, info


def decode_all_frames_count(path: str | Path) -> int:
    """Decode every frame (no conversion): the decode-only baseline of the prepare benchmark."""
    path = Path(path)
    container = _open(path)
    try:
        return sum(1 for _ in container.decode(container.streams.video[0]))
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"undecodable video ({_why(exc)})") from exc
    finally:
        container.close()
