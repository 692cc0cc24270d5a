"""Write to a temporary name beside the target, then rename: a crash never leaves a half-written file
under the final name."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

TMP_SUFFIX = ".tmp"


def tmp_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def open_new(path: str | Path, mode: str = "wb") -> IO:
    """Create `path` afresh for writing, never through a symlink planted under its name: whatever has
    the name is removed (a link itself, not its target), then the file is created exclusively."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, mode)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open `path.tmp` for writing; on success fsync and rename to `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    f = open_new(tmp, mode)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # closing flushes: a full disk fails here again
            f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc  # say where
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
