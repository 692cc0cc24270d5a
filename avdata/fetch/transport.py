"""Opening a source and reading from it under the project's rules for untrusted servers.

A source is an http(s) URL, a local path (or file:// URL), an object in object storage (`s3://`, `gs://`:
`avdata.fetch.objstore`) or a file of a Hugging Face dataset repository (`hf://datasets/...`: fetched from
its http(s) download URL, `avdata.fetch.hub`): all answer like an HTTP response, with `Range: bytes=N-`
honoured, so the transfer code has one path for all. Reads take whatever one socket
read gives (`read_some`) so that a trickle is seen by the stall rule (`StallWatch`) rather than waited
out. `read_small` fetches a manifest-sized file into memory under the same caps and deadlines.
"""

from __future__ import annotations

import contextlib
import email.message
import http.client
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping

from avdata import __version__
from avdata.errors import AvdataError
from avdata.fetch.hub import hub_request, is_hub_url
from avdata.fetch.responses import FileResponse
from avdata.fetch.urls import basic_auth, is_object_url, is_url, join_url, redact

USER_AGENT = f"avdata/{__version__} (python-urllib)"
READ_CHUNK = 1 << 18  # 256 KiB per read from the socket
#: Cap for a file whose size is not declared (a dataset card, a manifest): far above any real one.
MAX_UNDECLARED_SIZE = 64 << 20
#: The stall rule's defaults: an attempt that receives fewer than STALL_BYTES in STALL_SECONDS is aborted.
STALL_SECONDS = 60.0
STALL_BYTES = 16 << 10
#: The overall deadline of a streamed read (`StallGuard`): a server that drips just above the stall rule
#: must still finish in READ_GRACE_SECONDS plus one second per READ_MIN_RATE bytes received, of waiting.
READ_GRACE_SECONDS = 300.0
READ_MIN_RATE = 16 << 10
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<?xml version")


class LocalResponse(FileResponse):
    """A local file answering like an HTTP response (200, or 206 for a range)."""

    def __init__(self, path: Path, offset: int) -> None:
        super().__init__(str(path), open(path, "rb"), path.stat().st_size, offset)


def _range_start(headers: Mapping[str, str]) -> int:
    rng = headers.get("Range", "")
    return int(rng[len("bytes="):].rstrip("-")) if rng.startswith("bytes=") else 0


def open_source(url: str, headers: Mapping[str, str], timeout: float):
    """Open `url` (http(s), s3/gs/hf, file:// or a local path) with `headers`; HTTP errors raise HTTPError
    for all. `user:pass@` in an http(s) URL is sent as basic auth. An Authorization header is never
    forwarded to another host on a redirect."""
    if is_hub_url(url):
        url, headers = hub_request(url, dict(headers))
    elif is_object_url(url):
        from avdata.fetch.objstore import open_object

        return open_object(url, _range_start(headers), timeout)
    if not is_url(url):
        path = Path(join_url(url, "")) if url.startswith("file://") else Path(url)
        if not path.is_file():
            raise urllib.error.HTTPError(url, 404, "Not Found", email.message.Message(), None)
        return LocalResponse(path, _range_start(headers))
    req = _request(url, headers)
    return urllib.request.urlopen(req, timeout=timeout)


def _request(url: str, headers: Mapping[str, str], method: str | None = None) -> urllib.request.Request:
    """An http(s) request for `url` with `headers`; the URL's `user:pass@` becomes basic auth (unless an
    Authorization header is given), and Authorization is never sent on to a redirect's host."""
    url, auth = basic_auth(url)
    headers = dict(headers)
    if auth is not None and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = auth
    # the file's own bytes: no compression (a Range counts in them, and so do size and sha256 checks)
    req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    for key, value in headers.items():
        if key.lower() == "authorization":
            req.add_unredirected_header(key, value)
        else:
            req.add_header(key, value)
    return req


def remote_size(url: str, timeout: float = 60.0) -> int | None:
    """The size of a remote file without reading it (HEAD, or the object's metadata); None when the
    server does not say. HTTP errors raise HTTPError, as `open_source` does."""
    if is_object_url(url) and not is_hub_url(url):
        from avdata.fetch.objstore import object_size

        return object_size(url, timeout)
    headers: dict[str, str] = {}
    if is_hub_url(url):
        url, headers = hub_request(url, headers)
    with urllib.request.urlopen(_request(url, headers, "HEAD"), timeout=timeout) as resp:
        return header_int(resp.headers.get("Content-Length"))


