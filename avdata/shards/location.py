"""A shards folder: a local path, a remote URL (http(s), `s3://`, `gs://`, `hf://datasets/...`), or a list
of .tar files; its manifest and how to open each shard.

Everything that reads shards (inspect, verify, pull, the contact sheet, the trainer) goes through this, so a
folder on disk and the same folder behind any web server, bucket or dataset repository behave the same,
under the same bounds: the manifest is read whole only up to MAX_MANIFEST_SIZE (`read_url`), and a shard is
opened (`ShardsLocation.open`) as a stream that declares its size, which the one tar reader holds every
member header against, as well as against the manifest's size of the shard. Remote addresses are opened by
`avdata.fetch.transport.open_source` (object storage through `avdata.fetch.objstore`). Shards given one by
one (`avdata.shards.tar_list`) get a real manifest too: the one beside them, cut to the files given, or one
made by scanning the files.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence, cast

from avdata.errors import AvdataError
from avdata.fetch.transport import STALL_BYTES, STALL_SECONDS
from avdata.fetch.urls import is_url, join_url, redact
from avdata.shards.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, Manifest, ShardEntry, data_kind
from avdata.shards.member_caps import MemberCaps
from avdata.shards.reader import open_regular, stream_size
from avdata.shards.tar_list import cut_to_files, manifest_of_files, tar_list


def read_url(url: str, timeout: float = 60.0, retries: int = 3) -> bytes:
    """GET a manifest-sized file from any remote URL, bounded (see `avdata.fetch.transport.read_small`);
    names the URL when it fails."""
    from avdata.fetch.transport import read_small

    return read_small(url, MAX_MANIFEST_SIZE, timeout=timeout, retries=retries, what="manifest")


def read_manifest_url(base: str, timeout: float = 60.0) -> bytes:
    """The manifest.json of the shards folder at URL `base` (`read_url`); when there is none, an AvdataError
    saying why (no such bucket or repository, nothing uploaded there, a push that stopped) and what to do."""
    from avdata.shards.missing import missing_folder_hint

    url = join_url(base, MANIFEST_NAME)
    try:
        return read_url(url, timeout=timeout)
    except AvdataError as exc:
        cause = exc.__cause__
        if isinstance(cause, urllib.error.HTTPError) and cause.code == 404:
            hint = missing_folder_hint(base, cause, timeout)
            raise AvdataError(f"{redact(url)}: not found (HTTP 404); {hint}") from exc
        raise


@dataclass
class ShardsLocation:
    """Where a dataset's shards live. `base` is a local folder or a URL without trailing slash;
    `addresses` maps a shard file to its own path or URL when the shards were given one by one.
    Picklable (DataLoader workers open shards through it)."""

    base: str
    manifest: Manifest
    description: str = ""
    addresses: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0  # seconds a read may wait for any byte
    stall_seconds: float = STALL_SECONDS  # and at least stall_bytes must arrive in each stall_seconds of waiting
    stall_bytes: int = STALL_BYTES
    #: local shard file -> (device, inode, mtime_ns) when `pin` was called: a file replaced or rewritten since
    #: is told apart from the one the run started with even at the same size (`unchanged`)
    pinned: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return is_url(self.base)

    @property
    def shown(self) -> str:
        """`base` as messages and summaries show it: no password, no token (`avdata.fetch.urls.redact`)."""
        return redact(self.base)

    def address(self, file: str) -> str:
        if file in self.addresses:
            return self.addresses[file]
        return join_url(self.base, file) if self.remote else str(Path(self.base) / file)

    def shards(self, split: str) -> list[ShardEntry]:
        """The shard entries of a split, in order (AvdataError naming the splits there are)."""
        if split not in self.manifest.splits:
            raise AvdataError(f"{self.description or self.shown}: no split {split!r} (it has "
                              f"{', '.join(self.manifest.splits) or 'none'})")
        return self.manifest.splits[split].shards

    def num_samples(self, split: str) -> int:
        return sum(s.num_samples for s in self.shards(split))

    @property
    def splits(self) -> list[str]:
        return list(self.manifest.splits)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def kind(self) -> str:
        return data_kind(self.manifest)

    def open(self, file: str) -> IO[bytes]:
        """Open one shard for streaming (a local file, or a response whose Content-Length the tar reader
        bounds members by). Raises FileNotFoundError for a missing local file, NotAFileError for a FIFO,
        device or folder in its place, AvdataError naming the address (its cause the urllib error, HTTP 404
        for a missing object) for anything else a server does."""
        from avdata.fetch.transport import StallGuard, open_source

        address = self.address(file)
        if not is_url(address):
            return open_regular(address)
        try:
            # a read-only response that reads like a file: all a shard's reader asks of a stream
            return cast(IO[bytes], StallGuard(open_source(address, {}, self.timeout), self.stall_seconds,
                                              self.stall_bytes, what=address))
        except urllib.error.HTTPError as exc:
            raise AvdataError(f"{redact(address)}: could not be opened (HTTP {exc.code})") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise AvdataError(f"{redact(address)}: could not be opened ({getattr(exc, 'reason', exc)})") from exc

    def pin(self, splits: Sequence[str]) -> None:
        """Remember which file each local shard of `splits` is now (a long run reads them again every epoch,
        and a prepare, pull or copy into the same folder may replace one meanwhile, at the same size too)."""
        if self.remote:
            return
        for split in splits:
            for entry in self.shards(split):
                try:
                    st = os.stat(self.address(entry.file))
                except OSError:
                    continue  # absent: opening it reports it
                self.pinned[entry.file] = (st.st_dev, st.st_ino, st.st_mtime_ns)

    def change(self, entry: ShardEntry, stream: IO[bytes]) -> str | None:
        """How an opened shard differs from the one the run's manifest (read when it started) describes, or
        None: another size (any address), or, for a local file, another file than `pin` saw whose bytes are
        not the manifest's. The stream is left at its start."""
        size = stream_size(stream)
        if size is not None and size != entry.bytes:
            return (f"holds {size:,} bytes, not the {entry.bytes:,} its manifest (read when the run started) gives: "
                    "it was cut short or replaced since (a copy still running, or a push or prepare of another "
                    "version into the same place?)")
        if not self._unchanged(entry, stream):
            return ("was replaced since the run started (another file, whose sha256 is not the one its manifest, "
                    "read when the run started, gives: a push, pull or prepare of another version into the same "
                    "place?)")
        return None

    def _unchanged(self, entry: ShardEntry, stream: IO[bytes]) -> bool:
        """Whether an opened local shard is still the file `pin` saw, or holds the manifest's sha256 (a copy
        of the same bytes, or the file touched): hashed only when the file is another one, then remembered."""
        seen = self.pinned.get(entry.file)
        if seen is None or self.remote:
            return True
        st = os.fstat(stream.fileno())
        now = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if now == seen:
            return True
        digest = hashlib.sha256()
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
        stream.seek(0)
        if digest.hexdigest() != entry.sha256:
            return False
        self.pinned[entry.file] = now
        return True

    def caps(self) -> MemberCaps:
        """The most bytes each member of these shards may hold, by the manifest's features."""
        return MemberCaps(self.manifest.features)

    def fingerprint(self) -> str:
        """A short id of the shard lists (resume checks it has not changed)."""
        text = json.dumps({split: [(s.file, s.num_samples) for s in e.shards]
                           for split, e in self.manifest.splits.items()}, sort_keys=True)
        return f"{zlib.crc32(text.encode()):08x}"


