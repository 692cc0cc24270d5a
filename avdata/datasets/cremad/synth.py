"""Small CREMA-D-format raw trees in the real formats: `VideoFlash/<clip>.flv` (FLV container: video in
yuv420p + an MP3 track at 44.1 kHz mono, written with PyAV/FFmpeg) and `AudioWAV/<clip>.wav` (16 kHz mono
16-bit PCM), named after real clips of the published split so split membership can be tested.

Structure of the real files, copied where FFmpeg allows: 480x360, 29.97 fps (30000/1001), a single key
frame per clip (the first), an MP3 track at 44,100 Hz mono (libmp3lame) inside the FLV, and a video bit
rate of 900 kbit/s, about what the real VideoFlash files average (2.44 GB over 7,442 clips of about
2.5 s). What differs is the codec: real CREMA-D video is On2 VP6 (`vp6f`), and FFmpeg has a VP6 decoder
but no VP6 encoder, so the video here is Sorenson FLV1 (`flv`), the other codec FLV carries, which decodes
about 10x faster. Tests whose outcome depends on the codec (decoding, key-frame handling, speed) therefore
run on the real VP6 sample in ../shared/datasets/cremad/sample/ (tests/test_cremad_real.py,
`benchmarks/prepare_cremad.py --real N`); these generated clips test everything else.

The picture and the sound carry the emotion: a coloured square whose colour and position depend on the
class, jittering a few pixels, over a noisy dark background; a tone whose pitch depends on the class, with
noise.

Output is deterministic for a given seed and library build (no timestamps are written).
"""

from __future__ import annotations

import csv
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf

from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.datasets.cremad.sources import LISTS

EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
COLOURS = [(220, 40, 40), (60, 160, 60), (140, 60, 200), (240, 200, 40), (128, 128, 128), (40, 80, 220)]
TONES_HZ = [220.0, 330.0, 440.0, 550.0, 660.0, 880.0]
BAD_KINDS = ["truncated FLV", "corrupt FLV (random bytes)", "Git LFS pointer stub FLV", "truncated WAV",
             "empty WAV", "WAV missing"]
AUDIO_SR_IN_FLV = 44100  # the real FLVs' MP3 track: 44.1 kHz mono
#: The real clips' frame rate, 29.97 fps.
FPS = Fraction(30000, 1001)


def pick_clips(n: int, seed: int = 0) -> list[str]:
    """A deterministic mix of published train and test clips, a seeded choice within each (split, emotion)
    pool, round robin so that any 6 consecutive picks cover all 6 emotions and both splits:
    (train ANG, test DIS, train FEA, test HAP, train NEU, test SAD, test ANG, train DIS, ...)."""
    rng = random.Random(f"synth-cremad:{seed}")
    pools: dict[tuple[str, str], list[str]] = {}
    for name, split in (("train.csv", "train"), ("test.csv", "test")):
        with open(LISTS / name, newline="") as f:
            for row in csv.reader(f):
                if row:
                    pools.setdefault((split, row[0].split("_")[2]), []).append(row[0])
    chosen: list[str] = []
    splits = ("train", "test")
    order = [(splits[(i + j) % 2], e) for j in range(2) for i, e in enumerate(EMOTIONS)]
    i = 0
    while len(chosen) < n:
        pool = sorted(pools[order[i % len(order)]])
        c = rng.choice(pool)
        if c not in chosen:
            chosen.append(c)
        i += 1
    return chosen


