"""Recognising Git LFS pointer stubs.

A Git LFS repository keeps each large file as a tiny text "pointer" in git; the real bytes live on an
LFS server. A zip of the repository, a plain clone without `git lfs pull`, or a mirror's plain raw
address gives these stubs instead of media:

    version https://git-lfs.github.com/spec/v1
    oid sha256:4d7a2146...
    size 12345
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LFS_PREFIX = b"version https://git-lfs"
#: Pointer files are about 130 bytes; the spec caps them at 1024.
MAX_POINTER_SIZE = 1024

_OID_RE = re.compile(rb"^oid ([a-z0-9]+):([0-9a-f]+)\s*$", re.MULTILINE)
_SIZE_RE = re.compile(rb"^size (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class LfsPointer:
    """What a pointer says about the real file: its hash (`oid`, hex) and size in bytes."""

    oid: str
    size: int
    algorithm: str = "sha256"


def _head(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> bytes | None:
    """The whole content when it is small enough to be a pointer, else None."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        return data if len(data) <= MAX_POINTER_SIZE else None
    path = Path(path_or_bytes)
    try:
        if not path.is_file() or path.stat().st_size > MAX_POINTER_SIZE:
            return None
        return path.read_bytes()
    except OSError:
        return None


def is_lfs_pointer(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> bool:
    """True when a file (a path) or content (bytes) is a Git LFS pointer stub rather than real data."""
    data = _head(path_or_bytes)
    return data is not None and data.startswith(LFS_PREFIX)


def parse_lfs_pointer(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> LfsPointer | None:
    """The oid and size a pointer stub names; None when it is not a (well-formed) pointer."""
    data = _head(path_or_bytes)
    if data is None or not data.startswith(LFS_PREFIX):
        return None
    oid = _OID_RE.search(data)
    size = _SIZE_RE.search(data)
    if oid is None or size is None:
        return None
    return LfsPointer(oid=oid.group(2).decode("ascii"), size=int(size.group(1)),
                      algorithm=oid.group(1).decode("ascii"))


def describe_pointer(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> str:
    """A short human description, e.g. 'Git LFS pointer (131 bytes) to a 12,345-byte object sha256:4d7a...'."""
    data = _head(path_or_bytes) or b""
    ptr = parse_lfs_pointer(data)
    if ptr is None:
        return f"Git LFS pointer stub ({len(data)} bytes)"
    return f"Git LFS pointer stub ({len(data)} bytes) to a {ptr.size:,}-byte object {ptr.algorithm}:{ptr.oid[:12]}..."


def make_pointer(oid: str, size: int) -> bytes:
    """The pointer text git-lfs writes for an object (used by tests and demos)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode("ascii")
