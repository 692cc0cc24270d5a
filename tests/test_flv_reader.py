"""avdata.media.flv: FLV video packets read without FFmpeg's probe must be exactly what FFmpeg's demuxer
gives, so read_frames' frames and facts are the same either way; anything irregular goes to FFmpeg."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import avdata.media.video as video
from avdata.datasets.cremad.synth import write_flv
from avdata.errors import MediaError
from avdata.media.flv import ffmpeg_rate, read_flv_video

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cremad" / "sample" / "VideoFlash"
REAL = sorted(SAMPLE.glob("*.flv")) if SAMPLE.is_dir() else []

# (fps, key frame every N or one only, MP3 track, seconds, width)
GENERATED = [(Fraction(30000, 1001), None, True, 2.3, 480), (Fraction(30000, 1001), 12, True, 3.1, 176),
             (25, 5, False, 1.7, 160), (Fraction(24000, 1001), None, True, 0.9, 208), (30, 1, True, 2.0, 128)]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("flv")
    out = []
    for i, (fps, gop, audio, seconds, width) in enumerate(GENERATED):
        path = root / f"clip{i}.flv"
        write_flv(path, i % 6, seconds, width, width * 3 // 4, fps, seed=i, with_audio=audio, gop=gop)
        out.append(path)
    return out


def _ffmpeg_packets(path: Path) -> list[tuple[int, bool, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(p.pts, p.is_keyframe, bytes(p)) for p in container.demux(stream) if p.size]


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason="real CREMA-D sample (../shared) not present")
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_vp6_packets_and_frames_equal_ffmpeg(path: Path) -> None:
    flv = read_flv_video(path)
    assert flv is not None and flv.codec == "vp6f" and flv.extradata == b"\x08" and flv.has_audio
    assert [(t, k, bytes(b)) for t, k, b in flv.packets] == _ffmpeg_packets(path)
    assert sum(k for _, k, _ in flv.packets) == 1  # one key frame per real clip
    for mode, k, side in [("per_second", None, 256), ("even", 4, None)]:
        (frames, times, last, n), info = video._flv_fast_path(flv, mode, k, side, path)
        (frames_ff, times_ff, last_ff, n_ff), info_ff = video._ffmpeg_read(path, mode, k, side)
        assert np.array_equal(frames, frames_ff) and times == times_ff and (last, n) == (last_ff, n_ff)
        assert info == info_ff  # codec, size, FFmpeg's frame rate (989/33), duration, audio
    assert info.fps == pytest.approx(989 / 33) and (info.width, info.height) == (480, 360)


@pytest.mark.slow
def test_generated_flv1_equal_ffmpeg(generated: list[Path]) -> None:
    for path, (_, gop, audio, _, width) in zip(generated, GENERATED):
        flv = read_flv_video(path)
        assert flv is not None and flv.codec == "flv" and flv.extradata is None and flv.has_audio == audio
        packets = _ffmpeg_packets(path)
        assert [(t, k, bytes(b)) for t, k, b in flv.packets] == packets
        assert sum(k for _, k, _ in packets) == (1 if gop is None else -(-len(packets) // gop))
        for mode, k, side in [("per_second", None, 64), ("even", 5, None)]:
            (frames, times, last, n), info = video._flv_fast_path(flv, mode, k, side, path)
            (frames_ff, times_ff, last_ff, n_ff), info_ff = video._ffmpeg_read(path, mode, k, side)
            assert np.array_equal(frames, frames_ff) and times == times_ff and (last, n) == (last_ff, n_ff)
            assert info == info_ff and info.width == width


def test_read_frames_skips_ffmpeg_probe_for_plain_flv(generated: list[Path], monkeypatch) -> None:
    expected = video.read_frames(generated[1], short_side=96)

    def no_open(path):
        raise AssertionError("FFmpeg's demuxer was opened")

    monkeypatch.setattr(video, "_open", no_open)
    frames, times, info = video.read_frames(generated[1], short_side=96)
    assert np.array_equal(frames, expected[0]) and times == expected[1] and info == expected[2]
    assert len(times) == 4  # 3.1 s: frames at 0, 1, 2, 3 s


@pytest.mark.slow
@pytest.mark.parametrize("value", [29.97002997, 30000 / 1001, 24000 / 1001, 25.0, 12.5, 59.94005994, 1000.0,
                                   0.5, 7.3, 999.5, 17.0 / 3, 143.29, 20.0 / 7 + 1e-9])
def test_frame_rate_matches_ffmpeg(value: float, generated: list[Path], tmp_path: Path) -> None:
    """FFmpeg turns onMetaData's frame rate into a fraction with terms <= 1000; so must the reader."""
    buf = generated[0].read_bytes()
    at = buf.index(b"framerate") + len(b"framerate")
    assert buf[at] == 0  # an AMF number follows
    path = tmp_path / "rate.flv"
    path.write_bytes(buf[:at + 1] + struct.pack(">d", value) + buf[at + 9:])
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    assert ffmpeg_rate(value) == Fraction(rate.numerator, rate.denominator)
    flv = read_flv_video(path)
    assert flv is not None and flv.fps == float(rate)