def content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
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


def header_int(value: str | None) -> int | None:
    """An integer header (Content-Length); None when absent or not a number."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def read_some(resp, n: int) -> bytes:
    """Whatever one socket read gives, up to n (so that a trickle is seen, not waited out in read(n))."""
    read1 = getattr(resp, "read1", None)
    return read1(n) if read1 is not None else resp.read(n)


def wake_reader(resp) -> None:
    """Make a read blocked on `resp` in another thread return now (a stop: Ctrl-C, kill), rather than at the
    socket timeout: its socket is shut down. Other sources (files, object storage) never block long."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def looks_like_html(head: bytes) -> bool:
    """True when a body starts like a web page (a captive portal, an error page, a wrong mirror)."""
    return head.lstrip()[:32].lower().startswith(_HTML_STARTS)


def socket_timeout(timeout: float, stall_seconds: float) -> float:
    """A silent connection is a stall too: no single read waits longer than the stall window."""
    return min(timeout, stall_seconds) if stall_seconds > 0 else timeout


class StallWatch:
    """The minimum-progress rule: fewer than `min_bytes` in any `seconds`-long window aborts an attempt.
    Windows are measured on `clock`: wall time by default; a :class:`StallGuard` passes the time its reads
    have spent waiting."""

    def __init__(self, seconds: float, min_bytes: int, clock: Callable[[], float] | None = None) -> None:
        self.seconds, self.min_bytes = seconds, min_bytes
        self.waiting = clock is not None
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.got = 0

    def add(self, n: int) -> str | None:
        """Count `n` bytes; a reason when the window closed with too few."""
        if self.seconds <= 0:
            return None
        self.got += n
        now = self.clock()
        if now - self.start < self.seconds:
            return None
        if self.got < self.min_bytes:
            spent = f"{now - self.start:.1f}s of waiting" if self.waiting else f"{now - self.start:.0f}s"
            hint = "" if self.waiting else "; see --stall-timeout"
            return (f"stalled: {self.got:,} bytes in {spent} (the rule is at least {self.min_bytes:,} bytes "
                    f"every {self.seconds:g}s{hint})")
        self.start, self.got = now, 0
        return None


class StallGuard:
    """A response whose reads obey the stall rule (:class:`StallWatch`) on the time spent waiting in `read`:
    too few bytes raise TimeoutError. Only time inside `read` counts, so a reader that pauses between reads
    (a trainer's data worker waiting for its batches to be taken) is not taken for a stalled server, while a
    server that trickles a byte now and then, never long enough silent for the socket timeout, is.

    The whole read has a deadline too: after `grace` seconds of waiting, the bytes received must keep an
    average of `min_rate` bytes per second waited (so a body of N bytes takes at most grace + N / min_rate
    seconds); a server that sends just enough for each stall window gives up there with TimeoutError.
    `clock` measures the waiting (injected by tests)."""

    def __init__(self, raw, seconds: float = STALL_SECONDS, min_bytes: int = STALL_BYTES, what: str = "",
                 grace: float | None = None, min_rate: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.raw, self.what = raw, redact(what)
        self.waited = 0.0
        self.got = 0
        self.grace = READ_GRACE_SECONDS if grace is None else grace
        self.min_rate = READ_MIN_RATE if min_rate is None else min_rate
        self.clock = clock
        self.watch = StallWatch(seconds, min_bytes, clock=lambda: self.waited)

    def read(self, n: int = -1) -> bytes:
        """n bytes (fewer only at the end), all bytes for n < 0. Read a piece at a time (`read1`: whatever
        has arrived), so that the rule is checked while a large read is still waiting."""
        read1 = getattr(self.raw, "read1", None)
        if read1 is None:
            return self._counted(self.raw.read, n)
        parts, got = [], 0
        while n < 0 or got < n:
            chunk = self._counted(read1, (n - got) if n >= 0 else 1 << 16)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _counted(self, read, n: int) -> bytes:
        t0 = self.clock()
        data = read(n)
        self.waited += self.clock() - t0
        self.got += len(data)
        stalled = self.watch.add(len(data))
        if stalled:
            raise TimeoutError(f"{self.what or 'server'} {stalled}")
        if self.min_rate > 0 and self.waited > self.grace + self.got / self.min_rate:
            raise TimeoutError(
                f"{self.what or 'server'}: too slow: {self.got:,} bytes in {self.waited:.1f}s of waiting; gave up "
                f"(a read may take {self.grace:g}s plus 1s per {self.min_rate:,.0f} bytes, an average the server "
                "kept below, though it never stalled for long)")
        return data

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)

    def __enter__(self) -> "StallGuard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_small(url: str, limit: int = MAX_UNDECLARED_SIZE, timeout: float = 60.0, retries: int = 3,
               what: str = "file", stall_seconds: float = STALL_SECONDS, stall_bytes: int = STALL_BYTES) -> bytes:
    """GET a small file (a manifest) into memory: at most `limit` bytes, under the stall rule, with a few
    retries; an AvdataError naming the URL when it fails or is larger than `limit`."""
    read_timeout = socket_timeout(timeout, stall_seconds)
    tries = max(retries, 1)
    last: Exception | None = None
    for attempt in range(tries):
        try:
            return _read_capped(url, limit, what, read_timeout, stall_seconds, stall_bytes)
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                exc.close()
            if exc.code == 404:
                raise AvdataError(f"{redact(url)}: not found (HTTP 404); is this the URL of a shards folder?") \
                    from exc
            if exc.code in (401, 403):  # the same answer on every try: say so now, with the status it was
                raise AvdataError(f"{redact(url)}: access denied (HTTP {exc.code} {exc.reason}); check the "
                                  f"credentials: {_credentials_for(url)}") from exc
            last = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            last = exc
        if attempt + 1 < tries:
            time.sleep(min(0.5 * 2 ** attempt, 4.0))
    raise AvdataError(f"{redact(url)}: could not be read after {tries} tries ({last})")


