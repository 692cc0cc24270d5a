"""Small AVE-format raw trees in the real formats, for tests, demos and benchmarks.

Each clip is a real MP4 written with PyAV: H.264 (libx264) video with B-frames where PyAV's FFmpeg has
libx264, else FFmpeg's own MPEG-4 part 2 encoder with B-frames, plus AAC audio (FFmpeg's encoder) at
44.1 kHz, mono or stereo, in the same container. Frame rates cycle through those of the real sample clips,
211/12 (17.58), 359/12 (29.92) and 25 fps, so no two neighbouring clips share a rate. The lists
(`Annotations.txt`, `trainSet.txt`, `valSet.txt`, `testSet.txt`) are in the dataset's own format, with or
without the header line.

The picture and the sound carry the class: a coloured square at a class-dependent place of a 7 x 4 grid,
drifting a few pixels, over dark noise; a tone of 220 * 2 ** (label / 8) Hz with noise. Output is
deterministic for a seed and library build (one encoder thread, no timestamps written).
"""

from __future__ import annotations

import colorsys
import random
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence, cast

import av
import numpy as np

from avdata.datasets.ave.annotations import ANNOTATIONS, CATEGORIES, SPLIT_FILES, format_rows
from avdata.datasets.ziputil import write_zip

#: The frame rates of the three real sample clips.
REAL_FPS = (Fraction(211, 12), Fraction(359, 12), Fraction(25))
AUDIO_SR = 44100
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def video_encoder(prefer: str = "auto") -> str:
    """"libx264" when PyAV's FFmpeg has it (only its encoder has that name), else "mpeg4" (FFmpeg's own
    encoder, always built in); `prefer` forces one of them."""
    if prefer != "auto":
        return prefer
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def class_colour(label: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label * 11 % 28) / 28, 0.9, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def tone_hz(label: int) -> float:
    return 220.0 * 2 ** (label / 8)


def class_frames(label: int, n: int, width: int, height: int, seed: int):
    """n RGB uint8 frames: a fixed dark noise background, a slow brightness drift and the class square
    drifting a few pixels (content that changes like a video's, so B-frames pay)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    side = max(4, min(width // 7, height // 4))
    x0, y0 = (label % 7) * (width - side) // 6, (label // 7) * (height - side) // 3
    for i in range(n):
        img = background + np.uint8(8 + 8 * np.sin(i / 9))
        dx, dy = int(3 * np.sin(i / 5)), int(3 * np.cos(i / 7))
        x, y = int(np.clip(x0 + dx, 0, width - side)), int(np.clip(y0 + dy, 0, height - side))
        img[y:y + side, x:x + side] = class_colour(label)
        yield img


def class_wave(label: int, n: int, seed: int, sr: int = AUDIO_SR) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    t = np.arange(n) / sr
    return (0.35 * np.sin(2 * np.pi * tone_hz(label) * t) + 0.03 * rng.standard_normal(n)).astype(np.float32)


def write_mp4(path: str | Path, label: int, duration: float = 10.0, width: int = 160, height: int = 120,
              fps: Fraction | int = Fraction(211, 12), seed: int = 0, channels: int = 1,
              codec: str = "auto", b_frames: int = 2) -> str:
    """One MP4: round(duration * fps) video frames with runs of `b_frames` B-frames between references and
    duration * 44,100 AAC samples. Returns the video encoder used."""
    codec = video_encoder(codec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = Fraction(fps)
    n = max(1, int(round(duration * fps)))
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format="mp4") as out:
        # the codec is a name known only at run time: PyAV's stubs cannot tell the kind of stream
        vs = cast("av.video.stream.VideoStream", out.add_stream(codec, rate=fps))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        if codec == "libx264":
            # b-adapt=0 and no scene-cut detection: the full run of B-frames whatever the content (x264 would
            # otherwise code small noisy frames as I/P only); key frames every 250 frames as x264's default
            # gives, 1-2 per clip like the real ones
            vs.codec_context.options = {"preset": "veryfast", "threads": "1",
                                        "x264-params": f"bframes={b_frames}:b-adapt=0:scenecut=0"}
        else:
            vs.codec_context.max_b_frames = b_frames
            vs.bit_rate = 400_000
        aus = out.add_stream("aac", rate=AUDIO_SR)
        aus.layout = layout
        for i, img in enumerate(class_frames(label, n, width, height, seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        wave = class_wave(label, int(duration * AUDIO_SR), seed)
        planes = np.stack([wave] * channels) if channels == 2 else wave[None]
        for start in range(0, planes.shape[1], 1024):
            chunk = np.ascontiguousarray(planes[:, start:start + 1024])
            sound = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            sound.sample_rate, sound.pts, sound.time_base = AUDIO_SR, start, Fraction(1, AUDIO_SR)
            out.mux(aus.encode(sound))
        out.mux(aus.encode())
    return codec


def video_ids(n: int, seed: int) -> list[str]:
    """n distinct 11-character ids drawn like YouTube's (letters, digits, '-' and '_')."""
    rng = random.Random(f"synth-ave-ids:{seed}")
    out: list[str] = []
    while len(out) < n:
        vid = "".join(rng.choice(_ID_CHARS) for _ in range(11))
        if vid not in out:
            out.append(vid)
    return out


