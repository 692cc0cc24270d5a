"""Addresses: telling a remote URL from a local path, joining a file name onto either, hiding credentials.

Every module that takes "a URL or a folder" (download, pull, a shards location, the trainer's streams)
decides with `is_url` and builds addresses with `join_url`, so the kinds of source behave the same. A
remote URL is http(s), or object storage (`s3://`, `gs://`: `avdata.fetch.objstore`) or a Hugging Face
dataset repository (`hf://datasets/...`: `avdata.fetch.hub`); all of them are opened by
`avdata.fetch.transport.open_source`.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

_HTTP = ("http://", "https://")
#: Object storage and Hub addresses: their paths are object keys, used as they are (no percent-quoting).
OBJECT_SCHEMES = ("s3://", "gs://", "gcs://", "hf://")


def is_url(spec: str | Path) -> bool:
    """True for a remote URL (http(s), s3, gs, hf; any case of the scheme); False for a local path or a
    file:// URL."""
    return str(spec)[:8].lower().startswith(_HTTP + OBJECT_SCHEMES)


def is_object_url(spec: str | Path) -> bool:
    """True for an object storage or Hub URL (s3://, gs://, gcs://, hf://)."""
    return str(spec)[:8].lower().startswith(OBJECT_SCHEMES)


def join_url(base: str, rel: str) -> str:
    """`base/rel` with `rel` percent-quoted for http(s) URLs (object keys are used as they are); a plain
    path join for a local folder (or file://)."""
    if is_object_url(base):
        return base.rstrip("/") + "/" + rel
    if is_url(base):
        return base.rstrip("/") + "/" + urllib.parse.quote(rel, safe="/")
    if base.startswith("file://"):
        base = urllib.request.url2pathname(urllib.parse.urlsplit(base).path)
    return str(Path(base) / rel)


def redact(url: str) -> str:
    """The URL without user:password@, for logs and messages (credentials are never shown)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url
