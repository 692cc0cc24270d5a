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


def _update(path: str | Path, hashes: list, advance: Callable[[int], object] | None = None) -> None:
    """Feed a file to `hashes` in one read, chunk by chunk."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes:
                h.update(chunk)
            if advance is not None:
                advance(len(chunk))


def file_digests(path: str | Path, md5: bool = False,
                 advance: Callable[[int], object] | None = None) -> tuple[str, str | None]:
    """Hex sha256 of a file and, when `md5`, its hex md5 from the same single read (else None).
    `advance(n)` is called after each chunk, for a progress bar over bytes."""
    sha = hashlib.sha256()
    m = hashlib.md5() if md5 else None
    _update(path, [sha] if m is None else [sha, m], advance)
    return sha.hexdigest(), (m.hexdigest() if m is not None else None)


def git_blob_id(path: str | Path) -> str:
    """git's id of a file's content, sha1 of "blob <size>\0" + bytes (what the Hub lists for a file it
    does not keep in LFS)."""
    h = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    _update(path, [h])
    return h.hexdigest()


def sha256_file(path: str | Path, advance: Callable[[int], object] | None = None) -> str:
    """Hex sha256 of a file."""
    return file_digests(path, advance=advance)[0]
