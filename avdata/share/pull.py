"""Fetch a prepared shards folder served anywhere (avdata serve, nginx, S3, a Hugging Face dataset repo).

Order matters: the shards first (each checked against the sha256 and size the manifest gives, through
`avdata.fetch.download.fetch_files`), then the dataset card, and manifest.json last, written atomically. A
folder holds a manifest.json only when the pull finished, so an interrupted pull is never mistaken for a
complete folder; rerunning the pull resumes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from avdata.atomic import atomic_write_bytes
from avdata.fetch.disk import drop_link, free_space, part_path
from avdata.fetch.download import STALL_BYTES, STALL_SECONDS, DownloadReport, RemoteFile, fetch_files
from avdata.fetch.urls import is_url, join_url, redact
from avdata.errors import AvdataError
from avdata.folder_lock import output_lock
from avdata.owned import CARD_NAME, claim, other_preparation, our_manifest, owned_names, refuse_foreign
from avdata.shards.location import read_manifest_url, read_url
from avdata.shards.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, Manifest
from avdata.pulled_splits import record_pulled_splits

log = logging.getLogger("avdata.share.pull")

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
        if name == MANIFEST_NAME:
            return read_manifest_url(base, timeout=timeout)
        return read_url(join_url(base, name), timeout=timeout)
    path = Path(base) / name
    if not path.is_file():
        raise AvdataError(f"{path}: not found; is {base} a shards folder made by `avdata prepare`?")
    with open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_SIZE + 1)
    if len(data) > MAX_MANIFEST_SIZE:
        raise AvdataError(f"{path}: larger than {MAX_MANIFEST_SIZE:,} bytes, far more than any manifest")
    return data


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file `path` holds exactly `data` (read no further than that)."""
    with open(path, "rb") as f:
        return f.read(len(data) + 1) == data


def _check_target(to: Path, manifest: Manifest, raw_manifest: bytes, overwrite: bool) -> None:
    """Refuse, without `overwrite`, a --to folder whose manifest is another dataset, or the same dataset
    prepared another way (other options or source files): its manifest and card would be replaced."""
    if overwrite or not (to / MANIFEST_NAME).is_file() or _holds(to / MANIFEST_NAME, raw_manifest):
        return
    held = our_manifest(to)
    if held is None:
        return  # not an avdata manifest: refuse_foreign names it (unless a record of ours says we wrote it)
    other = other_preparation(held, manifest)
    if other is not None:
        raise AvdataError(f"{to} already holds {other} (its {MANIFEST_NAME}); choose another --to folder, or pass "
                          "--overwrite to replace it (its shards would stay beside the new ones)")


def _check_space(to: Path, files: list[RemoteFile]) -> None:
    """Refuse, before any byte arrives, a pull whose shards (less what is already there, whole or as .part)
    cannot fit on the disk of `to`: it would fill that disk and stop, however large the manifest says its
    shards are (up to 10**12 bytes each)."""
    free = free_space(to)
    if free is None:
        return
    need = 0
    for f in files:
        have = 0
        for path in (to / f.path, part_path(to / f.path)):
            if path.is_file() and not path.is_symlink():
                have = max(have, path.stat().st_size)
        need += max((f.size or 0) - have, 0)
    if need > free:
        raise AvdataError(f"{to}: the {len(files)} shard(s) to pull need {need:,} more bytes than the {free:,} free "
                          "there; free some space, choose another --to folder, or pull fewer splits (--split)")


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

    `splits`: only these splits' shards (the manifest is still written whole, listing the others too);
    shards of other splits already here are checked against it too when it replaces another manifest.
    manifest.json is written last, and only when every shard arrived intact. A folder that already holds
    another dataset, or the same one prepared with other options, is refused unless `overwrite` (its
    manifest would be replaced and its shards orphaned); a file under one of the names the pull writes that
    avdata did not write (a user's README.md) is never replaced (`avdata.owned`).
    Every transfer is capped (shards at the manifest's size, the card at MAX_CARD_SIZE) and aborted when
    fewer than `stall_bytes` arrive in `stall_seconds`.
    """
    base = _base(url)
    to = Path(to)
    raw_manifest = _read(base, MANIFEST_NAME, timeout)
    try:
        text = raw_manifest.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AvdataError(f"{redact(join_url(base, MANIFEST_NAME))}: not UTF-8 text ({exc}); "
                          "is this a shards folder?") from exc
    manifest = Manifest.parse(text, source=join_url(base, MANIFEST_NAME))
    all_splits = list(manifest.splits)
    chosen = list(dict.fromkeys(splits)) if splits else all_splits
    entries = manifest.shard_entries(chosen)  # raises AvdataError naming the splits that exist
    files = [RemoteFile(path=e.file, size=e.bytes, sha256=e.sha256.lower()) for _split, e in entries]

    local_manifest = to / MANIFEST_NAME
    drop_link(local_manifest)
    _check_target(to, manifest, raw_manifest, overwrite)
    if not (local_manifest.is_file() and _holds(local_manifest, raw_manifest)):
        # shards of the other splits here came with another manifest (or a pull cut short before this
        # one's): checked too, and replaced where they differ, or this manifest would be written over them
        ours = owned_names(to) if to.is_dir() else set()
        files += [RemoteFile(path=e.file, size=e.bytes, sha256=e.sha256.lower()) for _split, e in
                  manifest.shard_entries([s for s in all_splits if s not in chosen])
                  if e.file in ours and (to / e.file).is_file()]
    names = [f.path for f in files] + [CARD_NAME, MANIFEST_NAME]
    refuse_foreign(to, names, "avdata pull")
    _check_space(to, files)
    to.mkdir(parents=True, exist_ok=True)
    with output_lock(to, None, command="avdata pull"):  # one pull (or prepare) writes into a folder at a time
        claim(to, names)  # before any byte arrives: a pull cut short and rerun knows these names are its own
        if local_manifest.exists() and not _holds(local_manifest, raw_manifest):
            # The folder holds another version: it is not complete until this pull finishes.
            log.info("%s differs from the served manifest; removing it (and the old card) until the pull "
                     "completes", local_manifest)
            local_manifest.unlink()
            (to / CARD_NAME).unlink(missing_ok=True)

        log.info("pulling %d shard(s) of split(s) %s from %s to %s", len(files), ", ".join(chosen), redact(base), to)
        stall: dict[str, Any] = dict(stall_seconds=stall_seconds, stall_bytes=stall_bytes)
        report = fetch_files(base, files, to, jobs=jobs, retries=retries, backoff=backoff, timeout=timeout,
                             progress=progress, description=f"pull -> {to.name or to}", **stall)

        card = fetch_files(base, [RemoteFile(CARD_NAME, max_size=MAX_CARD_SIZE, optional=True)], to, jobs=1,
                           retries=retries, backoff=backoff, timeout=timeout, progress=False, **stall)
        for r in card.failed:
            if r.http_status == 404:
                log.info("no %s (dataset card) at %s", CARD_NAME, redact(base))
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
        others = [s for s in all_splits if s not in chosen  # (an earlier pull may have brought them)
                  and not all((to / e.file).is_file() for e in manifest.splits[s].shards)]
        if others:
            note = (f"only split(s) {', '.join(chosen)} were pulled; the manifest also lists {', '.join(others)}, "
                    f"whose shards are absent from {to}.")
            log.info("%s", note)
            report.notes.append(note)
        log.info("pulled %s into %s: %s", manifest.dataset, to, report.summary())
        return report
