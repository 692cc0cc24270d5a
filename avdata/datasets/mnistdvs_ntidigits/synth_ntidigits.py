"""An N-TIDIGITS18 HDF5 file in the real layout (as tonic's NTIDIGITS18 reads it): `{split}_labels`
(byte-string sample ids), `{split}_addresses/<id>` (cochlea channel 0..63) and `{split}_timestamps/<id>`
(float seconds) for split in train, test.

Ids are `<speaker>-<digits>`: the last '-' field is the spoken digit string, one character for an
isolated digit ('z' = zero, 'o' = oh, '1'..'9'), several for a connected string. Each spoken digit gives
`n` events over 0.45 s in a band of channels centred on 4 + 5.5 * d (d = 0..9 for z..9, 10 for o), so the
channel profile carries the class. No real N-TIDIGITS18 recording was at hand, so the event counts and
durations are not taken from real data (unlike the MNIST-DVS generator's); only the file layout is real.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

WORDS = {0: "z", 1: "1", 2: "2", 3: "3", 4: "4", 5: "5", 6: "6", 7: "7", 8: "8", 9: "9"}
DEFAULT_NAME = "n-tidigits.hdf5"


def band_of(ch: str) -> int:
    """Band index of a spoken digit character: 'z' 0, '1'..'9', 'o' 10."""
    return 10 if ch == "o" else (0 if ch == "z" else int(ch))


def cochlea_events(digits: str, rng: np.random.Generator, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """int16 channel addresses and sorted float64 timestamps (s) of one utterance: 0.5 s per digit."""
    chans, times = [], []
    for i, ch in enumerate(digits):
        chans.append(np.clip(rng.normal(4 + band_of(ch) * 5.5, 2.0, n), 0, 63).astype(np.int16))
        times.append(np.sort(rng.uniform(i * 0.5, i * 0.5 + 0.45, n)))
    return np.concatenate(chans), np.concatenate(times)


def sample_ids(split: str, per_class: int) -> list[str]:
    """per_class isolated samples of each digit 0..9 (as 'z', '1'..'9'), one 'o' and one connected string."""
    ids = [f"{'mw'[k % 2]}{split[:2]}{k:02d}-{WORDS[d]}" for d in range(10) for k in range(per_class)]
    return ids + [f"o{split[:2]}00-o", f"c{split[:2]}00-1z3"]


def make_ntidigits_h5(path: str | Path, per_class: int = 4, seed: int = 0, name: str = DEFAULT_NAME) -> Path:
    """Write the file (path, or path/name when path is a folder) and return its path. Each split holds
    10 * per_class isolated digits, an 'o' sample and a multi-digit string ("1z3")."""
    path = Path(path)
    if path.suffix not in (".hdf5", ".h5"):
        path = path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for split in ("train", "test"):
            ids = sample_ids(split, per_class)
            addr_g, ts_g = f.create_group(f"{split}_addresses"), f.create_group(f"{split}_timestamps")
            for sid in ids:
                a, t = cochlea_events(sid.split("-")[-1], rng)
                addr_g.create_dataset(sid, data=a)
                ts_g.create_dataset(sid, data=t)
            f.create_dataset(f"{split}_labels", data=np.array([s.encode() for s in ids]))
    return path