def _credentials_for(url: str) -> str:
    """Where the credentials for `url` come from, for an access-denied message."""
    if is_hub_url(url):
        return "HF_TOKEN, or `hf auth login`"
    from avdata.fetch.objstore import STORES

    scheme = url.split("://", 1)[0].lower()
    return STORES[scheme][3] if scheme in STORES else "the user:password in the URL"


def _read_capped(url: str, limit: int, what: str, read_timeout: float, stall_seconds: float,
                 stall_bytes: int) -> bytes:
    """One attempt of `read_small`: the whole body, or AvdataError past `limit`; a stall raises
    TimeoutError and a short body ConnectionError (both retried). The attempt has StallGuard's deadline
    too (READ_GRACE_SECONDS plus one second per READ_MIN_RATE bytes): a server that sends just enough for
    each stall window would otherwise take 68 hours over a 64 MiB manifest."""
    start = time.monotonic()
    with open_source(url, {}, read_timeout) as resp:
        length = header_int(resp.headers.get("Content-Length"))
        if length is not None and length > limit:
            raise AvdataError(f"{redact(url)}: the server declares {length:,} bytes, more than the "
                              f"{limit:,} allowed for a {what}; is this the right address?")
        parts: list[bytes] = []
        got = 0
        watch = StallWatch(stall_seconds, stall_bytes)
        while True:
            try:
                chunk = read_some(resp, min(READ_CHUNK, limit - got + 1))
            except TimeoutError as exc:
                raise TimeoutError(f"stalled: nothing received for {read_timeout:g}s") from exc
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise AvdataError(f"{redact(url)}: more than {limit:,} bytes, the most allowed for a "
                                  f"{what}; stopped reading. Is this the right address?")
            parts.append(chunk)
            stalled = watch.add(len(chunk))
            if stalled:
                raise TimeoutError(stalled)
            elapsed = time.monotonic() - start
            if READ_MIN_RATE > 0 and elapsed > READ_GRACE_SECONDS + got / READ_MIN_RATE:
                raise TimeoutError(f"too slow: {got:,} bytes in {elapsed:.1f}s; gave up (a {what} may take "
                                   f"{READ_GRACE_SECONDS:g}s plus 1s per {READ_MIN_RATE:,} bytes)")
        if length is not None and got < length:
            raise ConnectionError(f"connection closed after {got:,} of {length:,} bytes")
        return b"".join(parts)
