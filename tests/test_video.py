"""Video probing and frame reading on real FLV (Sorenson FLV1 + MP3) and H.264 files written with PyAV (real
CREMA-D VP6 files: tests/test_cremad_real.py)."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from avdata.media import video
from avdata.errors import AvdataError, MediaError
from avdata.datasets.cremad.synth import COLOURS, write_flv
from avdata.media.video import decode_all_frames_count, probe_video, read_frames, resize_short_side


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """3.2 s at 30 fps: 96 frames at t = i / 30 (FLV stores milliseconds), 160x120, FEA (purple square)."""
    path = tmp_path_factory.mktemp("video") / "fea.flv"
    write_flv(path, label=2, duration=3.2, width=160, height=120, fps=30, seed=0)
    return path


def all_frames_rgb(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        out = [(f.to_ndarray(format="rgb24"), float(f.pts * s.time_base)) for f in c.decode(s)]
    return [o[0] for o in out], [o[1] for o in out]


@pytest.mark.slow
def test_probe(clip):
    info = probe_video(clip)
    assert info.codec == "flv" and (info.width, info.height) == (160, 120) and info.fps == 30
    assert info.has_audio and info.duration_s == pytest.approx(3.2, abs=0.1)
    assert decode_all_frames_count(clip) == 96


def test_per_second_is_the_first_frame_of_each_second(clip):
    frames, times, info = read_frames(clip, short_side=None)
    assert frames.shape == (4, 120, 160, 3) and frames.dtype == np.uint8 and times == [0.0, 1.0, 2.0, 3.0]
    # exactly the decoder's frames 0, 30, 60, 90 converted to RGB
    ref, _ = all_frames_rgb(clip)
    for got, i in zip(frames, (0, 30, 60, 90)):
        assert np.array_equal(got, ref[i])
    # the class colour (FEA: purple square, top right) is visible
    r, g, b = frames[0, 6:32, 126:154].reshape(-1, 3).mean(0)
    assert abs(r - COLOURS[2][0]) < 30 and abs(g - COLOURS[2][1]) < 30 and abs(b - COLOURS[2][2]) < 30
    # identical across runs
    again, times2, _ = read_frames(clip, short_side=None)
    assert np.array_equal(frames, again) and times == times2


def test_even_mode(clip):
    frames, times, _ = read_frames(clip, mode="even", k=5, short_side=None)
    # indices round(linspace(0, 95, 5)) = 0, 24, 48, 71, 95; FLV rounds times to the millisecond
    assert frames.shape[0] == 5 and times == [0.0, 0.8, 1.6, 2.367, 3.167]
    ref, _ = all_frames_rgb(clip)
    for got, i in zip(frames, (0, 24, 48, 71, 95)):
        assert np.array_equal(got, ref[i])
    # more frames asked than the clip holds: each frame once
    frames, times, _ = read_frames(clip, mode="even", k=200, short_side=24)
    assert frames.shape == (96, 24, 32, 3) and len(set(times)) == 96
    with pytest.raises(AvdataError, match="needs --frames >= 1"):
        read_frames(clip, mode="even")
    with pytest.raises(AvdataError, match="'sometimes'"):
        read_frames(clip, mode="sometimes")


@pytest.mark.slow
def test_resize_short_side(clip, tmp_path):
    small, _, _ = read_frames(clip, short_side=60)
    assert small.shape == (4, 60, 80, 3)
    big, _, _ = read_frames(clip, short_side=240)
    assert big.shape == (4, 240, 320, 3)
    # the decoder's RGB frames resized by resize_short_side: bilinear down to half size, area below
    native, _, _ = read_frames(clip, short_side=None)
    assert np.array_equal(small, np.stack([resize_short_side(f, 60) for f in native]))
    mild, _, _ = read_frames(clip, short_side=90)  # 160x120 -> 120x90: factor 0.75
    assert np.array_equal(mild[1], cv2.resize(native[1], (120, 90), interpolation=cv2.INTER_LINEAR_EXACT))
    strong, _, _ = read_frames(clip, short_side=48)  # factor 0.4
    assert np.array_equal(strong[1], cv2.resize(native[1], (64, 48), interpolation=cv2.INTER_AREA))
    # both stay close to a plain area average of the same frame
    assert np.abs(mild[1].astype(int) - cv2.resize(native[1], (120, 90), interpolation=cv2.INTER_AREA)).mean() < 2
    # portrait clips: the width is the short side
    tall = tmp_path / "tall.flv"
    write_flv(tall, label=0, duration=1.1, width=96, height=128, fps=25, seed=1, with_audio=False)
    frames, times, info = read_frames(tall, short_side=48)
    assert frames.shape == (2, 64, 48, 3) and times == [0.0, 1.0] and not info.has_audio
    assert resize_short_side(np.zeros((128, 96, 3), np.uint8), 48).shape == (64, 48, 3)
    # written into `out` when it fits (how read_frames fills its [K, H, W, 3] array), else a new array
    for side, want in ((60, small[2]), (None, native[2])):
        out = np.zeros_like(want)
        assert resize_short_side(native[2], side, out) is out and np.array_equal(out, want)
    wrong = np.zeros((10, 10, 3), np.uint8)
    assert np.array_equal(resize_short_side(native[2], 60, wrong), small[2]) and not wrong.any()


def _h264_with_b_frames(path: Path, n: int = 40, fps: int = 20) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps, options={"bf": "2", "g": "12"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flv", "h264"])
def test_fast_path_equals_full_decode(clip, tmp_path, kind, monkeypatch):
    path = clip
    if kind == "h264":
        path = tmp_path / "b.mp4"
        _h264_with_b_frames(path)
    for mode, k in (("per_second", None), ("even", 7)):
        fast = read_frames(path, mode=mode, k=k, short_side=32)
        monkeypatch.setattr(video, "_fast_path", lambda *a, **kw: None)  # force the decode-everything path
        slow = read_frames(path, mode=mode, k=k, short_side=32)
        monkeypatch.undo()
        assert np.array_equal(fast[0], slow[0]) and fast[1] == slow[1]
    if kind == "h264":
        frames, times, info = read_frames(path, short_side=None)
        assert info.codec == "h264" and times == [0.0, 1.0] and frames.shape == (2, 48, 64, 3)


@pytest.mark.slow
def test_unusable_files_raise_media_error_with_reason(clip, tmp_path):
    cases = {}
    cases["missing.flv"] = ("file not found", None)
    (tmp_path / "empty.flv").write_bytes(b"")
    cases["empty.flv"] = ("empty file", None)
    (tmp_path / "stub.flv").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32
                                       + "\nsize 204800\n")
    cases["stub.flv"] = ("Git LFS pointer stub", None)
    (tmp_path / "random.flv").write_bytes(np.random.default_rng(1).bytes(30000))
    cases["random.flv"] = ("not a readable video container", None)
    data = clip.read_bytes()
    (tmp_path / "cut.flv").write_bytes(data[: len(data) * 2 // 5])
    cases["cut.flv"] = ("truncated: holds", None)
    # audio only: an FLV with just the MP3 stream
    with av.open(str(tmp_path / "audio.flv"), "w", format="flv") as out:
        s = out.add_stream("libmp3lame", rate=22050)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 22050, 0, Fraction(1, 22050)
        for p in list(s.encode(frame)) + list(s.encode()):
            out.mux(p)
    cases["audio.flv"] = ("no video stream", None)
    # no usable frame rate: one frame and a metadata frame rate of 0 (FFmpeg can only guess its time base)
    one = tmp_path / "one.flv"
    write_flv(one, label=1, duration=0.01, width=64, height=48, fps=30, seed=0, with_audio=False)
    b = bytearray(one.read_bytes())
    i = b.find(b"framerate") + len(b"framerate")
    assert b[i] == 0  # AMF number follows
    b[i + 1:i + 9] = struct.pack(">d", 0.0)
    (tmp_path / "fps0.flv").write_bytes(bytes(b))
    cases["fps0.flv"] = ("frame rate is 0 or unknown", None)
    for name, (reason, _) in cases.items():
        with pytest.raises(MediaError) as err:
            read_frames(tmp_path / name)
        assert reason in err.value.reason, (name, err.value.reason)
        assert str(tmp_path) not in err.value.reason  # reasons go into manifests: no paths
        if reason != "truncated: holds":
            with pytest.raises(MediaError):
                probe_video(tmp_path / name)
    # a truncated clip still probes (its header is intact); the cut is found when reading frames
    assert probe_video(tmp_path / "cut.flv").fps == 30


def test_truncation_rule():
    assert video.is_truncated(1.0, 3.2) and not video.is_truncated(3.0, 3.2)
    assert not video.is_truncated(0.7, 1.1)  # 0.4 s short: below the 0.5 s minimum gap
    assert not video.is_truncated(1.0, 0.0)  # no declared duration: nothing to compare with
    assert video.select_per_second([0.0, 0.5, 0.9999996, 1.5, 3.2, 3.4]) == [0, 2, 4]
    assert video.select_even(10, 3) == [0, 4, 9] and video.select_even(2, 5) == [0, 1]


def test_packets_to_decode_starts_at_the_last_key_frame():
    keys = [i % 12 == 0 for i in range(40)]  # key frames at 0, 12, 24, 36
    need = video.packets_to_decode(keys, [0, 30])
    assert [i for i, n in enumerate(need) if n] == [0] + list(range(24, 31))
    assert video.packets_to_decode([True, False, False, False], [3]) == [True] * 4  # one key frame
    assert video.packets_to_decode([False, False, True], [1, 2]) == [True, True, True]  # none before: from 0


def _flv_video_tags(data: bytes) -> list[int]:
    """Offsets of the video tags' first data byte (frame type << 4 | codec id) in an FLV file."""
    pos = struct.unpack(">I", data[5:9])[0] + 4
    out = []
    while pos + 11 <= len(data):
        kind, size = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        if kind == 9:
            out.append(pos + 11)
        pos += 11 + size + 4
    return out


