"""Which version of a file a `.part` holds, for files whose checksum nothing pins (AVE.zip, the MNIST-DVS
and UrbanSound8K zips): `<final>.part.from` keeps the server's validator (a strong ETag, else
Last-Modified) and size from the response the `.part` was begun with, and a resume sends it as `If-Range`.

Without it, a file changed on the server between two runs had its new tail appended to the old head, and
nothing (no size, no sha256) could tell: the mixed file was kept under its final name. With it, the server
answers a changed file with the whole new body (200), and the `.part` starts over. A `.part` with no record
(its server gave no validator) is not resumed.
"""

from __future__ import annotations

import json
from email.message import Message
from pathlib import Path
from typing import Any

from avdata.atomic import atomic_write_text
from avdata.fetch.disk import unlink_missing_ok
from avdata.fetch.transport import header_int

__all__ = ["remember", "validator", "recorded_size", "forget", "record_path"]

SUFFIX = ".from"


def record_path(part: Path) -> Path:
    return part.with_name(part.name + SUFFIX)


def remember(part: Path, headers: Message | Any) -> None:
    """Record the validator of the response a fresh `.part` is written from (none given: no record)."""
    etag = (headers.get("ETag") or "").strip()
    found = {"etag": etag} if etag.startswith('"') else {}  # a weak W/"..." tag may not be used in If-Range
    modified = (headers.get("Last-Modified") or "").strip()
    if not found and modified:
        found = {"last_modified": modified}
    if not found:
        forget(part)
        return
    size = header_int(headers.get("Content-Length"))
    atomic_write_text(record_path(part), json.dumps({**found, "size": size}))


def _read(part: Path) -> dict[str, Any]:
    path = record_path(part)
    if path.is_symlink() or not path.is_file():  # only a plain file is read (a FIFO would block)
        return {}
    try:
        with open(path, "rb") as f:
            data = f.read(4097)
        record = json.loads(data) if len(data) <= 4096 else None
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def validator(part: Path) -> str | None:
    """The `If-Range` value for resuming `part`, or None when its version is not known."""
    record = _read(part)
    value = record.get("etag") or record.get("last_modified")
    return value if isinstance(value, str) and value and "\n" not in value and "\r" not in value else None


def recorded_size(part: Path) -> int | None:
    size = _read(part).get("size")
    return size if type(size) is int and size >= 0 else None


def forget(part: Path) -> None:
    unlink_missing_ok(record_path(part))
