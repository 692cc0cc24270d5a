"""THE download function: every file the project fetches goes through `fetch_files`.

For each file: `<dest>/<path>.part` is written (resumed with an HTTP `Range: bytes=N-` request when a
`.part` is already there), then its size, sha256 (and md5 where one is published) are checked, and only
then is it renamed to `<dest>/<path>`. A bad body is deleted and fetched again with back-off; a file that
stays bad is reported with its expected and actual sha256 and is never left under its final name.
Files already present under their final name with the right size and sha256 are skipped. Several files
are fetched at once by a thread pool, under one progress bar over bytes.

Sources may be http(s) URLs or a local folder (copied through the same code, for tests and for pulling
a shards folder from a mounted disk).

Servers are not trusted: a body is never written past its declared size (or MAX_UNDECLARED_SIZE when
none is declared), an attempt that receives fewer than `stall_bytes` in `stall_seconds` is aborted and
retried, an HTML page served in place of a file is named as such, a run of identical failures on the
first files stops the download early, and `.part` files are opened so that a planted symlink is never
followed. `read_small` reads a manifest-sized file into memory under the same rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.message
import errno
import http.client
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from avdata import __version__
from avdata.errors import AvdataError
from avdata.hashing import file_digests
from avdata.fetch.lfs import MAX_POINTER_SIZE, describe_pointer, is_lfs_pointer
from avdata.progress import make_progress
from avdata.fetch.sources import SourceFile
from avdata.fetch.urls import is_url, join_url, redact

log = logging.getLogger("avdata.fetch.download")

PART_SUFFIX = ".part"
USER_AGENT = f"avdata/{__version__} (python-urllib)"
READ_CHUNK = 1 << 18  # 256 KiB per read from the socket
MAX_BACKOFF = 60.0
#: Resumes after a dropped connection that delivered bytes do not use up a retry; this bounds them.
MAX_RESUMES = 100
#: Stop early when this many files, and none good, came back as LFS pointers (the mirror serves stubs).
LFS_ABORT_AFTER = 8
#: Per-file failures and retries logged at WARNING/ERROR before the rest go to DEBUG (--verbose).
LOUD_LOG_LIMIT = 20

LFS_HINT = ("this mirror serves Git LFS pointer stubs, not the media: use the repository's LFS media "
            "address (for GitHub: https://media.githubusercontent.com/media/<owner>/<repo>/<branch>), "
            "or run `git lfs pull` in a clone")

VERIFY_EXISTING = ("sha256", "size")

#: Cap for a file whose size is not declared (a dataset card, a manifest): far above any real one.
MAX_UNDECLARED_SIZE = 64 << 20
#: The stall rule's defaults: an attempt that receives fewer than STALL_BYTES in STALL_SECONDS is aborted.
STALL_SECONDS = 60.0
STALL_BYTES = 16 << 10
#: Stop early when this many files, and none good, failed the same way (an HTML portal, a wrong mirror).
SAME_FAILURE_ABORT_AFTER = 8
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<?xml version")


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch. `size`, `sha256` and `md5` are checked when known (None: not published).

    `url` overrides `<base_url>/<path>` (for files whose address is not their name, e.g. a share link);
    `check(part_path)` may return a reason why a fully received file is unusable (e.g. not a zip).
    """

    path: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    url: str | None = None
    check: Callable[[Path], str | None] | None = field(default=None, compare=False, repr=False)
    max_size: int = MAX_UNDECLARED_SIZE  # the cap when `size` is None

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

    `kind` says why a file failed: http, network, stalled, size, too-large, html, checksum, md5, lfs-pointer,
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


class DiskFullError(AvdataError):
    def __init__(self, path: Path, free: int | None) -> None:
        self.path = path
        where = f" ({free:,} bytes free)" if free is not None else ""
        super().__init__(
            f"disk full while writing {path}{where}: stopped all downloads. Free some space (or choose "
            f"another --to folder) and run the same command again; it resumes from the .part files."
        )


# --------------------------------------------------------------------------------------------- helpers


class _Fail(Exception):
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


