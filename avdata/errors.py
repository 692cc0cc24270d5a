"""Errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path


class AvdataError(Exception):
    """Base class: a problem the user can act on; the CLI prints it without a traceback."""


class MediaError(AvdataError):
    """A raw media file that cannot be used (corrupt, truncated, empty, LFS stub, no stream...)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ChecksumError(AvdataError):
    def __init__(self, path: str | Path, expected: str, actual: str) -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: sha256 mismatch: expected {expected}, got {actual}")
