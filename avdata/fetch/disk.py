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
    """The disk (or a file-size limit, `size_limit`) stopped a write to `path`: every download stops, with the
    free space in `folder` and the bytes the files not yet downloaded still need (`needed`, plus `unsized`
    files of unknown size), once `fetch_files` knows them."""

    def __init__(self, path: Path, free: int | None, *, folder: Path | None = None, needed: int | None = None,
                 unsized: int = 0, size_limit: bool = False) -> None:
        self.path, self.free, self.folder = path, free, folder or path.parent
        self.needed, self.unsized, self.size_limit = needed, unsized, size_limit
        room = f"{free:,} bytes free in {self.folder}" if free is not None else f"free space in {self.folder} unknown"
        if needed is not None:
            room += f"; the files not yet downloaded need {needed:,} more bytes"
            if unsized:
                room += f" plus {unsized} file(s) of unknown size"
        if size_limit:
            super().__init__(
                f"a file-size limit was reached while writing {path} (`ulimit -f`, or the largest file the file "
                f"system holds; {room}): stopped all downloads. Raise the limit (or choose another --to folder) "
                "and run the same command again; it resumes from the .part files.")
        else:
            super().__init__(
                f"disk full while writing {path} ({room}): stopped all downloads. Free some space (or choose "
                "another --to folder) and run the same command again; it resumes from the .part files.")

    def needing(self, folder: Path, needed: int, unsized: int) -> "DiskFullError":
        """The same error, saying how much room the rest of the download needs in `folder`."""
        return DiskFullError(self.path, free_space(folder), folder=folder, needed=needed, unsized=unsized,
                             size_limit=self.size_limit)


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
    """No room for the write: a full disk, a used-up quota, or a file-size limit (EFBIG: `ulimit -f`)."""
    return exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1))


def disk_full(path: Path, exc: OSError | None = None) -> DiskFullError:
    """The DiskFullError for the write to `path` that failed with `exc`, with the free space left there."""
    return DiskFullError(path, free_space(path.parent), size_limit=exc is not None and exc.errno == errno.EFBIG)


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
