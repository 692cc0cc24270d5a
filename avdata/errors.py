"""Errors that name the file and the fix."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


class AvdataError(Exception):
    """Base class: a problem the user can act on; the CLI prints it without a traceback."""


def install_hint(extra: str, package: str) -> str:
    """How to get an optional extra: the form that works from a checkout (the project is not on a package
    index) and the bare package."""
    quoted = f'"{package}"' if "[" in package else package  # brackets are a glob to some shells
    return f'pip install -e ".[{extra}]" in the avdata checkout (or pip install {quoted})'


@contextlib.contextmanager
def naming_path(path: str | Path) -> Iterator[None]:
    """An OSError raised inside without a file name (a failed write: a full disk) gets `path`, so that
    the message the CLI prints says where the disk is full."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


class MediaError(AvdataError):
    """A raw media file that cannot be used (corrupt, truncated, empty, LFS stub, no stream...)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")
