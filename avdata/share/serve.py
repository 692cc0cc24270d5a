"""A static file server with HTTP Range support, for sharing a shards folder (or raw files) on a LAN.

Nothing here is special to avdata: any static file server (nginx, S3, a Hugging Face dataset
repository) serving the same folder works with `avdata pull`, `avdata inspect URL` and the trainer.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import threading
import urllib.parse
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from avdata import __version__
from avdata.errors import AvdataError

log = logging.getLogger("avdata.share.serve")

COPY_CHUNK = 1 << 20
#: Seconds a connection may stay silent (a request not finished, a body not read) before it is closed,
#: so that slow or idle clients cannot hold the server's threads.
CONNECTION_TIMEOUT = 30.0
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE | re.ASCII)
_TYPES = {".tar": "application/x-tar", ".json": "application/json", ".md": "text/markdown; charset=utf-8",
          ".tsv": "text/tab-separated-values; charset=utf-8", ".npy": "application/octet-stream"}


#: Byte positions past 10**18 (an exabyte) are all "beyond the end": longer digit strings are never turned
#: into ints (Python refuses int() of over 4,300 digits, and a huge one costs time for nothing).
_MAX_DIGITS = 18


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """The (start, end) inclusive byte range asked for by a single-range `Range` header.

    None: serve the whole file (no header, a malformed one, or several ranges, which RFC 9110 lets a
    server ignore). "unsatisfiable": answer 416.
    """
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None  # several ranges or another unit: ignore the header
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        n = _position(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or (last and _position(last) < start):
        return "unsatisfiable"
    return start, end


class RangeRequestHandler(BaseHTTPRequestHandler):
    """GET and HEAD of files under `directory`, with single-range requests (206) and 416."""

    server_version = f"avdata-serve/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_TIMEOUT  # socket timeout of every connection (socketserver applies it)

    def __init__(self, *args: Any, directory: str | Path, **kwargs: Any) -> None:
        self.directory = Path(directory).resolve()
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _resolve(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." or "\\" in p or "\x00" in p for p in parts):
            return None
        target = self.directory.joinpath(*parts) if parts else self.directory
        try:
            target = target.resolve()
        except OSError:
            return None
        if target != self.directory and self.directory not in target.parents:
            return None
        if target.is_dir():
            index = target / "index.html"
            return index if index.is_file() else None
        return target if target.is_file() else None

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = (message + "\n").encode("utf-8")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        path = self._resolve()
        if path is None:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        try:
            f = open(path, "rb")
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            modified = formatdate(st.st_mtime, usegmt=True)
            if_range = self.headers.get("If-Range")
            # a resume made against another version of the file gets the whole current file (RFC 9110)
            asked = self.headers.get("Range") if if_range is None or if_range.strip() == modified else None
            rng = parse_range(asked, size)
            if rng == "unsatisfiable":
                self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable",
                            {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
                return
            if rng is None:
                start, end, status = 0, size - 1, HTTPStatus.OK
            else:
                start, end = rng
                status = HTTPStatus.PARTIAL_CONTENT
            length = max(end - start + 1, 0)
            self.send_response(status)
            ctype = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", modified)
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not send_body or length == 0:
                return
            f.seek(start)
            remaining = length
            try:
                while remaining > 0:
                    chunk = f.read(min(COPY_CHUNK, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("%s: client went away", self.path)


#: Connections served at once by default; each holds a thread (and up to a read buffer) until it ends.
MAX_CONNECTIONS = 64

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
         b"Connection: close\r\n\r\n")


class CappedThreadingHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: a stranger opening thousands of idle
    connections would otherwise get a thread for each. A connection over the cap is answered 503 with
    Retry-After (clients of this project retry those) and closed, without a thread."""

    daemon_threads = True

    def __init__(self, address: tuple, handler: Any, max_connections: int = MAX_CONNECTIONS) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_server(directory: str | Path, host: str = "127.0.0.1", port: int = 8000,
                timeout: float = CONNECTION_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> ThreadingHTTPServer:
    """A threaded server for `directory` (not started: call serve_forever). Port 0 picks a free port.
    `timeout`: seconds a connection may stay silent before it is closed; `max_connections`: served at once
    (more are answered 503)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AvdataError(f"{directory}: no such folder to serve")
    if not timeout > 0:
        raise AvdataError(f"the connection timeout must be more than 0 seconds, not {timeout}")
    if max_connections < 1:
        raise AvdataError(f"--max-connections must be at least 1, not {max_connections}")
    timed = type("TimedRangeRequestHandler", (RangeRequestHandler,), {"timeout": float(timeout)})
    handler = partial(timed, directory=directory)
    try:
        return CappedThreadingHTTPServer((host, port), handler, max_connections)
    except OSError as exc:
        raise AvdataError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from exc


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = str(host)
    if host in ("0.0.0.0", "::", ""):
        shown = "<this machine's address>"
    elif ":" in host:
        shown = f"[{host}]"
    else:
        shown = host
    return f"http://{shown}:{port}"


def serve(directory: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `directory` until interrupted (Ctrl-C)."""
    server = make_server(directory, host, port)
    url = server_url(server)
    log.info("serving %s at %s (Ctrl-C to stop)", Path(directory).resolve(), url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
