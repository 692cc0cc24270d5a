"""The local side of a transfer: the `.part` file, planted symlinks, and a full disk.

A `.part` file is opened so that a symlink planted under its name (or under the final name) is never
followed, and a full disk stops every download with one message that says how to resume.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from pathlib import Path
from typing import IO

from avdata.atomic import open_new
from avdata.errors import AvdataError

log = logging.getLogger("avdata.fetch.disk")

PART_SUFFIX = ".part"


class DiskFullError(AvdataError):
    def __init__(self, path: Path, free: int | None) -> None:
        self.path = path
        where = f" ({free:,} bytes free)" if free is not None else ""
        super().__init__(
            f"disk full while writing {path}{where}: stopped all downloads. Free some space (or choose "
            f"another --to folder) and run the same command again; it resumes from the .part files."
        )


def part_path(final: Path) -> Path:
    """Where `final` is received before it is checked and renamed."""
    return final.with_name(final.name + PART_SUFFIX)


def unlink_missing_ok(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def free_space(path: Path) -> int | None:
    """Free bytes on the disk that holds `path` (or its nearest existing parent); None when unknown."""
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def disk_full(final: Path) -> DiskFullError:
    """The DiskFullError for writing towards `final`, with the free space left there."""
    return DiskFullError(final, free_space(final.parent))


def open_part(path: Path, mode: str) -> IO[bytes]:
    """Open the .part file without following a symlink planted under its name (a seam for tests that
    simulate a full disk): "wb" removes whatever has the name and creates a new file; "ab" appends to
    a regular file only."""
    if mode == "wb":
        return open_new(path, mode)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, 0o666), mode)


def drop_link(path: Path) -> None:
    """A symlink where a download writes is never followed: remove the link (not what it points to)."""
    if path.is_symlink():
        log.warning("%s is a symbolic link; removing the link (its target is left alone)", path)
        path.unlink()
