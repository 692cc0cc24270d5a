"""The generic part of `avdata download <name>`: a dataset's `sources.py` says what to fetch (`Download`:
its options dataclass and a function that makes `DownloadPlan`s); this module fetches every plan through the
one engine (`avdata.fetch.download.fetch_files`), records the sha256 of unpinned files in `SHA256SUMS`,
adds the dataset's hint to network failures and runs its `finish` step (e.g. unpack a zip).
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from avdata.atomic import atomic_write_text
from avdata.option_fields import opt
from avdata.errors import AvdataError
from avdata.fetch.download import DownloadReport, RemoteFile, fetch_files
from avdata.fetch.sources import SourceFile
from avdata.fetch.urls import redact
from avdata.folder_lock import lock_dir, output_lock
from avdata.owned import left_as_found

log = logging.getLogger("avdata.fetch.download")

__all__ = ["DownloadPlan", "Download", "MirrorOptions", "zip_check", "mirror_hint", "read_sha256sums",
           "record_sha256sums", "download_options", "plan_download", "download_dataset"]

SHA256SUMS = "SHA256SUMS"
MIRROR_HELP = "Fetch from this base URL (or local folder) instead of the default address."


@dataclass
class DownloadPlan:
    """One batch of files from one place: where from, which files, extra headers, notes for the user."""

    dataset: str
    base_url: str
    files: Sequence[SourceFile | RemoteFile]
    headers: dict[str, str]
    record_sums: bool = False  # no sha256 is published: record what was fetched in SHA256SUMS
    hint: str = ""  # added to network failures, e.g. which --mirror to try
    # run once all files arrived (e.g. unpack a zip); may add notes to the report or raise AvdataError
    finish: Callable[[Path, DownloadReport], None] | None = None


@dataclass(frozen=True)
class Download:
    """What `avdata download <name>` does: `plan(dest, options)` with `options` an instance of `options`
    (a dataclass whose fields, made with `opt`, are the command's own flags)."""

    options: type
    plan: Callable[[Path, Any], list[DownloadPlan]]
    help: str  # the command's help: what it fetches, from where by default
    files: Callable[[Any], list[SourceFile]] | None = None  # its pinned list, selected: `avdata verify-raw <name>`


@dataclass
class MirrorOptions:
    """The options of a download that only takes another address."""

    mirror: str | None = opt(None, help=MIRROR_HELP)


def zip_check(path: Path) -> str | None:
    """Why a fetched file is not a zip (e.g. an HTML error page), or None."""
    if not zipfile.is_zipfile(path):
        head = path.read_bytes()[:200] if path.stat().st_size else b""
        looks = " (it looks like an HTML page)" if b"<html" in head.lower() or b"<!doctype" in head.lower() else ""
        return f"the server sent something that is not a zip file{looks}"
    return None


def mirror_hint(base: str) -> str:
    return f"Could not fetch from {redact(base)}; check the address (--mirror) and your connection."


def read_sha256sums(dest: Path) -> dict[str, str]:
    path = Path(dest) / SHA256SUMS
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if len(digest) == 64 and name:
                out[name.strip()] = digest
    return out


def record_sha256sums(dest: Path, report: DownloadReport, paths: Sequence[str]) -> Path | None:
    """Add the sha256 of the given files (fetched or already present) to `<dest>/SHA256SUMS`."""
    digests = {r.path: r.sha256 for r in (*report.fetched, *report.already_present) if r.sha256}
    new = {p: digests[p] for p in paths if p in digests}
    if not new:
        return None
    sums = read_sha256sums(dest)
    sums.update(new)
    path = Path(dest) / SHA256SUMS
    atomic_write_text(path, "".join(f"{sums[name]}  {name}\n" for name in sorted(sums)))
    return path


def download_options(dataset: str, **values: Any) -> Any:
    """The options instance of `dataset`'s download from keyword values (None and empty values are left out);
    a value another download takes but this one does not is named with the datasets that take it."""
    from avdata.datasets.registry import downloads, get_download

    download = get_download(dataset)
    fields = {f.name for f in dataclasses.fields(download.options)}
    values = {k: v for k, v in values.items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    for name in values:
        if name not in fields:
            owners = [n for n, d in downloads().items() if name in {f.name for f in dataclasses.fields(d.options)}]
            flag = "--" + name.replace("_", "-")
            raise AvdataError(f"{flag} only applies to {', '.join(owners) or 'no dataset'}, not {dataset}")
    return download.options(**values)


def plan_download(dataset: str, dest: str | Path, **values: Any) -> list[DownloadPlan]:
    """The downloads `avdata download DATASET` makes (several for a name that covers several sources)."""
    from avdata.datasets.registry import get_download

    return get_download(dataset).plan(Path(dest), download_options(dataset, **values))


def download_dataset(
    dataset: str,
    dest: str | Path,
    *,
    jobs: int = 8,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    verify_existing: str = "sha256",
    progress: bool = True,
    stall_seconds: float | None = None,
    **values: Any,
) -> DownloadReport:
    """Download a dataset's raw files into `dest` (resumable; rerunning skips verified files). `values`
    are its download options (e.g. mirror=..., for cremad limit=...). `stall_seconds`: the stall rule's
    window (None: the default; 0: off)."""
    dest = Path(dest)
    # one download into a folder at a time: two appended to the same .part files and renamed each other's
    with left_as_found(dest, lock_dir(dest)), output_lock(dest, None, command="avdata download"):
        return _download(dataset, dest, jobs, retries, backoff, timeout, verify_existing, progress,
                         stall_seconds, values)


def _download(dataset: str, dest: Path, jobs: int, retries: int, backoff: float, timeout: float,
              verify_existing: str, progress: bool, stall_seconds: float | None,
              values: dict[str, Any]) -> DownloadReport:
    report = DownloadReport(dest=dest)
    stall: dict[str, Any] = {} if stall_seconds is None else {"stall_seconds": stall_seconds}
    for plan in plan_download(dataset, dest, **values):
        part = fetch_files(plan.base_url, plan.files, dest, jobs=jobs, retries=retries, backoff=backoff,
                           timeout=timeout, progress=progress, verify_existing=verify_existing,
                           headers=plan.headers, description=f"{plan.dataset} -> {dest.name or dest}",
                           **stall)
        if plan.record_sums:
            unverified = [f.path for f in plan.files if getattr(f, "sha256", None) is None]
            sums = record_sha256sums(dest, part, unverified)
            if sums is not None:
                part.notes.append(f"{plan.dataset}: no sha256 is published for these files; the sha256 of what "
                                  f"was fetched is recorded in {sums} (compare it with another copy).")
        if part.failed and plan.hint and any(r.kind in ("network", "http") for r in part.failed):
            part.notes.append(plan.hint)
            for r in part.failed:
                if r.kind in ("network", "stopped") and plan.hint not in r.reason:
                    r.reason = f"{r.reason}. {plan.hint}"
        if plan.finish is not None and not part.failed:
            plan.finish(dest, part)
        report.extend(part)
    return report
