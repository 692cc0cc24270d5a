"""UrbanSound8K-AV in the Kaggle layout (lingyueguo/urbansound8k-av): `Dataset_v3_vision/<class>/<name>.jpg`
and `Dataset_v3_sound/<class>/<name>.wav`, paired by file name, for the 10 UrbanSound8K classes.

WAVs come in the encodings of real UrbanSound8K files (`FORMATS`, in turn): 44,100 Hz stereo 16-bit, the
encoding of the real excerpt 7061-6-0-0.wav in `shared/datasets/urbansound8k/sample/`; 22,050 Hz mono
32-bit float, as the nine real excerpts re-encoded by their publisher there; and, as UrbanSound8K also
mixes rates from 8 to 96 kHz and 8/16/24-bit depths, 48,000 Hz stereo 24-bit and 16,000 Hz mono 8-bit.
Real excerpts last up to 4 s; `seconds` (default 0.5) keeps generated sets fast. `unpaired` extra
files per class have no partner (alternately an image without a sound and
a sound without an image). The image (a bright bar whose position depends on the class) and the sound (a
tone whose pitch depends on it) both carry the class. Names follow UrbanSound8K's
`<fsID>-<classID>-<occurrenceID>-<sliceID>`.

Whether the Kaggle zip holds a top folder could not be checked offline: `top` picks one (the default
"urbansound8k-av") or none (top=None), and readers must accept both. Zips are written with fixed member
times, so the same arguments give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from avdata.datasets.ziputil import write_zip

CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
           "gun_shot", "jackhammer", "siren", "street_music"]
#: (sample rate, channels, libsndfile subtype) of the generated WAVs, in turn
FORMATS = [(44100, 2, "PCM_16"), (22050, 1, "FLOAT"), (48000, 2, "PCM_24"), (16000, 1, "PCM_U8")]


def write_wav(path: Path, data: np.ndarray, sr: int, subtype: str) -> None:
    """[n, channels] float32 as a WAV file. Float through scipy, which writes the layout of the real
    re-encoded excerpts (18-byte fmt, fact chunk, no PEAK chunk); libsndfile's float WAVs carry a PEAK
    chunk with the time of writing, which would make the bytes differ from run to run."""
    if subtype == "FLOAT":
        from scipy.io import wavfile  # a librosa dependency

        wavfile.write(str(path), sr, data if data.shape[1] > 1 else data[:, 0])
    else:
        sf.write(str(path), data, sr, subtype=subtype)


def stem_of(label: int, n: int) -> str:
    return f"{100000 + label * 1000 + n}-{label}-0-{n}"


def make_urbansound_raw(root: str | Path, per_class: int = 6, seed: int = 0, as_zip: bool = False,
                        unpaired: int = 1, top: str | None = "urbansound8k-av",
                        image_size: tuple[int, int] = (64, 48), seconds: float = 0.5) -> Path:
    """Write per_class image+sound pairs and `unpaired` lone files per class.

    Returns the dataset folder (root/top, or root when top is None), or with as_zip the zip
    root/urbansound8k-av.zip whose members start with `top/` (or directly with `Dataset_v3_...`); the
    loose files are kept next to it.
    """
    root = Path(root)
    base = root / top if top else root
    rng = np.random.default_rng(seed)
    w, h = image_size
    written: list[Path] = []
    for label, cls in enumerate(CLASSES):
        for n in range(per_class + unpaired):
            stem = stem_of(label, n)
            if n < per_class or (n - per_class) % 2 == 0:
                img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                bar = max(1, w // len(CLASSES))
                img[:, label * bar:(label + 1) * bar] = 230
                p = base / "Dataset_v3_vision" / cls / f"{stem}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p, quality=90)
                written.append(p)
            if n < per_class or (n - per_class) % 2 == 1:
                sr, ch, subtype = FORMATS[n % len(FORMATS)]
                t = np.arange(int(seconds * sr)) / sr
                wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t) + 0.02 * rng.standard_normal(t.size)
                p = base / "Dataset_v3_sound" / cls / f"{stem}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                write_wav(p, np.stack([wave] * ch, axis=1).astype(np.float32), sr, subtype)
                written.append(p)
    if not as_zip:
        return base
    return write_zip(root / "urbansound8k-av.zip", [(p.relative_to(root).as_posix(), p) for p in sorted(written)])
