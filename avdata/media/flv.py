"""An FLV file's video packets, read without FFmpeg's stream probe.

Why: opening a container with FFmpeg probes it by decoding its first frames (VP6 and MP3 for a real
CREMA-D clip: about 1.5 ms, a twentieth of the clip's whole decode), and the frames are then decoded again.
FLV is simple enough to read directly: a 9-byte header, then tags (type, payload size, timestamp in
milliseconds, payload), the first a script tag whose onMetaData holds the duration and frame rate. The
packets handed to FFmpeg's own decoder are the bytes FFmpeg's FLV demuxer would hand it, so the frames are
bit-identical (tests/test_flv_reader.py compares every frame of the real clips and of generated ones).

Only plain files are read here: FLV1 (Sorenson) or On2 VP6 video, every tag complete, video timestamps
increasing, no encryption, onMetaData with a duration and a frame rate. For anything else `read_flv_video`
returns None and the caller opens the file with FFmpeg, which stays the judge of broken files (and words
their errors), so this reader never has to be.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

__all__ = ["FlvVideo", "read_flv_video", "ffmpeg_rate"]

#: Files larger than this go through FFmpeg, which streams them; this reader holds the file in memory.
MAX_BYTES = 64 * 1024 * 1024

#: FLV video codec ids read here -> FFmpeg's decoder name.
_CODECS = {2: "flv", 4: "vp6f"}
_TAG_AUDIO, _TAG_VIDEO, _TAG_SCRIPT = 8, 9, 18
_MAX_AMF_DEPTH = 16


@dataclass
class FlvVideo:
    """The video track of a plain FLV: the decoder to use, its extradata, (pts ms, key frame, payload) of
    each video packet in file order, and what FFmpeg would report as frame rate and duration."""

    codec: str
    extradata: bytes | None
    packets: list[tuple[int, bool, memoryview]]
    fps: float
    duration_s: float
    has_audio: bool


class _Irregular(Exception):
    """Something this reader does not handle: the caller falls back to FFmpeg."""


def ffmpeg_rate(value: float, limit: int = 1000) -> Fraction:
    """`value` as the fraction FFmpeg's FLV demuxer makes of onMetaData's frame rate: the closest
    fraction whose numerator and denominator are both at most `limit` (29.97 -> 989/33), found on the
    continued fraction of `value` rounded to a 62-bit binary fraction, as FFmpeg rounds it."""
    if not math.isfinite(value) or value <= 0:
        raise _Irregular("frame rate")
    exponent = max(math.frexp(value)[1] - 1, 0)
    den = 1 << (62 - exponent)
    exact = Fraction(math.floor(value * den + 0.5), den)
    if exact.numerator <= limit and exact.denominator <= limit:
        return exact
    # convergents p/q of the continued fraction until the next would pass the limit
    p0, q0, p1, q1 = 0, 1, 1, 0
    num, rest = exact.numerator, exact.denominator
    while rest:
        a = num // rest
        p2, q2 = a * p1 + p0, a * q1 + q0
        if p2 > limit or q2 > limit:
            # the largest semiconvergent within the limit, when it is closer than the last convergent
            t = (limit - p0) // p1 if p1 else a
            if q1:
                t = min(t, (limit - q0) // q1)
            if t > 0:
                semi = Fraction(t * p1 + p0, t * q1 + q0)
                if q1 == 0 or abs(semi - exact) < abs(Fraction(p1, q1) - exact):  # q1 == 0: value > limit
                    return semi
            break
        p0, q0, p1, q1 = p1, q1, p2, q2
        num, rest = rest, num - a * rest
    return Fraction(p1, q1)


def _amf_value(buf: bytes, pos: int, depth: int) -> tuple[object, int]:
    """One AMF0 value at `pos`: (the value, or None for kinds not needed here, position after it)."""
    if depth > _MAX_AMF_DEPTH or pos >= len(buf):
        raise _Irregular("metadata")
    kind = buf[pos]
    pos += 1
    if kind == 0x00:  # number
        return struct.unpack_from(">d", buf, pos)[0], pos + 8
    if kind == 0x01:  # boolean
        return bool(buf[pos]), pos + 1
    if kind == 0x02:  # string
        n = struct.unpack_from(">H", buf, pos)[0]
        return buf[pos + 2:pos + 2 + n].decode("utf-8", "replace"), pos + 2 + n
    if kind == 0x0C:  # long string
        n = struct.unpack_from(">I", buf, pos)[0]
        return None, pos + 4 + n
    if kind in (0x05, 0x06):  # null, undefined
        return None, pos
    if kind == 0x0B:  # date: milliseconds + time zone
        return None, pos + 10
    if kind in (0x03, 0x08):  # object, ECMA array (its count is a hint; the end marker ends it)
        if kind == 0x08:
            pos += 4
        out: dict[str, object] = {}
        while True:
            n = struct.unpack_from(">H", buf, pos)[0]
            if n == 0 and buf[pos + 2:pos + 3] == b"\x09":
                return out, pos + 3
            key = buf[pos + 2:pos + 2 + n].decode("utf-8", "replace")
            out[key], pos = _amf_value(buf, pos + 2 + n, depth + 1)
            if pos > len(buf):
                raise _Irregular("metadata")
    if kind == 0x0A:  # strict array
        count = struct.unpack_from(">I", buf, pos)[0]
        pos += 4
        if count > len(buf):
            raise _Irregular("metadata")
        for _ in range(count):
            _, pos = _amf_value(buf, pos, depth + 1)
        return None, pos
    raise _Irregular("metadata")


def _on_metadata(payload: bytes) -> dict[str, object] | None:
    """onMetaData's values, or None for another script tag (bounds errors are caught by the caller)."""
    name, pos = _amf_value(payload, 0, 0)
    if name != "onMetaData":
        return None
    meta, _ = _amf_value(payload, pos, 0)
    return meta if isinstance(meta, dict) else None