def _safe_rel(rel: str) -> str:
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts or rel.startswith(("/", "\\")):
        raise AvdataError(f"refusing to download to {rel!r}: paths must be relative and stay inside the folder")
    return rel


class _LocalResponse:
    """A local file answering like an HTTP response (200, or 206 for a range)."""

    def __init__(self, path: Path, offset: int) -> None:
        size = path.stat().st_size
        self.headers = email.message.Message()
        if offset and offset >= size:
            hdrs = email.message.Message()
            hdrs["Content-Range"] = f"bytes */{size}"
            raise urllib.error.HTTPError(str(path), 416, "Range Not Satisfiable", hdrs, None)
        self._f = open(path, "rb")
        self._f.seek(offset)
        self.status = 206 if offset else 200
        self.headers["Content-Length"] = str(size - offset)
        if offset:
            self.headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "_LocalResponse":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open(url: str, headers: Mapping[str, str], timeout: float):
    if not is_url(url):
        path = Path(join_url(url, "")) if url.startswith("file://") else Path(url)
        rng = headers.get("Range", "")
        offset = int(rng[len("bytes="):].rstrip("-")) if rng.startswith("bytes=") else 0
        if not path.is_file():
            raise urllib.error.HTTPError(url, 404, "Not Found", email.message.Message(), None)
        return _LocalResponse(path, offset)
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for key, value in headers.items():
        if key.lower() == "authorization":
            req.add_unredirected_header(key, value)  # never forwarded to another host on a redirect
        else:
            req.add_header(key, value)
    return urllib.request.urlopen(req, timeout=timeout)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """Parse 'bytes a-b/N' or 'bytes */N' -> (a, b, N); missing parts are None."""
    if not value or not value.strip().lower().startswith("bytes"):
        return None, None, None
    spec = value.strip()[5:].strip()
    rng, _, total = spec.partition("/")
    total_n = int(total) if total.strip().isdigit() else None
    if "-" in rng:
        a, _, b = rng.partition("-")
        if a.strip().isdigit() and b.strip().isdigit():
            return int(a), int(b), total_n
    return None, None, total_n


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _free_space(path: Path) -> int | None:
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def _open_part(path: Path, mode: str):
    """Open the .part file without following a symlink planted under its name (a seam for tests that
    simulate a full disk): "wb" removes whatever has the name and creates a new file; "ab" appends to
    a regular file only."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if mode == "wb":
        _unlink(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow
    else:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | nofollow
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, mode)


def _drop_link(path: Path) -> None:
    """A symlink where a download writes is never followed: remove the link (not what it points to)."""
    if path.is_symlink():
        log.warning("%s is a symbolic link; removing the link (its target is left alone)", path)
        path.unlink()


def looks_like_html(head: bytes) -> bool:
    """True when a body starts like a web page (a captive portal, an error page, a wrong mirror)."""
    return head.lstrip()[:32].lower().startswith(_HTML_STARTS)


class _StallWatch:
    """The minimum-progress rule: fewer than `min_bytes` in any `seconds`-long window aborts an attempt."""

    def __init__(self, seconds: float, min_bytes: int) -> None:
        self.seconds, self.min_bytes = seconds, min_bytes
        self.start = time.monotonic()
        self.got = 0

    def add(self, n: int) -> str | None:
        """Count `n` bytes; a reason when the window closed with too few."""
        if self.seconds <= 0:
            return None
        self.got += n
        now = time.monotonic()
        if now - self.start < self.seconds:
            return None
        if self.got < self.min_bytes:
            return (f"stalled: {self.got:,} bytes in {now - self.start:.0f}s (the rule is at least "
                    f"{self.min_bytes:,} bytes every {self.seconds:g}s; see --stall-timeout)")
        self.start, self.got = now, 0
        return None


def _read_some(resp, n: int) -> bytes:
    """Whatever one socket read gives, up to n (so that a trickle is seen, not waited out in read(n))."""
    read1 = getattr(resp, "read1", None)
    return read1(n) if read1 is not None else resp.read(n)


class _Bar:
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
class _Settings:
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

    @property
    def socket_timeout(self) -> float:
        """A silent connection is a stall too: no single read waits longer than the stall window."""
        return min(self.timeout, self.stall_seconds) if self.stall_seconds > 0 else self.timeout

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


class _Transfer:
    """Fetching one file into `<final>.part`, verifying it, renaming it."""

    def __init__(self, spec: RemoteFile, url: str, final: Path, cfg: _Settings, bar: _Bar) -> None:
        self.spec = spec
        self.url = url
        self.final = final
        self.part = final.with_name(final.name + PART_SUFFIX)
        self.cfg = cfg
        self.bar = bar
        self.session = 0  # bytes of the current .part received in this run (counted on the bar)
        self.grown = 0  # for a file of unknown size: bytes added to the bar's total from Content-Length

    # -- bookkeeping on the progress bar
    def _discard(self, why: str) -> None:
        """Delete the .part; its bytes will have to be received again."""
        if self.part.exists():
            size = self.part.stat().st_size
            log.debug("%s: discarding %s (%d bytes): %s", self.spec.path, self.part, size, why)
            _unlink(self.part)
            self.bar.advance(-self.session)
            if self.spec.size is not None:
                self.bar.grow(size - self.session)  # bytes from an earlier run must come again
            else:
                self.bar.grow(-self.grown)  # the next response's length is added afresh
                self.grown = 0
        self.session = 0

    def run(self) -> FileResult:
        try:
            result = self._run()
        except DiskFullError as exc:
            with self.cfg.lock:
                if not self.cfg.stop.is_set():
                    self.cfg.stop_reason = f"the disk filled up while writing {exc.path}"
                    self.cfg.stop.set()
            raise
        self.cfg.count_result(result)
        return result

    def _run(self) -> FileResult:
        spec, cfg = self.spec, self.cfg
        res = FileResult(path=spec.path, status="failed", url=redact(self.url))
        _drop_link(self.part)
        _drop_link(self.final)
        if self.final.exists():
            present = self._check_existing(res)
            if present is not None:
                return present
        if self.part.exists() and spec.size is not None:
            self.bar.grow(-self.part.stat().st_size)  # already received in an earlier run
        counted_failures = 0
        attempt = 0
        while True:
            attempt += 1
            res.attempts = attempt
            if cfg.stop.is_set():
                res.reason, res.kind = f"not fetched: stopped because {cfg.stop_reason}", "stopped"
                return res
            try:
                self._receive()
                sha = self._verify()
                try:
                    with open(self.part, "rb+") as f:
                        os.fsync(f.fileno())
                    os.replace(self.part, self.final)
                except OSError as exc:
                    if _is_disk_full(exc):
                        raise DiskFullError(self.final, _free_space(self.final.parent)) from exc
                    raise
                res.status, res.bytes, res.sha256 = "fetched", self.final.stat().st_size, sha
                res.reason = res.kind = ""
                res.expected_sha256 = res.actual_sha256 = None
                log.debug("fetched %s -> %s (%d bytes, sha256 %s)", res.url, self.final, res.bytes, sha)
                return res
            except _Fail as f:
                res.reason, res.kind, res.http_status = f.reason, f.kind, f.http_status
                res.expected_sha256, res.actual_sha256 = f.expected_sha256, f.actual_sha256
                if f.fatal:
                    if f.kind != "stopped":
                        cfg.log(logging.ERROR, "%s: %s", spec.path, f.reason)
                    return res
                if not f.free:
                    counted_failures += 1
                if counted_failures > cfg.retries or attempt > cfg.retries + MAX_RESUMES:
                    res.reason = f"{f.reason} (gave up after {attempt} attempts)"
                    cfg.log(logging.ERROR, "%s: %s", spec.path, res.reason)
                    return res
                delay = 0.0 if f.free else min(cfg.backoff * 2 ** (counted_failures - 1), MAX_BACKOFF)
                cfg.log(logging.WARNING, "%s: %s; %s", spec.path, f.reason,
                        "resuming" if f.free else f"retry {counted_failures}/{cfg.retries} in {delay:.1f}s")
                if delay:
                    cfg.stop.wait(delay)

    def _check_existing(self, res: FileResult) -> FileResult | None:
        spec = self.spec
        size = self.final.stat().st_size
        problem = ""
        sha: str | None = None
        if spec.size is not None and size != spec.size:
            problem = f"size {size:,} instead of {spec.size:,}"
        elif is_lfs_pointer(self.final) and (spec.size is None or spec.size > MAX_POINTER_SIZE):
            problem = "a Git LFS pointer stub"
        elif self.cfg.verify_existing != "size" or not spec.verifiable:
            sha, md5 = file_digests(self.final, spec.md5 is not None)
            if spec.sha256 is not None and sha != spec.sha256:
                problem = f"sha256 {sha} instead of {spec.sha256}"
            elif spec.md5 is not None and md5 != spec.md5:
                problem = f"md5 {md5} instead of {spec.md5}"
        if not problem and spec.check is not None:
            problem = spec.check(self.final) or ""
        if not problem:
            if spec.size is not None:
                self.bar.grow(-spec.size)
            if self.part.exists():
                log.debug("%s: removing the stale %s", self.final, self.part.name)
                _unlink(self.part)
            log.debug("%s: already present and verified, skipped", self.final)
            return FileResult(path=spec.path, status="present", url=res.url, bytes=size, sha256=sha)
        log.warning("%s: already there but %s; removing it and downloading again", self.final, problem)
        _unlink(self.final)
        return None

    def _receive(self) -> None:
        """Bring `.part` to the full body (resuming what is there), or raise _Fail."""
        spec, cfg = self.spec, self.cfg
        _drop_link(self.part)
        offset = self.part.stat().st_size if self.part.exists() else 0
        if spec.size is None and offset > spec.max_size:
            self._discard(f"longer than the {spec.max_size:,}-byte cap")
            offset = 0
        if spec.size is not None and offset > spec.size:
            self._discard(f"longer than the expected {spec.size} bytes")
            offset = 0
        if spec.size is not None and offset == spec.size and offset > 0:
            return  # complete from an earlier run; verify it
        headers = dict(cfg.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = _open(self.url, headers, cfg.socket_timeout)
        except urllib.error.HTTPError as exc:
            self._http_error(exc, offset)
            return  # a 416 meaning "you already have it all"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Fail(f"could not connect to {redact(self.url)} ({reason})", "network") from exc
        with resp:
            status = getattr(resp, "status", None) or 200
            length = _int(resp.headers.get("Content-Length"))
            if status == 206 and offset:
                start, _, total = _content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    self._discard(f"server answered the range request at byte {start}, not {offset}")
                    raise _Fail(f"server sent a range starting at {start} instead of {offset}; restarting",
                                "http", free=True)
                mode = "ab"
                log.debug("%s: resuming at byte %d", spec.path, offset)
            elif status in (200, 206):
                if offset:
                    log.info("%s: server ignored the Range request (HTTP %d); restarting from byte 0",
                             spec.path, status)
                    self._discard("server does not resume")
                mode = "wb"
            else:
                raise _Fail(f"unexpected HTTP {status} from {redact(self.url)}", "http", http_status=status)
            cap = spec.size if spec.size is not None else spec.max_size
            start_at = offset if mode == "ab" else 0
            if length is not None and start_at + length > cap:
                self._discard("the server declares more than the expected size")
                whose = "the manifest/list gives" if spec.size is not None else "allowed for a file of undeclared size"
                raise _Fail(f"the server declares {start_at + length:,} bytes, more than the {cap:,} {whose}; "
                            "refusing it", "too-large", fatal=True)
            if spec.size is None and length is not None and not self.grown:
                self.bar.grow(length)
                self.grown = length
            self._copy_body(resp, mode, length, cap - start_at)

    def _http_error(self, exc: urllib.error.HTTPError, offset: int) -> None:
        code = exc.code
        url = redact(self.url)
        with contextlib.suppress(Exception):
            exc.close()
        if code == 416:
            _, _, total = _content_range(exc.headers.get("Content-Range") if exc.headers else None)
            if offset and total is not None and total == offset:
                return  # the .part is already the whole file
            self._discard("server says the range is not satisfiable (HTTP 416)")
            raise _Fail("HTTP 416 for the resume request; restarting from byte 0", "http", free=True,
                        http_status=416)
        if code in (404, 410):
            raise _Fail(f"not found (HTTP {code}) at {url}", "http", fatal=True, http_status=code)
        if code in (401, 403):
            raise _Fail(f"access denied (HTTP {code}) at {url}: check the credentials or the address", "http",
                        fatal=True, http_status=code)
        if code in (408, 425, 429) or code >= 500:
            raise _Fail(f"HTTP {code} {exc.reason} from {url}", "http", http_status=code)
        raise _Fail(f"HTTP {code} {exc.reason} from {url}", "http", fatal=True, http_status=code)

    def _copy_body(self, resp, mode: str, length: int | None, room: int) -> None:
        """Copy the body into .part; never more than `room` bytes (what the declared size leaves)."""
        received = 0
        watch = _StallWatch(self.cfg.stall_seconds, self.cfg.stall_bytes)
        self.part.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = _open_part(self.part, mode)
        except OSError as exc:
            if _is_disk_full(exc):
                raise DiskFullError(self.final, _free_space(self.part.parent)) from exc
            raise
        if mode == "wb":
            self.session = 0
        with f:
            while True:
                if self.cfg.stop.is_set():
                    raise _Fail(f"stopped because {self.cfg.stop_reason}; the .part file is kept", "stopped",
                                fatal=True)
                try:
                    chunk = _read_some(resp, min(READ_CHUNK, room - received + 1))
                except (http.client.HTTPException, OSError) as exc:
                    stalled = watch.add(0) or (isinstance(exc, TimeoutError) and self.cfg.stall_seconds > 0 and
                                               f"stalled: nothing received for {self.cfg.socket_timeout:g}s")
                    if stalled:
                        raise _Fail(f"{stalled}; after {received:,} bytes", "stalled") from exc
                    raise _Fail(f"connection dropped after {received:,} bytes ({type(exc).__name__}: {exc})",
                                "network", free=received > 0) from exc
                if not chunk:
                    break
                if received + len(chunk) > room:
                    f.close()
                    self._discard("the server sent more than the expected size")
                    cap = self.spec.size if self.spec.size is not None else self.spec.max_size
                    raise _Fail(f"the server sent more than the expected {cap:,} bytes; stopped receiving and "
                                "refused the file", "too-large", fatal=True)
                if received == 0 and mode == "wb" and looks_like_html(chunk):
                    f.close()
                    self._discard("an HTML page")
                    raise _Fail(f"the server answered with an HTML page, not the file ({chunk.lstrip()[:40]!r}...): "
                                "a login or captive portal, an error page, or a wrong --mirror address", "html",
                                fatal=True)
                try:
                    f.write(chunk)
                except OSError as exc:
                    if _is_disk_full(exc):
                        raise DiskFullError(self.final, _free_space(self.part.parent)) from exc
                    raise
                received += len(chunk)
                self.session += len(chunk)
                self.bar.advance(len(chunk))
                stalled = watch.add(len(chunk))
                if stalled:
                    raise _Fail(f"{stalled}; after {received:,} bytes", "stalled")
        if length is not None and received < length:
            raise _Fail(f"connection closed after {received:,} of {length:,} bytes", "network", free=received > 0)

    def _verify(self) -> str:
        """Check the complete .part; delete it and raise _Fail when it is not the expected file."""
        spec = self.spec
        size = self.part.stat().st_size
        if size <= MAX_POINTER_SIZE and is_lfs_pointer(self.part):
            sha, _ = file_digests(self.part)
            if spec.sha256 is None or sha != spec.sha256:
                what = describe_pointer(self.part)
                self._discard("LFS pointer")
                raise _Fail(f"received a {what} instead of the file: {LFS_HINT}", "lfs-pointer", fatal=True,
                            expected_sha256=spec.sha256, actual_sha256=sha)
        if spec.size is not None and size != spec.size:
            sha, _ = file_digests(self.part)
            self._discard("wrong size")
            raise _Fail(f"size mismatch: expected {spec.size:,} bytes, received {size:,}", "size",
                        expected_sha256=spec.sha256, actual_sha256=sha)
        sha, md5 = file_digests(self.part, spec.md5 is not None)
        if spec.sha256 is not None and sha != spec.sha256:
            self._discard("sha256 mismatch")
            raise _Fail(f"sha256 mismatch: expected {spec.sha256}, got {sha}", "checksum",
                        expected_sha256=spec.sha256, actual_sha256=sha)
        if spec.md5 is not None and md5 != spec.md5:
            self._discard("md5 mismatch")
            raise _Fail(f"md5 mismatch: expected {spec.md5}, got {md5}", "md5", actual_sha256=sha)
        if spec.check is not None:
            problem = spec.check(self.part)
            if problem:
                self._discard(problem)
                raise _Fail(problem, "invalid", actual_sha256=sha)
        return sha


# ------------------------------------------------------------------------------------------------ API


def fetch_files(
    base_url: str,
    files: Sequence[SourceFile | RemoteFile] | Iterable[SourceFile | RemoteFile],
    dest: str | Path,
    jobs: int = 8,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    *,
    verify_existing: str = "sha256",
    headers: Mapping[str, str] | None = None,
    description: str | None = None,
    stall_seconds: float = STALL_SECONDS,
    stall_bytes: int = STALL_BYTES,
) -> DownloadReport:
    """Fetch `files` from `base_url` (an http(s) URL or a local folder) into `dest`, verified.

    The address of a file is `base_url.rstrip('/') + '/' + quote(path)` (or its `url` when it has one).
    `jobs` files are fetched at once; each is retried up to `retries` times (waits `backoff`, 2x`backoff`,
    ... seconds); a dropped connection resumes from the bytes received. `verify_existing`: "sha256"
    re-hashes files already under their final name, "size" trusts a matching size. `headers` are sent
    with every request (an Authorization header is never forwarded to another host on a redirect).
    An attempt that receives fewer than `stall_bytes` in `stall_seconds` is aborted and retried
    (`stall_seconds=0`: no stall rule, only the per-read `timeout`).
    Raises DiskFullError (an AvdataError) when the disk fills up; every other problem is reported.
    """
    if verify_existing not in VERIFY_EXISTING:
        raise ValueError(f"verify_existing must be one of {VERIFY_EXISTING}, not {verify_existing!r}")
    dest = Path(dest)
    specs: list[RemoteFile] = []
    seen: set[str] = set()
    for f in files:
        spec = as_remote(f)
        _safe_rel(spec.path)
        if spec.path not in seen:
            seen.add(spec.path)
            specs.append(spec)
    report = DownloadReport(dest=dest)
    if not specs:
        return report
    dest.mkdir(parents=True, exist_ok=True)
    cfg = _Settings(retries=max(retries, 0), backoff=max(backoff, 0.0), timeout=timeout,
                    headers=dict(headers or {}), verify_existing=verify_existing, stop=threading.Event(),
                    stall_seconds=max(float(stall_seconds), 0.0), stall_bytes=max(int(stall_bytes), 0))
    start = time.monotonic()
    total = sum(s.size for s in specs if s.size is not None)
    where = redact(base_url) if base_url else "(per-file addresses)"
    log.info("downloading %d file(s) (%s bytes known) from %s to %s", len(specs),
             f"{total:,}", where, dest)
    fatal: BaseException | None = None
    with make_progress("B", disable=None if progress else True) as prog:
        bar = _Bar(prog, description or f"download -> {dest.name or dest}", total)
        pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="avdata-dl")
        try:
            futures = {}
            for spec in specs:
                url = spec.url or join_url(base_url, spec.path)
                t = _Transfer(spec, url, dest / spec.path, cfg, bar)
                futures[pool.submit(t.run)] = spec
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    report.add(fut.result())
                except DiskFullError as exc:
                    cfg.stop.set()
                    fatal = fatal or exc
                    log.error("%s", exc)
                except Exception as exc:  # a bug or an unexpected OS error: report it, keep going
                    log.exception("%s: unexpected error", spec.path)
                    report.add(FileResult(path=spec.path, status="failed", reason=f"{type(exc).__name__}: {exc}",
                                          kind="error"))
        except BaseException:
            cfg.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if not report.failed:
            prog.update(bar.task, total=max(bar.total, 1), completed=max(bar.total, 1))
    report.seconds = time.monotonic() - start
    if fatal is not None:
        raise fatal
    for result in report.failed:
        if result.kind == "lfs-pointer" and LFS_HINT not in report.notes:
            report.notes.append(f"Git LFS pointers were served instead of media: {LFS_HINT}.")
    report.fetched.sort(key=lambda r: r.path)
    report.already_present.sort(key=lambda r: r.path)
    report.failed.sort(key=lambda r: r.path)
    log.info("%s in %.1fs", report.summary(), report.seconds)
    return report


def fetch_url(
    url: str,
    dest_path: str | Path,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    headers: Mapping[str, str] | None = None,
    check: Callable[[Path], str | None] | None = None,
    stall_seconds: float = STALL_SECONDS,
    stall_bytes: int = STALL_BYTES,
) -> FileResult:
    """Fetch one URL to `dest_path` through `fetch_files` (same resume, retries and checks).

    Returns the FileResult (status fetched or present); raises DownloadError when it failed.
    """
    dest_path = Path(dest_path)
    spec = RemoteFile(path=dest_path.name, size=size, sha256=sha256.lower() if sha256 else None,
                      md5=md5.lower() if md5 else None, url=url, check=check)
    report = fetch_files("", [spec], dest_path.parent, jobs=1, retries=retries, backoff=backoff, timeout=timeout,
                         progress=progress, headers=headers, description=f"download {dest_path.name}",
                         stall_seconds=stall_seconds, stall_bytes=stall_bytes)
    result = report.results[0]
    if result.status == "failed":
        raise DownloadError(result)
    return result


def read_small(url: str, limit: int = MAX_UNDECLARED_SIZE, timeout: float = 60.0, retries: int = 3,
               what: str = "file", stall_seconds: float = STALL_SECONDS, stall_bytes: int = STALL_BYTES) -> bytes:
    """GET a small file (a manifest) into memory: at most `limit` bytes, under the stall rule, with a few
    retries; an AvdataError naming the URL when it fails or is larger than `limit`."""
    cfg = _Settings(retries=retries, backoff=0.5, timeout=timeout, headers={}, verify_existing="size",
                    stop=threading.Event(), stall_seconds=stall_seconds, stall_bytes=stall_bytes)
    last: Exception | None = None
    for attempt in range(max(retries, 1)):
        try:
            with _open(url, {}, cfg.socket_timeout) as resp:
                length = _int(resp.headers.get("Content-Length"))
                if length is not None and length > limit:
                    raise AvdataError(f"{redact(url)}: the server declares {length:,} bytes, more than the "
                                      f"{limit:,} allowed for a {what}; is this the right address?")
                parts: list[bytes] = []
                got = 0
                watch = _StallWatch(cfg.stall_seconds, cfg.stall_bytes)
                while True:
                    try:
                        chunk = _read_some(resp, min(READ_CHUNK, limit - got + 1))
                    except TimeoutError as exc:
                        raise _Fail(f"stalled: nothing received for {cfg.socket_timeout:g}s", "stalled") from exc
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > limit:
                        raise AvdataError(f"{redact(url)}: more than {limit:,} bytes, the most allowed for a "
                                          f"{what}; stopped reading. Is this the right address?")
                    parts.append(chunk)
                    stalled = watch.add(len(chunk))
                    if stalled:
                        raise _Fail(stalled, "stalled")
                if length is not None and got < length:
                    raise _Fail(f"connection closed after {got:,} of {length:,} bytes", "network")
                return b"".join(parts)
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                exc.close()
            if exc.code == 404:
                raise AvdataError(f"{redact(url)}: not found (HTTP 404); is this the URL of a shards folder?") \
                    from exc
            last = exc
        except _Fail as exc:
            last = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            last = exc
        if attempt + 1 < max(retries, 1):
            time.sleep(min(0.5 * 2 ** attempt, 4.0))
    raise AvdataError(f"{redact(url)}: could not be read after {max(retries, 1)} tries ({last})")
