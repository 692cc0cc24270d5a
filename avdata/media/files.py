"""The checks every media reader makes before it opens a file, so each failure names the file and the fix."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from avdata.errors import MediaError
from avdata.fetch.lfs import is_lfs_pointer


def _not_a_file(path: Path, mode: int) -> str:
    """What stands at `path` instead of a file: opening a FIFO would block and a device never end."""
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket")
    return f"not a regular file ({kind}{', through a symbolic link' if path.is_symlink() else ''})"


def require_media_file(path: Path, what: str) -> None:
    """Raise MediaError unless `path` is a non-empty regular file (or a link to one) holding `what` (not a
    Git LFS pointer stub). Checked before anything opens it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(path, "symbolic link loop (the link leads back to itself)") from exc
        if path.is_symlink():
            raise MediaError(path, "broken symbolic link (what it points to does not exist)") from exc
        if isinstance(exc, FileNotFoundError):
            raise MediaError(path, "file not found") from exc
        raise MediaError(path, f"cannot read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(path, _not_a_file(path, st.st_mode))
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if is_lfs_pointer(path):
        raise MediaError(path, f"Git LFS pointer stub, not the {what}: run `git lfs pull` in the clone or "
                               "download the real files (`avdata download DATASET`; `avdata download --help` "
                               "lists them)")
