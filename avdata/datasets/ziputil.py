"""Reproducible zips for the generators of raw test data (each dataset's `synth.py`): the real datasets
ship as zips (MNIST-DVS, UrbanSound8K-AV), so the generated ones are zips too, byte-identical for a seed."""

from __future__ import annotations

import zipfile
from pathlib import Path

#: Member time of every zip the generators write (the zip format's earliest), so the bytes are reproducible.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def write_zip(zpath: str | Path, files: list[tuple[str, Path]], level: int = 6) -> Path:
    """A zip of (member name, file) pairs in the given order, deflated at `level`, mode 0644, fixed
    member times."""
    zpath = Path(zpath)
    zpath.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, Path(path).read_bytes(), compresslevel=level)
    return zpath
