"""What to fetch and what came of it: a file to fetch (`RemoteFile`), the outcome of one attempt
(`AttemptFailed`), of one file (`FileResult`) and of a whole download (`DownloadReport`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from avdata.errors import AvdataError
from avdata.fetch.sources import SourceFile
from avdata.fetch.transport import MAX_UNDECLARED_SIZE


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch. `size`, `sha256` and `md5` are checked when known (None: not published).

    `url` overrides `<base_url>/<path>` (for files whose address is not their name, e.g. a share link);
    `check(part_path)` may return a reason why a fully received file is unusable (e.g. not a zip).
    `optional`: a 404 means the server has none (pull's dataset card), logged at INFO, not as an error.
    """

    path: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    url: str | None = None
    check: Callable[[Path], str | None] | None = field(default=None, compare=False, repr=False)
    max_size: int = MAX_UNDECLARED_SIZE  # the cap when `size` is None
    optional: bool = False

    @property
    def verifiable(self) -> bool:
        return self.sha256 is not None or self.md5 is not None


def as_remote(f: SourceFile | RemoteFile) -> RemoteFile:
    """A RemoteFile with lower-case hex digests."""
    if not isinstance(f, RemoteFile):
        f = RemoteFile(path=f.path, size=f.size, sha256=f.sha256)
    return dataclasses.replace(f, sha256=f.sha256.lower() if f.sha256 else None,
                               md5=f.md5.lower() if f.md5 else None)


@dataclass
class FileResult:
    """What happened to one file. `status`: fetched | present | failed.

    `kind` says why a file failed: http, network, stalled, size, too-large, html, encoding, checksum, md5, lfs-pointer,
    invalid, stopped.
    `sha256` is the sha256 of the file now under its final name (when it was computed).
    """

    path: str
    status: str
    url: str = ""
    bytes: int = 0
    sha256: str | None = None
    reason: str = ""
    kind: str = ""
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    http_status: int | None = None
    attempts: int = 0


@dataclass
class DownloadReport:
    """The outcome of a download: files fetched, already present, and failed (each with its reason)."""

    dest: Path
    fetched: list[FileResult] = field(default_factory=list)
    already_present: list[FileResult] = field(default_factory=list)
    failed: list[FileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def bytes_fetched(self) -> int:
        return sum(r.bytes for r in self.fetched)

    @property
    def results(self) -> list[FileResult]:
        return [*self.fetched, *self.already_present, *self.failed]

    def add(self, result: FileResult) -> None:
        {"fetched": self.fetched, "present": self.already_present}.get(result.status, self.failed).append(result)

    def extend(self, other: "DownloadReport") -> None:
        self.fetched += other.fetched
        self.already_present += other.already_present
        self.failed += other.failed
        self.notes += [n for n in other.notes if n not in self.notes]
        self.seconds += other.seconds

    def summary(self) -> str:
        return (f"{len(self.fetched)} fetched ({self.bytes_fetched:,} bytes), "
                f"{len(self.already_present)} already present, {len(self.failed)} failed")


class DownloadError(AvdataError):
    """A single-file download (`fetch_url`) that failed; `.result` holds the details."""

    def __init__(self, result: FileResult) -> None:
        self.result = result
        super().__init__(f"{result.url or result.path}: {result.reason}")


class AttemptFailed(Exception):
    """One attempt failed. `fatal`: do not retry. `free`: retry at once without using up a retry
    (a resume after a dropped connection that made progress, a restart after HTTP 416)."""

    def __init__(self, reason: str, kind: str, *, fatal: bool = False, free: bool = False,
                 expected_sha256: str | None = None, actual_sha256: str | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.fatal = fatal
        self.free = free
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.http_status = http_status