def make_ave_raw(
    root: str | Path,
    labels: Sequence[int] | None = None,
    per_class: int = 1,
    seed: int = 0,
    duration: float = 10.0,
    width: int = 160,
    height: int = 120,
    header: bool = True,
    split_cycle: Sequence[str] = ("train", "train", "val", "test"),
    multi_label: int = 0,
    codec: str = "auto",
    folder: str = "AVE",
) -> dict[str, Any]:
    """Write `<folder>/<VideoID>.mp4` for `per_class` clips of each class in `labels` (default all 28) and
    the four lists in the root. Rows go to splits by `split_cycle` in the order written; `multi_label`
    extra rows list existing videos under a second category in the same split, as 45 real videos are.

    Returns {"rows": {split: [(category, id, quality, start, end)]}, "videos": {id: {label, fps, channels}},
    "codec": encoder used, "header": header}."""
    root = Path(root)
    labels = list(range(len(CATEGORIES))) if labels is None else list(labels)
    plan = [lab for lab in labels for _ in range(per_class)]
    ids = video_ids(len(plan), seed)
    rng = random.Random(f"synth-ave:{seed}")
    rows: dict[str, list[tuple]] = {s: [] for s in SPLIT_FILES}
    videos: dict[str, dict[str, Any]] = {}
    used = ""
    for i, (vid, label) in enumerate(zip(ids, plan)):
        fps, channels = REAL_FPS[i % len(REAL_FPS)], 1 + (i // len(REAL_FPS)) % 2
        used = write_mp4(root / folder / f"{vid}.mp4", label, duration, width, height, fps, seed * 1000 + i,
                         channels, codec)
        start = rng.randrange(0, int(duration))
        row = (CATEGORIES[label], vid, "good", start, rng.randrange(start + 1, int(duration) + 1))
        split = split_cycle[i % len(split_cycle)]
        rows[split].append(row)
        videos[vid] = {"label": label, "fps": fps, "channels": channels, "split": split}
    extra = 0
    for i, vid in enumerate(ids[:multi_label]):
        other = (videos[vid]["label"] + 1 + i) % len(CATEGORIES)
        rows[videos[vid]["split"]].append((CATEGORIES[other], vid, "good", 0, int(duration)))
        extra += 1
    write_lists(root, rows, header)
    return {"rows": rows, "videos": videos, "codec": used, "header": header}


def write_lists(root: str | Path, rows: dict[str, list[tuple]], header: bool) -> None:
    """Annotations.txt (all rows, grouped by category as the real one is) and the three split lists."""
    root = Path(root)
    everything = sorted((r for split_rows in rows.values() for r in split_rows), key=lambda r: r[0])
    (root / ANNOTATIONS).write_text(format_rows(everything, header), encoding="utf-8")
    for split, name in SPLIT_FILES.items():
        (root / name).write_text(format_rows(rows[split], header), encoding="utf-8")


def write_ave_zip(root: str | Path, zpath: str | Path, folder: str = "AVE") -> Path:
    """AVE.zip of a generated tree: `<folder>/<VideoID>.mp4` and the four lists, fixed member times."""
    root = Path(root)
    members = [(p.relative_to(root).as_posix(), p) for p in sorted((root / folder).glob("*.mp4"))]
    members += [(name, root / name) for name in (ANNOTATIONS, *SPLIT_FILES.values()) if (root / name).is_file()]
    return write_zip(zpath, members)
