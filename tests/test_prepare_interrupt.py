"""Prepare runs that stop part-way, as a user's do: a full disk, a kill. Nothing half-written is left under a
final name or as a stray temporary file, and the rerun gives the bytes of an uninterrupted run."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from avdata.shards.tar import ShardWriter


class _FullDisk(io.RawIOBase):
    """A file on a disk with `room` bytes left: writes past it fail with ENOSPC, as on a real full disk."""

    def __init__(self, path: Path, room: int) -> None:
        self.f = open(path, "wb")
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(b), self.room)
        self.f.write(bytes(b[:n]))
        self.room -= n
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def test_a_shard_cut_short_by_a_full_disk_leaves_no_temp_file(tmp_path):
    path = tmp_path / "train-000000.tar"
    with pytest.raises(OSError) as caught:
        with ShardWriter(path) as w:
            w._fileobj.close()
            w._fileobj = io.BufferedWriter(_FullDisk(w.tmp, room=5000), buffer_size=8192)
            for i in range(40):  # small members stay in the buffer: the last of them fail only when it is flushed
                w.write(f"k{i}", {"txt": b"x" * 100})
            w.close()
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # before: train-000000.tar.tmp, 5,000 bytes, stayed
