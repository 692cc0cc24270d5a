"""A seekable file that answers like an HTTP response, so local files and storage objects go through the same
download and reading code as http (ranges, Content-Length, 416 past the end)."""

from __future__ import annotations

import email.message
import urllib.error
from typing import IO, Any


class FileResponse:
    """`f` (of `size` bytes) read from `offset` on: status 200, or 206 with a Content-Range for a range."""

    def __init__(self, url: str, f: IO[bytes], size: int, offset: int = 0) -> None:
        if offset and offset >= size:
            f.close()
            hdrs = email.message.Message()
            hdrs["Content-Range"] = f"bytes */{size}"
            raise urllib.error.HTTPError(url, 416, "Range Not Satisfiable", hdrs, None)
        self.url, self._f = url, f
        f.seek(offset)
        self.status = 206 if offset else 200
        self.headers = email.message.Message()
        self.headers["Content-Length"] = str(size - offset)
        if offset:
            self.headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "FileResponse":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
