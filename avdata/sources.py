"""Pinned source lists: which raw files a dataset has, with size and sha256."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative path inside the raw tree, forward slashes, e.g. "AudioWAV/1001_DFA_ANG_XX.wav"
    size: int
    sha256: str


def manifest_dir(dataset: str) -> Path:
    """The folder of pinned files for `dataset` (shipped as package data of `manifests`)."""
    return Path(str(resources.files("manifests").joinpath(dataset)))


def load_source_list(path: str | Path) -> list[SourceFile]:
    """Read a `path<TAB>size<TAB>sha256` list with a header line; raise ValueError naming bad lines."""
    path = Path(path)
    out: list[SourceFile] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]] != ["path", "size", "sha256"]:
            raise ValueError(f"{path}: first line must be the header 'path<TAB>size<TAB>sha256'")
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields, got {row!r}")
            rel, size, digest = row[0].strip(), row[1].strip(), row[2].strip().lower()
            if not size.isdigit() or len(digest) != 64:
                raise ValueError(f"{path}:{lineno}: bad size or sha256 in {row!r}")
            out.append(SourceFile(rel, int(size), digest))
    return out


def pinned_sources(dataset: str) -> list[SourceFile]:
    return load_source_list(manifest_dir(dataset) / "files.tsv")
