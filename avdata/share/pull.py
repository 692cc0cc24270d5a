"""Fetch a prepared shards folder served anywhere (avdata serve, nginx, S3, a Hugging Face dataset repo).

Order matters: the shards first (each checked against the sha256 and size the manifest gives, through
`avdata.fetch.download.fetch_files`), then the dataset card, and manifest.json last, written atomically. A
folder holds a manifest.json only when the pull finished, so an interrupted pull is never mistaken for a
complete folder; rerunning the pull resumes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from avdata.atomic import atomic_write_bytes
from avdata.fetch.disk import drop_link
from avdata.fetch.download import STALL_BYTES, STALL_SECONDS, DownloadReport, RemoteFile, fetch_files
from avdata.fetch.urls import is_url, join_url
from avdata.errors import AvdataError
from avdata.shards.location import read_url
from avdata.shards.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, Manifest
from avdata.verify import record_pulled_splits

log = logging.getLogger("avdata.share.pull")

CARD_NAME = "README.md"
#: The dataset card has no declared size: a real one is a few kilobytes.
MAX_CARD_SIZE = 16 << 20


def _base(url: str) -> str:
    url = str(url)
    if url.endswith("/" + MANIFEST_NAME) or url == MANIFEST_NAME:
        url = url[: -len(MANIFEST_NAME)]
    if url.startswith("file://"):
        url = join_url(url, "")
    return url.rstrip("/") if is_url(url) else str(Path(url))


def _read(base: str, name: str, timeout: float) -> bytes:
    if is_url(base):
        return read_url(join_url(base, name), timeout=timeout)
    path = Path(base) / name
    if not path.is_file():
        raise AvdataError(f"{path}: not found; is {base} a shards folder made by `avdata prepare`?")
    with open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_SIZE + 1)
    if len(data) > MAX_MANIFEST_SIZE:
        raise AvdataError(f"{path}: larger than {MAX_MANIFEST_SIZE:,} bytes, far more than any manifest")
    return data


def _dataset_in(manifest_path: Path) -> str | None:
    """The dataset named by the manifest already in the target folder (None: none readable there)."""
    try:
        with open(manifest_path, "rb") as f:
            found = json.loads(f.read(MAX_MANIFEST_SIZE))
    except (OSError, ValueError, RecursionError):
        return None
    return str(found.get("dataset")) if isinstance(found, dict) else None


def pull(
    url: str,
    to: str | Path,
    splits: Sequence[str] | None = None,
    jobs: int = 8,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    *,
    overwrite: bool = False,
    stall_seconds: float = STALL_SECONDS,
    stall_bytes: int = STALL_BYTES,
) -> DownloadReport:
    """Copy the shards folder at `url` (http(s) URL or local path) into `to`, verified shard by shard.

    `splits`: only these splits' shards (the manifest is still written whole, listing the others too).
    manifest.json is written last, and only when every shard arrived intact. A folder that already holds
    another dataset is refused unless `overwrite` (its manifest would be replaced and its shards orphaned).
    Every transfer is capped (shards at the manifest's size, the card at MAX_CARD_SIZE) and aborted when
    fewer than `stall_bytes` arrive in `stall_seconds`.
    """
    base = _base(url)
    to = Path(to)
    raw_manifest = _read(base, MANIFEST_NAME, timeout)
    try:
        text = raw_manifest.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AvdataError(f"{join_url(base, MANIFEST_NAME)}: not UTF-8 text ({exc}); is this a shards folder?") from exc
    manifest = Manifest.parse(text, source=join_url(base, MANIFEST_NAME))
    all_splits = list(manifest.splits)
    chosen = list(dict.fromkeys(splits)) if splits else all_splits
    entries = manifest.shard_entries(chosen)  # raises AvdataError naming the splits that exist
    files = [RemoteFile(path=e.file, size=e.bytes, sha256=e.sha256.lower()) for _split, e in entries]

    local_manifest = to / MANIFEST_NAME
    drop_link(local_manifest)
    held = _dataset_in(local_manifest) if local_manifest.exists() else None
    if held is not None and held != manifest.dataset and not overwrite:
        raise AvdataError(f"{to} already holds the dataset {held!r} (its {MANIFEST_NAME}), not "
                          f"{manifest.dataset!r}; choose another --to folder, or pass --overwrite to replace it "
                          "(its shards would stay beside the new ones)")
    to.mkdir(parents=True, exist_ok=True)
    if local_manifest.exists() and local_manifest.read_bytes() != raw_manifest:
        # The folder holds another version: it is not complete until this pull finishes.
        log.info("%s differs from the served manifest; removing it (and the old card) until the pull "
                 "completes", local_manifest)
        local_manifest.unlink()
        (to / CARD_NAME).unlink(missing_ok=True)

    log.info("pulling %d shard(s) of split(s) %s from %s to %s", len(files), ", ".join(chosen), base, to)
    stall = dict(stall_seconds=stall_seconds, stall_bytes=stall_bytes)
    report = fetch_files(base, files, to, jobs=jobs, retries=retries, backoff=backoff, timeout=timeout,
                         progress=progress, description=f"pull -> {to.name or to}", **stall)

    card = fetch_files(base, [RemoteFile(CARD_NAME, max_size=MAX_CARD_SIZE)], to, jobs=1, retries=retries,
                       backoff=backoff, timeout=timeout, progress=False, **stall)
    for r in card.failed:
        if r.http_status == 404:
            log.info("no %s (dataset card) at %s", CARD_NAME, base)
        else:
            report.failed.append(r)
    report.fetched += card.fetched
    report.already_present += card.already_present

    if report.failed:
        report.notes.append(f"{MANIFEST_NAME} was not written because {len(report.failed)} file(s) failed; "
                            f"run the same pull again to resume.")
        return report
    atomic_write_bytes(local_manifest, raw_manifest)
    record_pulled_splits(to, chosen, manifest)  # so that verify checks the splits there are
    others = [s for s in all_splits if s not in chosen]
    if others:
        note = (f"only split(s) {', '.join(chosen)} were pulled; the manifest also lists {', '.join(others)}, "
                f"whose shards are absent from {to}.")
        log.info("%s", note)
        report.notes.append(note)
    log.info("pulled %s into %s: %s", manifest.dataset, to, report.summary())
    return report