def open_location(spec: str | Path) -> ShardsLocation:
    """Open a shards folder: a local folder, its manifest.json, or a remote URL of either (http(s), s3://,
    gs://, hf://datasets/...)."""
    spec = str(spec)
    if is_url(spec):
        head, sep, query = spec.partition("?")  # a query (?token=...) goes on every file's address
        head = head[: -len(MANIFEST_NAME)] if head.endswith("/" + MANIFEST_NAME) else head
        base = head.rstrip("/") + sep + query
        url = join_url(base, MANIFEST_NAME)
        raw = read_manifest_url(base)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AvdataError(f"{redact(url)}: not UTF-8 text ({exc}); is this a shards folder?") from exc
        return ShardsLocation(base, Manifest.parse(text, source=redact(url)), redact(spec))
    path = Path(spec)
    if path.name == MANIFEST_NAME:
        path = path.parent
    if not path.exists():
        raise AvdataError(f"{path}: no such folder")
    return ShardsLocation(str(path), Manifest.load(path), spec)


def _manifest_beside(folder: str) -> Manifest | None:
    """The manifest of the folder that holds shards given one by one, when it has a valid one."""
    try:
        if is_url(folder):
            return open_location(folder).manifest
        return Manifest.load(folder) if (Path(folder) / MANIFEST_NAME).exists() else None
    except AvdataError:
        return None


def open_shards(spec: str | Path | Sequence[str | Path], classes: Sequence[str] | None = None) -> ShardsLocation:
    """A shards folder, its URL, or .tar files (a comma list, a glob, or a sequence; see
    `avdata.shards.tar_list`). `classes`, when given, must match the manifest's."""
    files = tar_list(spec if isinstance(spec, (list, tuple)) else str(spec))
    if files is not None:
        folders = {f.rsplit("/", 1)[0] if is_url(f) else str(Path(f).parent) for f in files}
        beside = _manifest_beside(next(iter(folders))) if len(folders) == 1 else None
        if beside is not None:
            manifest, addresses = cut_to_files(beside, files, classes)
        else:
            manifest, addresses = manifest_of_files(files, classes)
        base = next(iter(folders)) if len(folders) == 1 else "."
        return ShardsLocation(base, manifest, f"{len(files)} shard file(s)", addresses)
    loc = open_location(str(spec))
    if classes is not None and list(classes) != loc.manifest.classes:
        raise AvdataError("the classes given differ from the manifest's")
    return loc
