"""UrbanSound8K-AV in the Kaggle layout (Dataset_v3_vision/<class>/*.jpg, Dataset_v3_sound/<class>/*.wav),
with WAVs at varied rates and channel counts and a few unpaired files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
           "gun_shot", "jackhammer", "siren", "street_music"]
RATES = [44100, 22050, 48000, 16000]


def make_urbansound_raw(root: str | Path, per_class: int = 6, seed: int = 0, as_zip: bool = False,
                        unpaired: int = 1, top: str = "urbansound8k-av") -> Path:
    """Returns the folder (or the zip, with a top folder inside as Kaggle zips may have)."""
    root = Path(root)
    base = root / top
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(CLASSES):
        for n in range(per_class + unpaired):
            stem = f"{100000 + label * 1000 + n}-{label}-0-{n}"
            if n < per_class or n % 2 == 0:
                img = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
                img[:, label * 6:label * 6 + 6] = 230
                (base / "Dataset_v3_vision" / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(base / "Dataset_v3_vision" / cls / f"{stem}.jpg", quality=90)
            if n < per_class or n % 2 == 1:
                sr, ch = RATES[n % len(RATES)], 1 + n % 2
                t = np.arange(int(0.5 * sr)) / sr
                wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t)
                (base / "Dataset_v3_sound" / cls).mkdir(parents=True, exist_ok=True)
                sf.write(str(base / "Dataset_v3_sound" / cls / f"{stem}.wav"),
                         np.stack([wave] * ch, axis=1).astype(np.float32), sr, subtype="PCM_16")
    if not as_zip:
        return base
    zpath = root / "urbansound8k-av.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(base.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return zpath
