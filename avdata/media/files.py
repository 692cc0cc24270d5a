"""The checks every media reader makes before it opens a file, so each failure names the file and the fix."""

from __future__ import annotations

from pathlib import Path

from avdata.errors import MediaError
from avdata.fetch.lfs import is_lfs_pointer


def require_media_file(path: Path, what: str) -> None:
    """Raise MediaError unless `path` is a non-empty file holding `what` (not a Git LFS pointer stub)."""
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if is_lfs_pointer(path):
        raise MediaError(path, f"Git LFS pointer stub, not the {what}: run `git lfs pull` in the clone "
                               "or download with `avdata download cremad`")
