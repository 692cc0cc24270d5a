"""Addresses: telling a remote URL from a local path, joining a file name onto either, hiding credentials.

Every URL that is printed or logged goes through `redact` first: a password in `user:pass@` and the
values of query parameters that carry secrets (`?token=`, pre-signed `X-Amz-Signature=`, `sig=`, ...)
become `***`. `basic_auth` turns a URL's `user:pass@` into the Authorization header it stands for.

Every module that takes "a URL or a folder" (download, pull, a shards location, the trainer's streams)
decides with `is_url` and builds addresses with `join_url`, so the kinds of source behave the same. A
remote URL is http(s), or object storage (`s3://`, `gs://`: `avdata.fetch.objstore`) or a Hugging Face
dataset repository (`hf://datasets/...`: `avdata.fetch.hub`); all of them are opened by
`avdata.fetch.transport.open_source`.
"""

from __future__ import annotations

import base64
import re
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
    path join for a local folder (or file://). A query on an http(s) base (`?token=...`) stays at the end,
    so every file's address carries it."""
    if is_object_url(base):
        return base.rstrip("/") + "/" + rel
    if is_url(base):
        head, sep, query = base.partition("?")
        return head.rstrip("/") + "/" + urllib.parse.quote(rel, safe="/") + sep + query
    if base.startswith("file://"):
        base = urllib.request.url2pathname(urllib.parse.urlsplit(base).path)
    return str(Path(base) / rel)


#: Query parameters whose values are secrets: access tokens, API keys, signatures of pre-signed URLs
#: (S3's X-Amz-Signature/-Credential/-Security-Token, Google's X-Goog-*, Azure's sig), passwords.
_SECRET_PARAM = re.compile(r"token|sig|secret|key|pass|pwd|auth|credential|session|^x-amz-|^x-goog-",
                           re.IGNORECASE)
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")


def redact(url: str) -> str:
    """The URL as it may be shown in logs and messages: `user:pass@` becomes `***@`, and the value of every
    query parameter that carries a secret becomes `***` (the rest of the URL is kept as it was)."""
    url = _USERINFO.sub(r"\1***@", str(url), count=1)
    head, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_, fragment = rest.partition("#")
    params = []
    for param in query.split("&"):
        name, eq, value = param.partition("=")
        secret = eq and value and _SECRET_PARAM.search(urllib.parse.unquote_plus(name))
        params.append(f"{name}=***" if secret else param)
    return head + sep + "&".join(params) + hash_ + fragment


def basic_auth(url: str) -> tuple[str, str | None]:
    """(the URL without `user:pass@`, the `Authorization: Basic` value it stands for, or None). urllib
    would otherwise take the whole `user:pass@host` for a host name ("Name or service not known")."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode("utf-8")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, "Basic " + base64.b64encode(pair).decode("ascii")
