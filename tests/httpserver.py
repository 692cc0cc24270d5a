"""A loopback HTTP server for tests: serves a folder (with HTTP Range) and misbehaves on request.

    with serve_dir(folder, drop_after=1000) as base_url:
        fetch_files(base_url, files, dest)
        assert any("Range" in r["headers"] for r in base_url.requests)

`base_url` is a `str` (e.g. "http://127.0.0.1:41234") that also carries `.requests` (the request log:
method, path, headers, status, bytes_sent) and `.server`. Fault modes, counted per file path:

- `drop_after=N`: send the full headers, then only N bytes of the body and close the connection, on the
  first `drop_times` requests of each file (default 1; None = always).
- `corrupt_byte_at=N`: flip the byte at file offset N in what is served, on the first `corrupt_times`
  requests of each file (default None = always).
- `lfs_pointer=True`: serve the Git LFS pointer text of each file instead of its bytes.
- `fail_first=K`: answer HTTP 500 to the first K requests of each file.
- `ignore_range=True`: answer 200 with the whole file even when a Range is asked for.
- `status_for={"path": 404}`: a fixed status for some paths.
- `redirect_to="http://host:port"`: answer 302 with Location redirect_to + the request path.
- `pace=S`: send the body in 16 KiB pieces, S seconds apart (a slow link: a kill lands mid-file).
- `gzip=True`: send the file gzip-compressed with `Content-Encoding: gzip` (unasked, as a misconfigured
  mirror does; a Range is applied to the compressed bytes).
- `range_total=N`: a 206 answer claims the file is N bytes long (`Content-Range: bytes a-b/N`): the file
  changed on the server since the `.part` was started.
- `validators=False`: send no ETag and honour no `If-Range` (a resume then always gets the whole file);
  by default each answer carries an ETag of the bytes served, and a Range with an `If-Range` that is not
  it gets the whole file (200), as real servers answer a file changed since the `.part` was begun.
- `only="*.tar"`: apply the fault modes above only to paths matching this glob (others are served intact).

`serve_script(respond)` serves every GET, HEAD and POST with `respond(handler)`, for hostile servers written in a few
lines (`endless_body`, `trickle` and the like); each bounds its own loops by time and bytes.

Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator


def send_whole(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
               headers: dict[str, str] | None = None) -> None:
    """An answer with its whole body (none for HEAD) and its Content-Length."""
    handler.send_response(status)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@dataclass
class Faults:
    drop_after: int | None = None
    drop_times: int | None = 1
    corrupt_byte_at: int | None = None
    corrupt_times: int | None = None
    lfs_pointer: bool = False
    fail_first: int = 0
    ignore_range: bool = False
    status_for: dict[str, int] = field(default_factory=dict)
    only: str | None = None
    redirect_to: str | None = None
    pace: float = 0.0
    gzip: bool = False
    range_total: int | None = None
    validators: bool = True


class BaseURL(str):
    """The server's base URL, with the request log and the server attached."""

    requests: list[dict[str, Any]]
    server: "FaultyServer"

    def requests_for(self, path: str) -> list[dict[str, Any]]:
        path = "/" + path.lstrip("/")
        return [r for r in self.requests if urllib.parse.unquote(r["path"].split("?")[0]) == path]


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root).resolve()
        self.faults = faults
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []

    def count(self, path: str) -> int:
        """1-based number of this request among the requests of this path."""
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            return self.counts[path]


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: FaultyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _arrived(self) -> None:
        """Log the request as it arrives (so the log is in arrival order); status is filled in later."""
        self._entry: dict[str, Any] = {"method": self.command, "path": self.path,
                                       "headers": dict(self.headers.items()), "status": None, "bytes_sent": 0}
        with self.server.lock:
            self.server.requests.append(self._entry)

    def _log(self, status: int, sent: int = 0) -> None:
        """Record the answer; called before the body is sent, so a client never sees an unlogged answer."""
        self._entry["status"] = status
        self._entry["bytes_sent"] = sent

    def _simple(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self._log(status, len(body) if self.command != "HEAD" else 0)
        send_whole(self, status, body, headers)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._arrived()
        faults = self.server.faults
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if faults.only is not None and not fnmatch.fnmatch(rel, faults.only):
            faults = Faults()
        path = (self.server.root / rel).resolve()
        if faults.redirect_to:
            return self._simple(302, b"", {"Location": faults.redirect_to.rstrip("/") + self.path})
        if rel in faults.status_for:
            return self._simple(faults.status_for[rel], b"fixed status\n")
        if not path.is_relative_to(self.server.root) or not path.is_file():
            return self._simple(404, b"not found\n")
        n = self.server.count(rel)
        if n <= faults.fail_first:
            return self._simple(500, b"injected failure\n")
        data = path.read_bytes()
        if faults.lfs_pointer:
            data = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                    f"size {len(data)}\n").encode()
        if faults.corrupt_byte_at is not None and faults.corrupt_byte_at < len(data) and (
                faults.corrupt_times is None or n <= faults.corrupt_times):
            buf = bytearray(data)
            buf[faults.corrupt_byte_at] ^= 0xFF
            data = bytes(buf)
        if faults.gzip:
            data = gzip.compress(data, mtime=0)
        size = len(data)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'  # of the bytes served: another file, another tag
        if_range = self.headers.get("If-Range")
        if rng and if_range is not None and (not faults.validators or if_range.strip() != etag):
            rng = None  # RFC 9110: a validator that does not match asks for the whole (current) file
        if rng and not faults.ignore_range:
            m = _RANGE.match(rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(size - int(m.group(2)), 0)
                if start >= size or start > end:
                    return self._simple(416, b"", {"Content-Range": f"bytes */{size}"})
                status = 206
        body = data[start:end + 1]
        drop = faults.drop_after is not None and (faults.drop_times is None or n <= faults.drop_times)
        drop = drop and faults.drop_after < len(body) and self.command != "HEAD"
        self._log(status, 0 if self.command == "HEAD" else faults.drop_after if drop else len(body))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if faults.validators:
            self.send_header("ETag", etag)
        if faults.gzip:
            self.send_header("Content-Encoding", "gzip")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{faults.range_total or size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if drop:
            self.wfile.write(body[: faults.drop_after])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            if not faults.pace:
                self.wfile.write(body)
            for at in range(0, len(body) if faults.pace else 0, 16 << 10):
                self.wfile.write(body[at:at + (16 << 10)])
                self.wfile.flush()
                time.sleep(faults.pace)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextlib.contextmanager
def serve_dir(path: str | Path, **faults: Any) -> Iterator[BaseURL]:
    """Serve `path` on 127.0.0.1 (a free port) with the given fault modes; yield the base URL."""
    server = FaultyServer(Path(path), Faults(**faults))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = BaseURL(f"http://127.0.0.1:{server.server_address[1]}")
    url.requests = server.requests
    url.server = server
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that never finishes its request does not hold the thread forever

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self.server.respond(self)  # type: ignore[attr-defined]
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        self.close_connection = True

    do_HEAD = do_POST = do_GET  # a token endpoint (POST), S3's HEAD: `respond` reads handler.command


@contextlib.contextmanager
def serve_script(respond) -> Iterator[str]:
    """Serve 127.0.0.1 with `respond(handler)` answering every GET, HEAD and POST (a hostile server in a few
    lines: an endless body, a huge Content-Length, a trickle). `respond` must bound its own loops."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    server.daemon_threads = True
    server.respond = respond  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def endless_body(handler: BaseHTTPRequestHandler, seconds: float = 15.0, limit: int = 2 << 30,
                 length: int | None = None) -> None:
    """Headers (Content-Length `length`, or none) then zeros until the client hangs up, `seconds` pass or
    `limit` bytes are sent."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()
    chunk = b"\0" * (1 << 16)
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < limit and time.monotonic() < deadline:
        handler.wfile.write(chunk)
        sent += len(chunk)


def trickle(handler: BaseHTTPRequestHandler, length: int | None = 1 << 20, every: float = 0.2,
            seconds: float = 10.0) -> None:
    """Declare `length` bytes (None: no Content-Length), then send one byte every `every` seconds for at
    most `seconds`."""
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        handler.wfile.write(b"\0")
        handler.wfile.flush()
        time.sleep(every)