def class_frames(label: int, n: int, width: int, height: int, seed: int):
    """n RGB uint8 frames: dark noise (a pool of 4 noise images, cheap to make) and the class square."""
    rng = np.random.default_rng(seed)
    pool = [rng.integers(0, 40, (height, width, 3), dtype=np.uint8) for _ in range(min(4, n))]
    side = max(4, min(width, height) // 3)
    x0 = (label % 3) * (width - side) // 2
    y0 = (label // 3) * (height - side)
    jitter = rng.integers(-3, 4, (n, 2))
    for i in range(n):
        img = pool[i % len(pool)].copy()
        x = int(np.clip(x0 + jitter[i, 0], 0, width - side))
        y = int(np.clip(y0 + jitter[i, 1], 0, height - side))
        img[y:y + side, x:x + side] = COLOURS[label]
        yield img


def write_flv(path: Path, label: int, duration: float, width: int, height: int, fps: int | Fraction, seed: int,
              with_audio: bool = True, bit_rate: int | None = 900_000, gop: int | None = None) -> None:
    """One FLV: round(duration * fps) frames of Sorenson FLV1 (yuv420p) + an MP3 tone (44,100 Hz mono).
    gop: None writes a single key frame (the first), as in the real clips; N puts one every N frames.
    Neither adds key frames at scene cuts."""
    fps = Fraction(fps)
    n = max(1, int(round(duration * fps)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as out:
        vs = out.add_stream("flv", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if bit_rate:
            vs.bit_rate = bit_rate
        vs.codec_context.gop_size = gop or n + 1
        vs.options = {"sc_threshold": "1000000000"}
        if with_audio:
            aus = out.add_stream("libmp3lame", rate=AUDIO_SR_IN_FLV)
            aus.layout = "mono"
        for i, img in enumerate(class_frames(label, n, width, height, seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if with_audio:
            total = int(duration * AUDIO_SR_IN_FLV)
            t = np.arange(total) / AUDIO_SR_IN_FLV
            wave = (0.3 * np.sin(2 * np.pi * TONES_HZ[label] * t)).astype(np.float32)
            pts = 0
            for start in range(0, total, 1152):
                chunk = wave[start:start + 1152]
                sound = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                sound.sample_rate, sound.pts, sound.time_base = AUDIO_SR_IN_FLV, pts, Fraction(1, AUDIO_SR_IN_FLV)
                pts += len(chunk)
                for pkt in aus.encode(sound):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)


def write_wav(path: Path, label: int, duration: float, seed: int, sr: int = 16000) -> None:
    """16-bit PCM mono: the class tone (0.4) plus Gaussian noise (0.05)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    wave = 0.4 * np.sin(2 * np.pi * TONES_HZ[label] * t) + 0.05 * rng.standard_normal(t.size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), sr, subtype="PCM_16")


def lfs_pointer_text(data_seed: int = 0, size: int = 123456) -> str:
    oid = np.random.default_rng(data_seed).bytes(32).hex()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def make_cremad_raw(
    root: str | Path,
    clips: list[str] | None = None,
    n_clips: int = 12,
    seed: int = 0,
    width: int = 480,
    height: int = 360,
    fps: int | Fraction = FPS,
    duration_range: tuple[float, float] = (1.5, 4.0),
    with_bad: bool = False,
    gop: int | None = None,
) -> dict[str, Any]:
    """Write VideoFlash/<clip>.flv and AudioWAV/<clip>.wav for n_clips good clips (or the given `clips`).

    with_bad adds 6 more clips (with `clips` given: its last 6 become the bad ones), one per kind of
    damage, in this order: a truncated FLV (cut to a fifth), a corrupt FLV (random bytes), a Git LFS
    pointer stub in place of the FLV, a truncated WAV (cut in the middle of its data chunk), an empty WAV
    (valid header, 0 samples) and a clip whose WAV is missing. gop: key frame spacing (see `write_flv`);
    the default, one key frame per clip at 29.97 fps and 480x360, is the real clips' structure.

    Returns {"good": [clips], "bad": {clip: what was done}, "durations": {clip: seconds},
    "rows": [(relative path, size, sha256)] of every file written, sorted by path}.
    """
    root = Path(root)
    n_bad = len(BAD_KINDS) if with_bad else 0
    names = list(clips) if clips else pick_clips(n_clips + n_bad, seed)
    if len(names) < n_bad:
        raise AvdataError(f"with_bad needs at least {n_bad} clips, got {len(names)}: pass more clips")
    good, bad_names = names[: len(names) - n_bad], names[len(names) - n_bad:]
    rng = random.Random(f"synth-cremad-dur:{seed}")
    durations: dict[str, float] = {}
    for i, clip in enumerate(names):
        label = EMOTIONS.index(clip.split("_")[2])
        dur = round(rng.uniform(*duration_range), 3)
        durations[clip] = dur
        write_flv(root / "VideoFlash" / f"{clip}.flv", label, dur, width, height, fps, seed * 1000 + i, gop=gop)
        write_wav(root / "AudioWAV" / f"{clip}.wav", label, dur, seed * 1000 + i)
    bad: dict[str, str] = {}
    for clip, kind in zip(bad_names, BAD_KINDS):
        flv, wav = root / "VideoFlash" / f"{clip}.flv", root / "AudioWAV" / f"{clip}.wav"
        if kind == "truncated FLV":
            flv.write_bytes(flv.read_bytes()[: flv.stat().st_size // 5])
        elif kind.startswith("corrupt FLV"):
            flv.write_bytes(np.random.default_rng(seed).bytes(20000))
        elif kind.startswith("Git LFS"):
            flv.write_text(lfs_pointer_text(seed))
        elif kind == "truncated WAV":
            wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
        elif kind == "empty WAV":
            sf.write(str(wav), np.zeros(0, np.float32), 16000, subtype="PCM_16")
        elif kind == "WAV missing":
            wav.unlink()
        bad[clip] = kind
    return {"good": good, "bad": bad, "durations": durations, "rows": source_rows(root)}


def source_rows(root: str | Path) -> list[tuple[str, int, str]]:
    """(path relative to root, size, sha256) of every media file (.flv, .wav, .mp3) under root, by path."""
    root = Path(root)
    return [(p.relative_to(root).as_posix(), p.stat().st_size, sha256_file(p))
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".flv", ".wav", ".mp3")]


def write_source_list(root: str | Path, path: str | Path) -> Path:
    """A `path<TAB>size<TAB>sha256` list (with a header) of the media files under root, like
    manifests/<dataset>/files.tsv, for --sources in tests."""
    path = Path(path)
    lines = ["path\tsize\tsha256"] + [f"{p}\t{size}\t{digest}" for p, size, digest in source_rows(root)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
