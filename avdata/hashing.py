"""sha256 (and md5, where a source publishes only that) of files on disk: every file we fetch, prepare,
merge or verify is hashed here, read in 1 MiB chunks so big media never sits in memory whole.

Bytes that are hashed as they pass, with no file to read back (a shard as the tar writer emits it, a
remote shard as `verify` streams it), update a `hashlib.sha256()` of their own instead of a second read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digests(path: str | Path, md5: bool = False,
                 advance: Callable[[int], object] | None = None) -> tuple[str, str | None]:
    """Hex sha256 of a file and, when `md5`, its hex md5 from the same single read (else None).
    `advance(n)` is called after each chunk, for a progress bar over bytes."""
    sha = hashlib.sha256()
    m = hashlib.md5() if md5 else None
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            if m is not None:
                m.update(chunk)
            if advance is not None:
                advance(len(chunk))
    return sha.hexdigest(), (m.hexdigest() if m is not None else None)


def sha256_file(path: str | Path, advance: Callable[[int], object] | None = None) -> str:
    """Hex sha256 of a file."""
    return file_digests(path, advance=advance)[0]