@pytest.mark.slow
@pytest.mark.parametrize("gop", [None, 7, 12])  # None: one key frame, as the real clips
def test_key_frame_skipping_gives_the_frames_of_a_full_decode(tmp_path, gop):
    path = tmp_path / "clip.flv"
    write_flv(path, label=4, duration=3.5, width=96, height=64, fps=30, seed=3, gop=gop)
    ref, _ = all_frames_rgb(path)
    frames, times, _ = read_frames(path, short_side=None)
    assert times == [0.0, 1.0, 2.0, 3.0]
    assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, (0, 30, 60, 90)))
    frames, _, _ = read_frames(path, mode="even", k=4, short_side=None)
    picks = video.select_even(len(ref), 4)
    assert picks == [0, 35, 69, 104] and all(np.array_equal(f, ref[i]) for f, i in zip(frames, picks))


def test_a_frame_the_container_mislabels_as_key_does_not_corrupt_frames(tmp_path, monkeypatch):
    path = tmp_path / "clip.flv"
    write_flv(path, label=1, duration=2.2, width=96, height=64, fps=30, seed=5, gop=12)  # keys 0, 12, 24, ...
    data = bytearray(path.read_bytes())
    tag = _flv_video_tags(bytes(data))[27]
    assert data[tag] >> 4 == 2  # an inter frame ...
    data[tag] = (1 << 4) | (data[tag] & 0x0F)  # ... now flagged as a key frame
    path.write_bytes(bytes(data))
    with av.open(str(path)) as c:
        assert [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size][27]
    ref, _ = all_frames_rgb(path)
    full_decodes = []
    slow = video._slow_path
    monkeypatch.setattr(video, "_slow_path", lambda *a, **k: full_decodes.append(1) or slow(*a, **k))
    frames, times, _ = read_frames(path, short_side=None)  # would start decoding at 27 for frame 30
    assert times == [0.0, 1.0, 2.0] and np.array_equal(frames[1], ref[30])
    assert full_decodes == [1]  # the decoder saw a P-frame where a key frame was promised


