"""Addresses: telling an http(s) URL from a local path, joining a file name onto either, hiding credentials.

Every module that takes "a URL or a folder" (download, pull, a shards location, the trainer's streams)
decides with `is_url` and builds addresses with `join_url`, so the two kinds of source behave the same.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

_SCHEMES = ("http://", "https://")


def is_url(spec: str | Path) -> bool:
    """True for an http(s) URL (any case of the scheme); False for a local path or a file:// URL."""
    return str(spec)[:8].lower().startswith(_SCHEMES)


def join_url(base: str, rel: str) -> str:
    """`base/rel` with `rel` percent-quoted for URLs; a plain path join for a local folder (or file://)."""
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
