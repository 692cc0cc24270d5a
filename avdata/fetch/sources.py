"""Pinned source lists: which raw files a dataset has, with size and sha256."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from avdata.errors import AvdataError


class SourceFile(NamedTuple):
    """One raw file. A tuple rather than a dataclass: CREMA-D's list has 22,326 of them, read at every
    prepare."""

    path: str  # relative path inside the raw tree, forward slashes, e.g. "AudioWAV/1001_DFA_ANG_XX.wav"
    size: int
    sha256: str


def load_source_list(path: str | Path) -> list[SourceFile]:
    """Read a `path<TAB>size<TAB>sha256` list with a header line; AvdataError naming a bad line."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].split("\t") if lines else []
    if [h.strip().lower() for h in header[:3]] != ["path", "size", "sha256"]:
        raise AvdataError(f"{path}: first line must be the header 'path<TAB>size<TAB>sha256'")
    out: list[SourceFile] = []
    for lineno, line in enumerate(lines[1:], start=2):
        row = line.split("\t")
        if len(row) < 3:
            if not line.strip():
                continue
            raise AvdataError(f"{path}:{lineno}: expected 3 tab-separated fields, got {row!r}")
        rel, size, digest = row[0].strip(), row[1].strip(), row[2].strip().lower()
        if not size.isdigit() or len(digest) != 64:
            raise AvdataError(f"{path}:{lineno}: bad size or sha256 in {row!r}")
        out.append(SourceFile(rel, int(size), digest))
    return out
