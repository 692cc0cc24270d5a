"""`hf://datasets/OWNER/NAME[@REVISION][/FOLDER]`: a Hugging Face dataset repository as a shards location.

Reading maps each address onto the Hub's plain download URL (`{endpoint}/datasets/OWNER/NAME/resolve/
REVISION/PATH`) and fetches it like any http(s) file, so reading needs no extra package and keeps every
bound of the http path (size caps, the stall rule, range resume, retries). The URL grammar is the one
`huggingface_hub.HfFileSystem` uses (a revision with a slash is written percent-encoded:
`@refs%2Fpr%2F3`), so the same string also works for `avdata push` (which does need `.[hf]`).

The token comes from where the Hub's own tools keep it: `HF_TOKEN`, else the file `hf auth login` writes
(`HF_TOKEN_PATH`, or `token` in `HF_HOME`, by default ~/.cache/huggingface). It is sent only to the Hub
endpoint, never to the storage a resolve URL redirects to. `HF_ENDPOINT` points at another Hub (a mirror).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from avdata.errors import AvdataError

__all__ = ["HubPath", "is_hub_url", "parse_hub_url", "resolve_url", "hub_token", "hub_request"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_FORM = "hf://datasets/OWNER/NAME[@REVISION][/FOLDER]"


@dataclass(frozen=True)
class HubPath:
    """One file or folder of a dataset repository: `repo_id` is OWNER/NAME, `path` is inside the repo."""

    repo_id: str
    revision: str
    path: str


def is_hub_url(spec: str) -> bool:
    return str(spec)[:5].lower() == "hf://"


def parse_hub_url(url: str) -> HubPath:
    """The parts of an hf:// address; AvdataError with the expected form for anything else (a model or a
    Space, no owner, an empty name or revision, `..` in the path)."""
    rest = url[len("hf://"):]
    kind, _, rest = rest.partition("/")
    if kind != "datasets":
        raise AvdataError(f"{url}: shards live in a dataset repository; write {_FORM}")
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise AvdataError(f"{url}: no OWNER/NAME; write {_FORM}")
    owner, name = parts[0], parts[1]
    revision = "main"
    if "@" in name:
        name, _, revision = name.partition("@")
        revision = urllib.parse.unquote(revision)
        if not name or not revision:
            raise AvdataError(f"{url}: empty name or revision; write {_FORM}")
    path = "/".join(p for p in parts[2:] if p)
    if any(p in (".", "..") for p in path.split("/")):
        raise AvdataError(f"{url}: '.' and '..' are not allowed in a repository path")
    return HubPath(f"{owner}/{name}", revision, path)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT


def resolve_url(url: str) -> str:
    """The Hub's download URL of an hf:// address (files of a repository are served there, with Range)."""
    p = parse_hub_url(url)
    return (f"{endpoint()}/datasets/{p.repo_id}/resolve/{urllib.parse.quote(p.revision, safe='')}/"
            f"{urllib.parse.quote(p.path, safe='/')}")


def hub_token() -> str | None:
    """The user's Hub token from HF_TOKEN or the token file; None when there is none (public repos)."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                            / "huggingface")
    path = Path(os.environ.get("HF_TOKEN_PATH") or Path(home) / "token")
    try:
        token = path.read_text(encoding="utf-8").strip()[:4096]
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def hub_request(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The http(s) URL and headers that fetch an hf:// address (the token as a Bearer header, if any)."""
    out = dict(headers)
    token = hub_token()
    if token and not any(k.lower() == "authorization" for k in out):
        out["Authorization"] = f"Bearer {token}"
    return resolve_url(url), out
