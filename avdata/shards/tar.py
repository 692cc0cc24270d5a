"""The one shard writer (the reader is `avdata.shards.reader`).

Shards are plain POSIX tar files that stock `webdataset` reads. To make them byte-identical on any
machine every member gets mtime 0, uid/gid 0, empty user/group names and mode 0o644, members keep the
order the recipe gives, and a shard is written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tarfile
from pathlib import Path
from typing import IO, Iterable, Mapping, Sequence

from avdata.atomic import tmp_path
from avdata.errors import AvdataError
from avdata.shards.manifest import ShardEntry

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
FIELD_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def check_key(key: str) -> None:
    """webdataset splits a member name at its first dot: keys must have none."""
    if not KEY_RE.fullmatch(key):  # match() would let a trailing newline through
        raise AvdataError(f"sample key {key!r} must contain only letters, digits, '_' and '-' (no dots): "
                          "the recipe makes keys from the raw file names; rename the file or fix the recipe")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def encode_sample(key: str, fields: Mapping[str, bytes]) -> list[bytes]:
    """One sample's tar members (header, data, padding per field), ready to append to a shard. Worker
    processes encode here so that the shard writer only appends and hashes."""
    check_key(key)
    parts: list[bytes] = []
    for field, data in fields.items():
        if not FIELD_RE.match(field):
            raise ValueError(f"bad field name {field!r} for sample {key!r}")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"field {field!r} of {key!r} must be bytes, got {type(data).__name__}")
        header = _tarinfo(f"{key}.{field}", len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        parts += [header, data, bytes(-len(data) % tarfile.BLOCKSIZE)]
    return parts


WRITEBACK_BYTES = 8 << 20


class ShardWriter:
    """Write samples to one shard; `close()` renames `<name>.tar.tmp` to `<name>.tar` and returns its info.

    Use as a context manager: on an exception the temporary file is removed and nothing appears under
    the final name.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path(self.path)
        self._fileobj: IO[bytes] = open(self.tmp, "wb")
        self._sha = hashlib.sha256()  # hashed as written: no second pass over the file
        self._size = 0
        self._synced = 0  # bytes handed to the kernel for write-back so far
        self.num_samples = 0
        self._keys: set[str] = set()

    def write(self, key: str, fields: Mapping[str, bytes]) -> None:
        self._append(key, encode_sample(key, fields))  # encode_sample checked the key and fields

    def write_encoded(self, key: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Append a sample already encoded by `encode_sample` (possibly joined into one buffer)."""
        check_key(key)
        if sum(len(p) for p in parts) % tarfile.BLOCKSIZE:
            raise AvdataError(f"sample {key!r}: encoded members are not whole tar blocks; encode them with "
                              "encode_sample")
        self._append(key, parts)

    def _append(self, key: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        if key in self._keys:
            raise AvdataError(f"duplicate sample key {key!r} in {self.path.name}: each key may be written once")
        self._keys.add(key)
        self._emit(*parts)
        self.num_samples += 1
        if self._size - self._synced >= WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Ask the kernel to start writing what we wrote so far, without waiting for it, so that the fsync
        in close() only waits for the tail: otherwise a whole shard is flushed there, stalling the run's end.
        (POSIX_FADV_DONTNEED starts write-back of dirty pages on Linux; elsewhere it is a harmless hint.)"""
        self._fileobj.flush()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fileobj.fileno(), self._synced, self._size - self._synced, os.POSIX_FADV_DONTNEED)
        self._synced = self._size

    def _emit(self, *parts: bytes | bytearray | memoryview) -> None:
        for part in parts:
            self._fileobj.write(part)
            self._sha.update(part)
            self._size += len(part)

    def close(self) -> ShardEntry:
        # end of archive as tarfile writes it: two zero blocks, then zeros up to a whole 10 KiB record
        end = self._size + 2 * tarfile.BLOCKSIZE
        self._emit(bytes(end - self._size + (-end % tarfile.RECORDSIZE)))
        self._fileobj.flush()
        os.fsync(self._fileobj.fileno())
        self._fileobj.close()
        os.replace(self.tmp, self.path)
        return ShardEntry(self.path.name, self._size, self._sha.hexdigest(), self.num_samples)

    def abort(self) -> None:
        """Remove the temporary file. Closing flushes what is buffered, which on a full disk fails again:
        that must not keep the half-written file (up to a whole shard) on the disk that is already full."""
        with contextlib.suppress(OSError):
            self._fileobj.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_shard(path: str | Path, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> ShardEntry:
    with ShardWriter(path) as w:
        for key, fields in samples:
            w.write(key, fields)
        return w.close()
