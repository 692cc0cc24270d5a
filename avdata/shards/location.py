"""A shards folder given as a local path or an http(s) URL: its manifest and the address of each shard.

Everything that reads shards (inspect, verify, the trainer) goes through this, so a folder on disk and
the same folder behind any static web server behave the same.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from avdata.errors import AvdataError
from avdata.fetch.urls import is_url
from avdata.shards.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, load_manifest, parse_manifest, shard_files


def read_url(url: str, timeout: float = 60.0, retries: int = 3) -> bytes:
    """GET a manifest-sized file, bounded (see `avdata.fetch.transport.read_small`); names the URL when it fails."""
    from avdata.fetch.transport import read_small

    return read_small(url, MAX_MANIFEST_SIZE, timeout=timeout, retries=retries, what="manifest")


@dataclass
class ShardsLocation:
    """Where a shards folder lives (`base` is a local folder path or a URL without trailing slash)."""

    base: str
    manifest: dict[str, Any]

    @property
    def remote(self) -> bool:
        return is_url(self.base)

    def address(self, file: str) -> str:
        return f"{self.base}/{file}" if self.remote else str(Path(self.base) / file)

    def shards(self, split: str) -> list[dict[str, Any]]:
        """Shard entries of a split with an added `url` (a path or URL that webdataset opens)."""
        return [{**s, "url": self.address(s["file"])} for s in shard_files(self.manifest, [split])]

    def open(self, file: str, timeout: float = 60.0) -> IO[bytes]:
        if self.remote:
            try:
                return urllib.request.urlopen(self.address(file), timeout=timeout)
            except (urllib.error.URLError, OSError) as exc:
                raise AvdataError(f"{self.address(file)}: could not be opened ({exc})") from exc
        return open(self.address(file), "rb")


def open_location(spec: str | Path) -> ShardsLocation:
    """Open a shards folder: a local folder, its manifest.json, or an http(s) URL of either."""
    spec = str(spec)
    if is_url(spec):
        base = spec[: -len(MANIFEST_NAME)] if spec.endswith("/" + MANIFEST_NAME) else spec
        base = base.rstrip("/")
        url = f"{base}/{MANIFEST_NAME}"
        raw = read_url(url)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AvdataError(f"{url}: not UTF-8 text ({exc}); is this a shards folder?") from exc
        return ShardsLocation(base, parse_manifest(text, source=url))
    path = Path(spec)
    if path.name == MANIFEST_NAME:
        path = path.parent
    if not path.exists():
        raise AvdataError(f"{path}: no such folder")
    return ShardsLocation(str(path), load_manifest(path))
