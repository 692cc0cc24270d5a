"""Upload a prepared shards folder to object storage (`s3://`, `gs://`, `hf://datasets/...`), verified first.

Why prepare locally and then push, instead of `prepare --out s3://...`: `avdata prepare` resumes, runs
`--part`s and checks its work through files on a local disk (the `.avdata/` state folder, shard sidecars,
temporary names renamed when complete), none of which object storage has (no rename, no appends, no
partial objects); and a bucket is the place readers find a dataset, so nothing should appear there before
the whole folder verifies. A push is cheap to repeat, so the two steps cost little more than one.

Order matters, as for `avdata pull`: the shards first, then the dataset card, and manifest.json LAST, so
a reader never sees a manifest that names shards not yet there. When the destination already holds a
different manifest.json, it is removed first (the shards it names are about to be replaced). Each object
appears whole or not at all (a PUT, or a multipart upload completed at the end), so an interrupted push
leaves no half-written object.

A rerun skips an object already there only when its content is known to be ours, not merely its size (a
dataset prepared again with other options or another seed can have shards of the very same sizes): on S3
and GCS each object is written with its sha256 in the object's metadata and compared by it; the Hub keeps
a content hash of every file itself (the LFS sha256, or git's blob id of a small file), compared with the
local file's. An object without such a record is uploaded again. What each store keeps and how it is
read and written: `avdata.fetch.objstore` (`upload_target`, `holds_file`, `upload_file`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from avdata.errors import AvdataError
from avdata.fetch.objstore import (SHA_KEY, filesystem, holds_file, store_error, store_info, upload_file,
                                   upload_target)
from avdata.hashing import sha256_file
from avdata.fetch.urls import is_object_url
from avdata.owned import CARD_NAME, other_preparation
from avdata.folder_lock import reading_lock
from avdata.progress import make_progress
from avdata.shards.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, Manifest
from avdata.verify import verify_shards

log = logging.getLogger("avdata.share.push")



@dataclass
class PushReport:
    """What `push` did: objects uploaded and skipped (already there with the same content), bytes sent."""

    url: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0

    def summary(self) -> str:
        return (f"{len(self.uploaded)} uploaded ({self.bytes_sent:,} bytes), {len(self.skipped)} already there")


def _remote_manifest(fs, path: str) -> tuple[bytes | None, Manifest | None]:
    """The manifest already at the destination: its bytes (None: none there) and, when it is a valid
    avdata manifest, the parsed one (None: not ours, never replaced)."""
    if not fs.exists(path):
        return None, None
    with fs.open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_SIZE + 1)
    try:
        found = Manifest.parse(data.decode("utf-8"), source=path) if len(data) <= MAX_MANIFEST_SIZE else None
    except (AvdataError, UnicodeDecodeError):
        found = None
    return data, found if found is not None and found.tool.get("name") == "avdata" else None


def push(folder: str | Path, url: str, jobs: int = 4, progress: bool | None = None,
         overwrite: bool = False) -> PushReport:
    """Verify the shards folder `folder` (sha256, sizes, sample counts), then upload it to `url`: shards,
    card, manifest last; objects already there with the same content are skipped (a rerun resumes).

    A destination that holds another dataset, or the same one prepared with other options, is refused
    unless `overwrite`; a manifest.json or README.md there that avdata did not write is never replaced.
    Raises AvdataError when the folder does not verify, the URL is not object storage, or the store
    refuses."""
    folder = Path(folder)
    url = url.rstrip("/")
    if url.endswith("/" + MANIFEST_NAME):
        url = url[: -len(MANIFEST_NAME) - 1]
    if not is_object_url(url):
        raise AvdataError(f"{url}: push uploads to object storage (s3://BUCKET/PATH, gs://BUCKET/PATH, "
                          "hf://datasets/OWNER/NAME); to share over http, run `avdata serve` on the folder")
    filesystem(url)  # a missing extra is named before the folder is read
    if not folder.is_dir():  # verify names what was meant (a manifest or shard given, a typo)
        return _verified_push(folder, url, jobs, progress, overwrite)
    with reading_lock(folder):  # no prepare or pull replaces a shard between the check and its upload
        return _verified_push(folder, url, jobs, progress, overwrite)


def _verified_push(folder: Path, url: str, jobs: int, progress: bool | None, overwrite: bool) -> PushReport:
    checked = verify_shards(folder, progress=progress)
    if not checked.ok:
        first = "; ".join(f"{f}: {w}" for f, w in checked.problems[:3])
        raise AvdataError(f"{folder} does not verify ({len(checked.problems)} problem(s): {first}); nothing was "
                          f"uploaded. See `avdata verify {folder}`, and prepare or pull the folder again")
    if checked.not_pulled:  # its manifest lists them: pushed, it would name shards that are nowhere
        raise AvdataError(f"{folder} lacks the split(s) {', '.join(checked.not_pulled)} (it was pulled with "
                          f"--split); push uploads a whole dataset: pull the rest first (`avdata pull URL --to "
                          f"{folder}`); nothing was uploaded")
    try:
        return _upload(folder, url, jobs, progress, overwrite)
    except Exception as exc:
        known = store_error(url, exc)  # missing or refused credentials, named with where they come from
        if known is not None:
            raise known from exc
        raise


def _check_destination(fs, url: str, root: str, folder: Path, manifest: Manifest, has_manifest: bool,
                       held: Manifest | None, card_sha: str | None, overwrite: bool) -> None:
    """What push may replace under `url`: the objects of an avdata manifest there (another preparation
    only with `overwrite`) or of an avdata upload, never a manifest.json or README.md that avdata did not
    write."""
    if has_manifest and held is None:
        raise AvdataError(f"{url}/{MANIFEST_NAME} is not an avdata manifest; push never replaces a file avdata "
                          "did not write, with --overwrite or without. Choose another URL")
    if held is not None:
        other = other_preparation(held, manifest)
        if other is not None and not overwrite:
            raise AvdataError(f"{url} already holds {other}; choose another URL, or pass --overwrite to replace it")
        return
    card = f"{root}/{CARD_NAME}"
    if _uploaded_by_avdata(fs, url, card) is False and not (
            card_sha and holds_file(fs, url, card, folder / CARD_NAME, card_sha)):
        raise AvdataError(f"{card} is there with no avdata manifest beside it, so avdata did not write it; push "
                          "never replaces it, with --overwrite or without. Choose another URL, or remove it")


def _uploaded_by_avdata(fs, url: str, path: str) -> bool | None:
    """Whether the object `path` carries the sha256 record `upload_file` writes on S3 and GCS (None: there is
    no such object). The Hub keeps no such record: False."""
    protocol = store_info(url)[0]
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if protocol == "hf":
        return False
    meta = fs.metadata(path) if protocol == "s3" else info.get("metadata")
    return isinstance(meta, dict) and bool(meta.get(SHA_KEY))


def _upload(folder: Path, url: str, jobs: int, progress: bool | None, overwrite: bool) -> PushReport:
    manifest_bytes = (folder / MANIFEST_NAME).read_bytes()
    manifest = Manifest.parse(manifest_bytes.decode("utf-8"), source=str(folder / MANIFEST_NAME))
    fs, root = upload_target(url)
    remote_manifest, held = _remote_manifest(fs, f"{root}/{MANIFEST_NAME}")
    sha = {s.file: s.sha256 for _split, s in manifest.shard_entries()}
    if (folder / CARD_NAME).is_file():
        sha[CARD_NAME] = sha256_file(folder / CARD_NAME)
    _check_destination(fs, url, root, folder, manifest, remote_manifest is not None, held,
                       sha.get(CARD_NAME), overwrite)
    report = PushReport(url)
    todo = []
    for name, digest in sha.items():
        if holds_file(fs, url, f"{root}/{name}", folder / name, digest):
            report.skipped.append(name)
        else:
            todo.append((name, (folder / name).stat().st_size))
    listed = {e.file for _split, e in held.shard_entries()} if held is not None else set()
    # on the Hub every replaced file stays in the repository's git history: nothing there is lost
    foreign = [] if store_info(url)[0] == "hf" else [
        name for name, _size in todo if name != CARD_NAME and name not in listed
        and _uploaded_by_avdata(fs, url, f"{root}/{name}") is False]
    if foreign:
        raise AvdataError(f"{url} holds {', '.join(foreign[:5])}{' and more' if len(foreign) > 5 else ''}, which "
                          "avdata did not write (no avdata manifest lists it, and it lacks the sha256 record of an "
                          "avdata upload); push never replaces such objects, with --overwrite or without. Choose "
                          "another URL, or remove them")
    if remote_manifest is not None and remote_manifest != manifest_bytes:
        log.info("%s/%s differs from the one pushed; removing it (and its card) until the push completes", url,
                 MANIFEST_NAME)
        fs.rm_file(f"{root}/{MANIFEST_NAME}")
        if CARD_NAME in dict(todo) and fs.exists(f"{root}/{CARD_NAME}"):
            fs.rm_file(f"{root}/{CARD_NAME}")
    # the Hub makes one commit per file: uploads to it go one at a time
    workers = 1 if store_info(url)[0] == "hf" else max(1, jobs)
    bar = make_progress("B", disable=None if progress in (None, True) else True)
    with bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task(f"push -> {url}", total=sum(s for _n, s in todo))

        def upload(item: tuple[str, int]) -> None:
            name, size = item
            upload_file(fs, url, folder / name, f"{root}/{name}", sha[name])
            bar.advance(task, size)

        for (name, size), _ in zip(todo, pool.map(upload, todo)):
            report.uploaded.append(name)
            report.bytes_sent += size
        if remote_manifest != manifest_bytes:
            fs.pipe_file(f"{root}/{MANIFEST_NAME}", manifest_bytes)
            report.uploaded.append(MANIFEST_NAME)
            report.bytes_sent += len(manifest_bytes)
        else:
            report.skipped.append(MANIFEST_NAME)
    log.info("pushed %s to %s: %s", manifest.dataset, url, report.summary())
    return report