def _with_display_matrix(src: Path, dst: Path, a: int, b: int, c: int, d: int) -> None:
    """A copy of an MP4 whose video track header (`tkhd`) carries the rotation matrix [a b; c d] (16.16
    fixed point): how phones record portrait video, the coded frames left as captured."""
    data = bytearray(src.read_bytes())
    at = data.find(b"tkhd") + 4 + 4 + 4 * 5 + 8 + 2 * 4  # version/flags, times, id, duration, layer/volume
    assert struct.unpack(">9i", data[at:at + 36])[::4] == (1 << 16, 1 << 16, 1 << 30)  # the identity
    data[at:at + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("matrix, turned", [((0, 1 << 16, -(1 << 16), 0), "clockwise"),
                                            ((-(1 << 16), 0, 0, -(1 << 16)), "upside down")])
def test_rotation_metadata_turns_frames_upright(tmp_path, matrix, turned, monkeypatch):
    """A portrait phone MP4 is stored sideways with a display rotation: frames come out as shown (as
    FFmpeg and OpenCV play it), on the fast path and the decode-everything path alike."""
    src = tmp_path / "plain.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        img = np.zeros((48, 64, 3), np.uint8)
        img[:24, :32] = 255  # the coded picture's top-left quarter is white
        for i in range(12):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    rotated = tmp_path / "rotated.mp4"
    _with_display_matrix(src, rotated, *matrix)
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(video, "_fast_path", lambda *a, **kw: None)
        frames, times, _ = read_frames(rotated, short_side=24)
        quarter = frames[0, :frames.shape[1] // 2, :frames.shape[2] // 2].mean(axis=(0, 1, 2))
        if turned == "clockwise":  # 64x48 shown as 48x64; the white quarter ends at the top right
            assert frames.shape == (2, 32, 24, 3) and times == [0.0, 1.0]
            top_right = frames[0, :16, 12:].mean()
            assert top_right > 240 and quarter < 15
        else:  # same size, the white quarter at the bottom right
            assert frames.shape == (2, 24, 32, 3)
            assert frames[0, 12:, 16:].mean() > 240 and quarter < 15


def test_picture_size_change_mid_stream_keeps_the_first_size(tmp_path, monkeypatch):
    """An FLV whose packets switch from 64x48 to 48x48 pictures (each FLV1 picture header carries its own
    size): the later frames are scaled to the first one's size, as FFmpeg's command line does, instead of
    a numpy error ending the whole prepare. Fast and decode-everything paths agree."""
    def encode(w: int, h: int, first: int) -> list:
        ctx = av.CodecContext.create("flv", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, "yuv420p", Fraction(1, 1000)
        packets = []
        for i in range(first, first + 50):
            img = np.full((h, w, 3), 40 + 150 * (i >= 50), np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            f.pts, f.time_base = i * 40, Fraction(1, 1000)
            packets += ctx.encode(f)
        return packets + ctx.encode(None)

    path = tmp_path / "size_change.flv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("flv", rate=25)
        s.width, s.height, s.pix_fmt, s.time_base = 64, 48, "yuv420p", Fraction(1, 1000)
        for p in encode(64, 48, 0) + encode(48, 48, 50):
            p.stream = s
            out.mux(p)
    results = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(video, "_fast_path", lambda *a, **kw: None)
        frames, times, _ = read_frames(path, short_side=24)
        assert frames.shape == (4, 24, 32, 3) and times == [0.0, 1.0, 2.0, 3.0]
        assert [round(float(f.mean()) / 10) for f in frames] == [4, 4, 19, 19]  # the later pictures' content
        results.append(frames)
    assert np.array_equal(*results)


def test_a_16_bit_grey_png_keeps_its_picture(tmp_path):
    """A 16-bit grey PNG (PIL mode I;16) read for UrbanSound8K-AV: by its top 8 bits, not PIL's convert,
    which clips every value over 255 to white (this gradient came out 99.6% white)."""
    from PIL import Image

    from avdata.media.image import load_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode in ("I;16", "I")  # older Pillow (10.0) opens it as I
    rgb = load_image(tmp_path / "grey16.png", 48)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[0, :, 0], (ramp[0] >> 8).astype(np.uint8))
    assert (rgb[..., 0] == rgb[..., 2]).all() and abs(float(rgb.mean()) - 127.5) < 1