def _parse(buf: bytes, packet_limit: int | None = None) -> FlvVideo:
    if len(buf) < 13 or buf[:3] != b"FLV" or buf[3] != 1:
        raise _Irregular("header")
    flags = buf[4]
    pos = struct.unpack_from(">I", buf, 5)[0] + 4  # header, then the first PreviousTagSize (0)
    meta: dict[str, object] | None = None
    codec_id: int | None = None
    extradata: bytes | None = None
    packets: list[tuple[int, bool, memoryview]] = []
    audio = False
    view = memoryview(buf)  # payloads are handed on as views: no copy until the decoder's packet
    n = len(buf)
    while pos < n:
        if pos + 11 > n:
            raise _Irregular("cut tag header")
        head, stamp = struct.unpack_from(">II", buf, pos)  # type + size; timestamp (24 bits) + its high byte
        kind, size = head >> 24, head & 0xFFFFFF
        ts = (stamp >> 8) | ((stamp & 0xFF) << 24)
        start, end = pos + 11, pos + 11 + size
        if end + 4 > n or kind & 0x20:  # cut short, or encrypted
            raise _Irregular("tag")
        if kind == _TAG_SCRIPT:
            found = _on_metadata(buf[start:end])
            if found is not None:
                if meta is not None or packets:
                    raise _Irregular("metadata not first")
                meta = found
        elif kind == _TAG_AUDIO:
            audio = audio or size > 0
        elif kind == _TAG_VIDEO:
            if size < 2:
                raise _Irregular("empty video tag")
            frame_type, cid = buf[start] >> 4, buf[start] & 0x0F
            if cid not in _CODECS or (codec_id is not None and cid != codec_id) or frame_type not in (1, 2, 3):
                raise _Irregular("video codec or frame type")
            codec_id = cid
            body = start + 1
            if cid == 4:  # VP6: one adjustment byte (crop) before the frame; the first one is the extradata
                if extradata is None:
                    extradata = buf[body:body + 1]
                body += 1
            if packets and ts <= packets[-1][0]:
                raise _Irregular("timestamps")
            if body < end:
                packets.append((ts, frame_type == 1, view[body:end]))
                if packet_limit is not None and len(packets) > packet_limit:
                    raise _Irregular("more packets than the budget")  # FFmpeg's demux then refuses the file
        else:
            raise _Irregular("tag type")
        pos = end + 4
    if codec_id is None or not packets or meta is None:
        raise _Irregular("no video or no metadata")
    if bool(flags & 0x04) != audio or not flags & 0x01:  # header and tags disagree: let FFmpeg decide
        raise _Irregular("audio flag")
    rate, duration = meta.get("framerate"), meta.get("duration")
    if not isinstance(rate, float) or not 0.5 <= rate <= 1000 or not isinstance(duration, float) \
            or not 0 < duration < 1e7:
        raise _Irregular("metadata values")
    fps = float(ffmpeg_rate(rate))
    # FFmpeg keeps the duration in whole microseconds (truncated)
    return FlvVideo(_CODECS[codec_id], extradata, packets, fps, int(duration * 1_000_000) / 1_000_000, audio)


def read_flv_video(path: str | Path, packet_limit: int | None = None) -> FlvVideo | None:
    """The video packets and facts of a plain FLV (see the module docstring), or None: then open the
    file with FFmpeg. Never raises for the file's content; an unreadable file gives None too, and so does
    one of more than `packet_limit` video packets (the decoded-size budget's: `avdata.media.budget`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            buf = f.read(MAX_BYTES + 1)
    except OSError:
        return None
    if len(buf) > MAX_BYTES:
        return None
    try:
        return _parse(buf, packet_limit)
    except (_Irregular, struct.error, IndexError):
        return None
