"""Small CREMA-D-format raw trees in the real formats: FLV (Sorenson FLV1 video + MP3 audio, written
with PyAV) and 16 kHz mono 16-bit PCM WAV, named after real clips of the published split.

The picture and the sound carry the emotion (a coloured square whose colour and position depend on the
class; a tone whose pitch depends on it), so a model can learn from either.
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

from ..hashing import sha256_file
from ..sources import manifest_dir

EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
COLOURS = [(220, 40, 40), (60, 160, 60), (140, 60, 200), (240, 200, 40), (128, 128, 128), (40, 80, 220)]
TONES_HZ = [220.0, 330.0, 440.0, 550.0, 660.0, 880.0]


def pick_clips(n: int, seed: int = 0) -> list[str]:
    """A deterministic mix of published train and test clips covering every emotion and several actors."""
    rng = random.Random(f"synth-cremad:{seed}")
    pools: dict[tuple[str, str], list[str]] = {}
    for name, split in (("train.csv", "train"), ("test.csv", "test")):
        with open(manifest_dir("cremad") / name, newline="") as f:
            for row in csv.reader(f):
                if row:
                    pools.setdefault((split, row[0].split("_")[2]), []).append(row[0])
    chosen: list[str] = []
    order = [(s, e) for e in EMOTIONS for s in ("train", "test")]
    i = 0
    while len(chosen) < n:
        pool = sorted(pools[order[i % len(order)]])
        c = rng.choice(pool)
        if c not in chosen:
            chosen.append(c)
        i += 1
    return chosen


def write_flv(path: Path, label: int, duration: float, width: int, height: int, fps: int, seed: int,
              with_audio: bool = True) -> None:
    rng = np.random.default_rng(seed)
    n = max(1, int(round(duration * fps)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as out:
        vs = out.add_stream("flv", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if with_audio:
            aus = out.add_stream("libmp3lame", rate=22050)
            aus.layout = "mono"
        side = max(4, min(width, height) // 3)
        x0 = (label % 3) * (width - side) // 2
        y0 = (label // 3) * (height - side)
        for i in range(n):
            img = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
            img[y0:y0 + side, x0:x0 + side] = COLOURS[label]
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if with_audio:
            total = int(duration * 22050)
            t = np.arange(total) / 22050.0
            wave = (0.3 * np.sin(2 * np.pi * TONES_HZ[label] * t)).astype(np.float32)
            pts = 0
            for start in range(0, total, 1152):
                chunk = wave[start:start + 1152]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 22050, pts, Fraction(1, 22050)
                pts += len(chunk)
                for pkt in aus.encode(frame):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)


def write_wav(path: Path, label: int, duration: float, seed: int, sr: int = 16000) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    wave = 0.4 * np.sin(2 * np.pi * TONES_HZ[label] * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), sr, subtype="PCM_16")


def make_cremad_raw(
    root: str | Path,
    clips: list[str] | None = None,
    n_clips: int = 12,
    seed: int = 0,
    width: int = 480,
    height: int = 360,
    fps: int = 30,
    duration_range: tuple[float, float] = (1.5, 4.0),
    with_bad: bool = False,
) -> dict[str, Any]:
    """Write VideoFlash/<clip>.flv and AudioWAV/<clip>.wav; with_bad adds one clip per kind of damage.

    Returns {"good": [clips], "bad": {clip: what was done}, "rows": [(path, size, sha256)]}.
    """
    root = Path(root)
    n_bad = 6 if with_bad else 0
    names = clips or pick_clips(n_clips + n_bad, seed)
    good, bad_names = names[: len(names) - n_bad], names[len(names) - n_bad:]
    rng = random.Random(f"synth-cremad-dur:{seed}")
    for i, clip in enumerate(names):
        label = EMOTIONS.index(clip.split("_")[2])
        dur = round(rng.uniform(*duration_range), 3)
        write_flv(root / "VideoFlash" / f"{clip}.flv", label, dur, width, height, fps, seed * 1000 + i)
        write_wav(root / "AudioWAV" / f"{clip}.wav", label, dur, seed * 1000 + i)
    bad: dict[str, str] = {}
    if with_bad:
        b = iter(bad_names)
        c = next(b)  # truncated FLV: cut to a fifth
        p = root / "VideoFlash" / f"{c}.flv"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 5])
        bad[c] = "truncated FLV"
        c = next(b)  # corrupt FLV: random bytes
        (root / "VideoFlash" / f"{c}.flv").write_bytes(np.random.default_rng(seed).bytes(20000))
        bad[c] = "corrupt FLV (random bytes)"
        c = next(b)  # LFS pointer stub instead of the FLV
        (root / "VideoFlash" / f"{c}.flv").write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123456\n")
        bad[c] = "Git LFS pointer stub FLV"
        c = next(b)  # truncated WAV: data chunk cut
        p = root / "AudioWAV" / f"{c}.wav"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        bad[c] = "truncated WAV"
        c = next(b)  # empty WAV: valid header, zero samples
        sf.write(str(root / "AudioWAV" / f"{c}.wav"), np.zeros(0, np.float32), 16000, subtype="PCM_16")
        bad[c] = "empty WAV"
        c = next(b)  # missing WAV
        (root / "AudioWAV" / f"{c}.wav").unlink()
        bad[c] = "WAV missing"
    rows = [(p.relative_to(root).as_posix(), p.stat().st_size, sha256_file(p))
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".flv", ".wav")]
    return {"good": good, "bad": bad, "rows": rows}


def write_source_list(root: str | Path, path: str | Path) -> Path:
    """A `path<TAB>size<TAB>sha256` list of the files under root (for --sources in tests)."""
    root, path = Path(root), Path(path)
    lines = ["path\tsize\tsha256"]
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".flv", ".wav", ".mp3"):
            lines.append(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\t{sha256_file(p)}")
    path.write_text("\n".join(lines) + "\n")
    return path
