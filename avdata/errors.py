"""Errors that name the file and the fix."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


class AvdataError(Exception):
    """Base class: a problem the user can act on (an option value, an input file, a shard, a manifest, a
    checkpoint, the network); the message names the file or option and the fix, and the CLI prints it
    without a traceback. A ValueError, TypeError or assert in the library is a bug, never bad input."""


class FieldError(AvdataError, ValueError):
    """Bytes of one shard member that do not hold what their format says (a damaged JPEG, an npy header
    that lies, a json count out of range). The codec does not know the shard: the reader that does names
    the shard and the sample around this message. Also a ValueError so that one `except ValueError` there
    catches it beside the ValueErrors numpy's and json's own decoders raise for the same bytes."""


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
