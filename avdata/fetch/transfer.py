"""Fetching one file: into `<final>.part` (resumed with `Range: bytes=N-` when a `.part` is there), checked,
then renamed to `<final>`; retried with back-off, never written past its declared size or cap.

A bad body is deleted and fetched again; a file that stays bad is reported with its expected and actual
sha256 and never left under its final name. Every byte is counted on the run's progress bar, and what
has to be received again (a discarded `.part`) is added back to the bar's total.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import urllib.error
from pathlib import Path

from avdata.fetch.checks import check_present, check_received
from avdata.fetch.lfs import MAX_POINTER_SIZE
from avdata.fetch.disk import (DiskFullError, disk_full, drop_link, is_disk_full, open_part, part_path,
                               unlink_missing_ok)
from avdata.fetch import resume_record
from avdata.fetch.results import AttemptFailed, FileResult, RemoteFile
from avdata.fetch.session import ByteBar, Settings
from avdata.fetch.transport import (READ_CHUNK, StallWatch, content_range, header_int, looks_like_html, open_source,
                                    read_some)
from avdata.fetch.urls import redact

log = logging.getLogger("avdata.fetch.transfer")

MAX_BACKOFF = 60.0
#: Resumes after a dropped connection that delivered bytes do not use up a retry; this bounds them.
MAX_RESUMES = 100


class Transfer:
    """Fetching one file into `<final>.part`, verifying it, renaming it."""

    def __init__(self, spec: RemoteFile, url: str, final: Path, cfg: Settings, bar: ByteBar) -> None:
        self.spec = spec
        self.url = url
        self.final = final
        self.part = part_path(final)
        self.cfg = cfg
        self.bar = bar
        self.session = 0  # bytes of the current .part received in this run (counted on the bar)
        self.grown = 0  # for a file of unknown size: bytes added to the bar's total from Content-Length

    def _discard(self, why: str) -> None:
        """Delete the .part; its bytes will have to be received again."""
        if self.part.exists():
            size = self.part.stat().st_size
            log.debug("%s: discarding %s (%d bytes): %s", self.spec.path, self.part, size, why)
            unlink_missing_ok(self.part)
            resume_record.forget(self.part)
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
        drop_link(self.part)
        drop_link(self.final)
        if self.final.exists():
            present = self._check_existing(res)
            if present is not None:
                return present
        if self.part.exists() and spec.size is not None:
            self.bar.grow(-self.part.stat().st_size)  # already received in an earlier run
        counted_failures = 0
        attempt = 0
        wrong: set[str] = set()  # digests of complete bodies that were not the file
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
                    resume_record.forget(self.part)
                except OSError as exc:
                    if is_disk_full(exc):
                        raise disk_full(self.final, exc) from exc
                    raise
                res.status, res.bytes, res.sha256 = "fetched", self.final.stat().st_size, sha
                res.reason = res.kind = ""
                res.expected_sha256 = res.actual_sha256 = None
                log.debug("fetched %s -> %s (%d bytes, sha256 %s)", res.url, self.final, res.bytes, sha)
                return res
            except AttemptFailed as f:
                res.reason, res.kind, res.http_status = f.reason, f.kind, f.http_status
                res.expected_sha256, res.actual_sha256 = f.expected_sha256, f.actual_sha256
                if f.kind in ("checksum", "md5", "size", "invalid") and f.actual_sha256 is not None:
                    if f.actual_sha256 in wrong:  # the same wrong bytes again: not a transfer error
                        res.kind = f.kind
                        res.reason = (f"{f.reason}, twice the same bytes: the mirror holds another file than the "
                                      "list pins (another version of it, or the wrong --mirror)")
                        cfg.log(logging.ERROR, "%s: %s", spec.path, res.reason)
                        return res
                    wrong.add(f.actual_sha256)
                if f.fatal:
                    if f.kind != "stopped":
                        none_there = spec.optional and f.http_status == 404
                        cfg.log(logging.INFO if none_there else logging.ERROR, "%s: %s", spec.path, f.reason)
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
        """The result "present" when the file under the final name is the expected one; else remove it."""
        problem, sha = check_present(self.final, self.spec, self.cfg.verify_existing)
        if not problem:
            if self.spec.size is not None:
                self.bar.grow(-self.spec.size)
            if self.part.exists():
                log.debug("%s: removing the stale %s", self.final, self.part.name)
                unlink_missing_ok(self.part)
            resume_record.forget(self.part)
            log.debug("%s: already present and verified, skipped", self.final)
            return FileResult(path=self.spec.path, status="present", url=res.url,
                              bytes=self.final.stat().st_size, sha256=sha)
        log.warning("%s: already there but %s; removing it and downloading again", self.final, problem)
        unlink_missing_ok(self.final)
        return None

    def _receive(self) -> None:
        """Bring `.part` to the full body (resuming what is there), or raise _Fail."""
        spec, cfg = self.spec, self.cfg
        drop_link(self.part)
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
        if offset and not spec.verifiable:  # nothing would tell a changed file's new tail from the old one's
            known = resume_record.validator(self.part)
            if known is None:
                self._discard("which version of the file it holds is not known (its server gave no ETag or "
                              "Last-Modified, and nothing pins the file's checksum)")
                offset = 0
            else:
                headers["If-Range"] = known  # a changed file comes back whole (200), and starts over
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = open_source(self.url, headers, cfg.socket_timeout)
        except urllib.error.HTTPError as exc:
            self._http_error(exc, offset)
            return  # a 416 meaning "you already have it all"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
                # the name does not exist (a temporary DNS failure, EAI_AGAIN, is retried)
                raise AttemptFailed(f"could not connect to {redact(self.url)}: no such host ({reason}); check the "
                                    "address (--mirror)", "network", fatal=True) from exc
            raise AttemptFailed(f"could not connect to {redact(self.url)} ({reason})", "network") from exc
        with resp, cfg.read_from(resp):
            status = getattr(resp, "status", None) or 200
            length = header_int(resp.headers.get("Content-Length"))
            encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity" and status in (200, 206):
                raise AttemptFailed(f"the server sent the file compressed (Content-Encoding: {encoding}), not its "
                                    "own bytes, though none was asked for: a misconfigured mirror; use "
                                    "another --mirror", "encoding", fatal=True)
            if status == 206 and offset:
                start, _, total = content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    self._discard(f"server answered the range request at byte {start}, not {offset}")
                    raise AttemptFailed(f"server sent a range starting at {start} instead of {offset}; restarting",
                                        "http", free=True)
                began = None if spec.verifiable else resume_record.recorded_size(self.part)
                if total is not None and (spec.size is not None and total != spec.size
                                          or began is not None and total != began
                                          or length is not None and offset + length != total):
                    # the file changed on the server since the .part was begun (or its answer contradicts itself)
                    self._discard("the server's copy changed")
                    raise AttemptFailed(f"the server's copy is {total:,} bytes (Content-Range), not the "
                                        f"{spec.size if spec.size is not None else offset + (length or 0):,} its "
                                        "list or its Content-Length give: the file changed on the server (another "
                                        "version, or the wrong --mirror); the partial file was discarded",
                                        "size", fatal=True)
                mode = "ab"
                log.debug("%s: resuming at byte %d", spec.path, offset)
            elif status in (200, 206):
                if offset:
                    log.info("%s: the server sent the whole file (HTTP %d) for a range request: it does not "
                             "resume, or the file changed since the .part was begun; restarting from byte 0",
                             spec.path, status)
                    self._discard("server does not resume")
                mode = "wb"
                if not spec.verifiable:
                    resume_record.remember(self.part, resp.headers)
            else:
                raise AttemptFailed(f"unexpected HTTP {status} from {redact(self.url)}", "http", http_status=status)
            cap = spec.size if spec.size is not None else spec.max_size
            start_at = offset if mode == "ab" else 0
            # (a body small enough to be a Git LFS pointer is received and named as such by the checks)
            if spec.size is not None and length is not None and MAX_POINTER_SIZE < start_at + length < spec.size:
                self._discard("the server declares less than the expected size")
                raise AttemptFailed(f"the server declares {start_at + length:,} bytes, fewer than the {spec.size:,} "
                                    "the list gives: another file (another version, or the wrong --mirror)", "size",
                                    fatal=True)
            if length is not None and start_at + length > cap:
                self._discard("the server declares more than the expected size")
                whose = "the manifest/list gives" if spec.size is not None else "allowed for a file of undeclared size"
                raise AttemptFailed(f"the server declares {start_at + length:,} bytes, more than the {cap:,} {whose}; "
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
            _, _, total = content_range(exc.headers.get("Content-Range") if exc.headers else None)
            if offset and total is not None and total == offset:
                return  # the .part is already the whole file
            self._discard("server says the range is not satisfiable (HTTP 416)")
            raise AttemptFailed("HTTP 416 for the resume request; restarting from byte 0", "http", free=True,
                                http_status=416)
        if code in (404, 410):
            raise AttemptFailed(f"not found (HTTP {code}) at {url}", "http", fatal=True, http_status=code)
        if code in (401, 403):
            raise AttemptFailed(f"access denied (HTTP {code}) at {url}: check the credentials or the address", "http",
                                fatal=True, http_status=code)
        if code in (408, 425, 429) or code >= 500:
            raise AttemptFailed(f"HTTP {code} {exc.reason} from {url}", "http", http_status=code)
        raise AttemptFailed(f"HTTP {code} {exc.reason} from {url}", "http", fatal=True, http_status=code)

    def _copy_body(self, resp, mode: str, length: int | None, room: int) -> None:
        """Copy the body into .part; never more than `room` bytes (what the declared size leaves)."""
        watch = StallWatch(self.cfg.stall_seconds, self.cfg.stall_bytes)
        self.part.parent.mkdir(parents=True, exist_ok=True)
        try:  # a full disk (or a file-size limit) may show at the open, at a write, or at the close's flush
            with open_part(self.part, mode) as f:
                if mode == "wb":
                    self.session = 0
                received = self._copy_into(f, resp, mode, room, watch)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.part, exc) from exc
            raise
        if self.cfg.stop.is_set():  # a read woken by the stop may look like the end of a body of unknown length
            raise AttemptFailed(f"stopped because {self.cfg.stop_reason}; the .part file is kept", "stopped",
                                fatal=True)
        if length is not None and received < length:
            raise AttemptFailed(f"connection closed after {received:,} of {length:,} bytes", "network",
                                free=received > 0)

    def _copy_into(self, f, resp, mode: str, room: int, watch: StallWatch) -> int:
        """The body's bytes into the open `.part` `f`, at most `room` of them; how many were written."""
        received = 0
        while True:
            if self.cfg.stop.is_set():
                raise AttemptFailed(f"stopped because {self.cfg.stop_reason}; the .part file is kept", "stopped",
                                    fatal=True)
            try:
                chunk = read_some(resp, min(READ_CHUNK, room - received + 1))
            except (http.client.HTTPException, OSError) as exc:
                stalled: str | bool | None = watch.add(0) or (
                    isinstance(exc, TimeoutError) and self.cfg.stall_seconds > 0
                    and f"stalled: nothing received for {self.cfg.socket_timeout:g}s")
                if stalled:
                    raise AttemptFailed(f"{stalled}; after {received:,} bytes", "stalled") from exc
                raise AttemptFailed(f"connection dropped after {received:,} bytes ({type(exc).__name__}: {exc})",
                                    "network", free=received > 0) from exc
            if not chunk:
                break
            if received + len(chunk) > room:
                f.close()
                self._discard("the server sent more than the expected size")
                cap = self.spec.size if self.spec.size is not None else self.spec.max_size
                raise AttemptFailed(f"the server sent more than the expected {cap:,} bytes; stopped receiving and "
                                    "refused the file", "too-large", fatal=True)
            if received == 0 and mode == "wb" and looks_like_html(chunk):
                f.close()
                self._discard("an HTML page")
                raise AttemptFailed(f"the server answered with an HTML page, not the file "
                                    f"({chunk.lstrip()[:40]!r}...): a login or captive portal, an error page, "
                                    "or a wrong --mirror address", "html", fatal=True)
            f.write(chunk)
            received += len(chunk)
            self.session += len(chunk)
            self.bar.advance(len(chunk))
            stalled = watch.add(len(chunk))
            if stalled:
                raise AttemptFailed(f"{stalled}; after {received:,} bytes", "stalled")
        return received

    def _verify(self) -> str:
        """Check the complete .part; delete it (it must be received again) when it is not the file."""
        try:
            return check_received(self.part, self.spec)
        except AttemptFailed as f:
            self._discard(f.reason)
            raise