def _tags(buf: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, payload size) of each tag."""
    pos, out = struct.unpack_from(">I", buf, 5)[0] + 4, []
    while pos < len(buf):
        size = int.from_bytes(buf[pos + 1:pos + 4], "big")
        out.append((pos, buf[pos], size))
        pos += 15 + size
    return out


def test_irregular_files_go_to_ffmpeg(generated: list[Path], tmp_path: Path) -> None:
    buf = generated[0].read_bytes()
    tags = _tags(buf)
    video_tags = [t for t in tags if t[1] == 9]
    script = next(t for t in tags if t[1] == 18)
    cut = video_tags[len(video_tags) // 2][0] + 20
    second_video = video_tags[1][0]
    cases = {
        "cut inside a tag": buf[:cut],
        "no metadata": buf[:script[0]] + buf[script[0] + 15 + script[2]:],
        "encrypted tag": buf[:second_video] + bytes([buf[second_video] | 0x20]) + buf[second_video + 1:],
        "another codec (H.264 id)": buf[:second_video + 11] + bytes([(buf[second_video + 11] & 0xF0) | 7])
        + buf[second_video + 12:],
        "not FLV": b"version https://git-lfs.github.com/spec/v1\n" + b"x" * 100,
        "empty": b"",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.flv"
        path.write_bytes(data)
        assert read_flv_video(path) is None, name
    # FFmpeg then reads them as before: without metadata it finds the frame rate itself; not FLV at all
    # stays an error
    frames, _, info = video.read_frames(tmp_path / "no_metadata.flv", short_side=None)
    assert frames.shape[0] >= 2 and info.codec == "flv"
    with pytest.raises(MediaError):
        video.read_frames(tmp_path / "not_FLV.flv")


def test_mutated_files_never_raise_from_the_reader(generated: list[Path], tmp_path: Path) -> None:
    """Strangers' files: flipped bytes anywhere (header, metadata, tag sizes, payloads) give either packets
    or None from the reader, and read_frames either frames or a MediaError naming the file."""
    import random

    rng = random.Random(7)
    buf = bytearray(generated[2].read_bytes())
    meta_at = buf.index(b"onMetaData")
    outcomes = {"packets": 0, "none": 0}
    for i in range(40):
        data = bytearray(buf)
        # half the flips land in the header and metadata, where the reader's own parsing is
        spots = [rng.randrange(0, meta_at + 300) if j % 2 else rng.randrange(len(data)) for j in range(1 + i % 4)]
        for at in spots:
            data[at] = rng.randrange(256)
        path = tmp_path / f"m{i}.flv"
        path.write_bytes(bytes(data))
        flv = read_flv_video(path)
        outcomes["none" if flv is None else "packets"] += 1
        try:
            frames, _, _ = video.read_frames(path, short_side=32)
            assert frames.ndim == 4
        except MediaError as exc:
            assert str(path) in str(exc)
    assert outcomes["none"] and outcomes["packets"]  # both routes were taken
