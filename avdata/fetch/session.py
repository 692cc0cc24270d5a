"""What the transfers of one `fetch_files` run share: their settings, the progress bar over bytes, the
early stop when the first files all fail the same way, and the throttle on per-file log lines."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from avdata.fetch.results import FileResult
from avdata.fetch.transport import STALL_BYTES, STALL_SECONDS, socket_timeout, wake_reader

log = logging.getLogger("avdata.fetch.session")

#: Stop early when this many files, and none good, came back as LFS pointers (the mirror serves stubs).
LFS_ABORT_AFTER = 8
#: Stop early when this many files, and none good, failed the same way (an HTML portal, a wrong mirror).
SAME_FAILURE_ABORT_AFTER = 8
#: Per-file failures and retries logged at WARNING/ERROR before the rest go to DEBUG (--verbose).
LOUD_LOG_LIMIT = 20


class ByteBar:
    """The shared progress bar: `completed` counts bytes received in this run; `total` is what this run
    has to receive (known sizes, less what is already on disk, plus what had to be received again)."""

    def __init__(self, progress, description: str, total: int) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.total = total
        self.task = progress.add_task(description, total=total or None)

    def advance(self, n: int) -> None:
        if n:
            self.progress.update(self.task, advance=n)

    def grow(self, n: int) -> None:
        if n:
            with self.lock:
                self.total = max(self.total + n, 0)
                self.progress.update(self.task, total=self.total or None)


@dataclass
class Settings:
    """A run's options (the arguments of `fetch_files`) and its counters, shared by its threads under
    `lock`; setting `stop` makes every transfer give up at its next read or attempt."""

    retries: int
    backoff: float
    timeout: float
    headers: dict[str, str]
    verify_existing: str
    stop: threading.Event
    stall_seconds: float = STALL_SECONDS
    stall_bytes: int = STALL_BYTES
    stop_reason: str = "another file hit a fatal error"
    loud: int = 0
    fetched: int = 0
    lfs_pointers: int = 0
    same: tuple[str, int | None] | None = None
    same_count: int = 0
    same_reason: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    reading: set[Any] = field(default_factory=set)  # the responses being read now (`halt` wakes their reads)

    @property
    def socket_timeout(self) -> float:
        return socket_timeout(self.timeout, self.stall_seconds)

    @contextlib.contextmanager
    def read_from(self, resp: Any) -> Iterator[Any]:
        """Inside, `resp` is being read: `halt` can wake a read blocked on it."""
        with self.lock:
            self.reading.add(resp)
        try:
            yield resp
        finally:
            with self.lock:
                self.reading.discard(resp)

    def halt(self, reason: str) -> None:
        """Stop every transfer now (Ctrl-C, kill): the reads in progress return at once instead of at the socket
        timeout (up to --stall-timeout on a silent server); the `.part` files are kept for the rerun."""
        with self.lock:
            if not self.stop.is_set():
                self.stop_reason = reason
                self.stop.set()
            reading = list(self.reading)
        for resp in reading:
            wake_reader(resp)

    def count_result(self, result: FileResult) -> None:
        """Stop early when the first files, none good, all failed the same way: the first LFS_ABORT_AFTER
        came back as LFS pointers, or the first SAME_FAILURE_ABORT_AFTER failed identically (HTML pages,
        one HTTP status, ...). Fetching thousands more of them helps nobody."""
        with self.lock:
            if result.status in ("fetched", "present"):
                self.fetched += 1
                return
            if self.fetched or self.stop.is_set() or result.kind == "stopped":
                return
            if result.kind == "lfs-pointer":
                self.lfs_pointers += 1
                if self.lfs_pointers >= LFS_ABORT_AFTER:
                    self.stop_reason = (f"the first {LFS_ABORT_AFTER} files came back as Git LFS pointer stubs "
                                        "(the source serves pointers, not media)")
                    log.error("stopping: %s", self.stop_reason)
                    self.stop.set()
                    return
            key = (result.kind, result.http_status)
            if key == self.same:
                self.same_count += 1
            else:
                self.same, self.same_count = key, 1
                self.same_reason = result.reason
            if self.same_count >= SAME_FAILURE_ABORT_AFTER:
                self.stop_reason = (f"the first {SAME_FAILURE_ABORT_AFTER} files all failed the same way "
                                    f"({self.same_reason}); check the address (--mirror) and the network")
                log.error("stopping: %s", self.stop_reason)
                self.stop.set()

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Log a per-file problem; after LOUD_LOG_LIMIT of them, only at DEBUG (the summary lists them)."""
        with self.lock:
            self.loud += 1
            n = self.loud
        if n <= LOUD_LOG_LIMIT:
            log.log(level, msg, *args)
            if n == LOUD_LOG_LIMIT:
                log.warning("further per-file problems are logged with --verbose only")
        else:
            log.debug(msg, *args)
