"""THE download function: every file the project fetches goes through `fetch_files` (or `fetch_url`
for one address).

For each file: `<dest>/<path>.part` is written (resumed with an HTTP `Range: bytes=N-` request when a
`.part` is already there), then its size, sha256 (and md5 where one is published) are checked, and only
then is it renamed to `<dest>/<path>`. Files already present under their final name with the right size
and sha256 are skipped. Several files are fetched at once by a thread pool, under one progress bar over
bytes. Sources may be http(s) URLs or a local folder (copied through the same code, for tests and for
pulling a shards folder from a mounted disk).

Servers are not trusted: a body is never written past its declared size (or MAX_UNDECLARED_SIZE when
none is declared), an attempt that receives fewer than `stall_bytes` in `stall_seconds` is aborted and
retried, an HTML page served in place of a file is named as such, a run of identical failures on the
first files stops the download early, and `.part` files are opened so that a planted symlink is never
followed. How each part does it: see the modules listed in `avdata.fetch`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from avdata.errors import AvdataError
from avdata.fetch.checks import LFS_HINT
from avdata.fetch.disk import DiskFullError, part_path
from avdata.fetch.results import DownloadError, DownloadReport, FileResult, RemoteFile, as_remote
from avdata.fetch.session import ByteBar, Settings
from avdata.fetch.sources import SourceFile
from avdata.fetch.transfer import Transfer
from avdata.fetch.transport import STALL_BYTES, STALL_SECONDS
from avdata.fetch.urls import join_url, redact
from avdata.progress import make_progress

__all__ = ["DiskFullError", "DownloadError", "DownloadReport", "FileResult", "RemoteFile", "STALL_BYTES",
           "STALL_SECONDS", "fetch_files", "fetch_url"]

log = logging.getLogger("avdata.fetch.download")

VERIFY_EXISTING = ("sha256", "size")


def _safe_rel(rel: str) -> str:
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts or rel.startswith(("/", "\\")):
        raise AvdataError(f"refusing to download to {rel!r}: paths must be relative and stay inside the folder")
    return rel


def _part_size(final: Path) -> int:
    """The bytes already received towards `final` (its `.part`)."""
    try:
        return part_path(final).stat().st_size
    except OSError:
        return 0


def fetch_files(
    base_url: str,
    files: Sequence[SourceFile | RemoteFile] | Iterable[SourceFile | RemoteFile],
    dest: str | Path,
    jobs: int = 8,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    *,
    verify_existing: str = "sha256",
    headers: Mapping[str, str] | None = None,
    description: str | None = None,
    stall_seconds: float = STALL_SECONDS,
    stall_bytes: int = STALL_BYTES,
) -> DownloadReport:
    """Fetch `files` from `base_url` (an http(s) URL or a local folder) into `dest`, verified.

    The address of a file is `base_url.rstrip('/') + '/' + quote(path)` (or its `url` when it has one).
    `jobs` files are fetched at once; each is retried up to `retries` times (waits `backoff`, 2x`backoff`,
    ... seconds); a dropped connection resumes from the bytes received. `verify_existing`: "sha256"
    re-hashes files already under their final name, "size" trusts a matching size. `headers` are sent
    with every request (an Authorization header is never forwarded to another host on a redirect).
    An attempt that receives fewer than `stall_bytes` in `stall_seconds` is aborted and retried
    (`stall_seconds=0`: no stall rule, only the per-read `timeout`).
    Raises DiskFullError (an AvdataError) when the disk fills up; every other problem is reported.
    """
    if verify_existing not in VERIFY_EXISTING:
        raise AvdataError(f"verify_existing must be one of {VERIFY_EXISTING}, not {verify_existing!r}")
    dest = Path(dest)
    specs: list[RemoteFile] = []
    seen: set[str] = set()
    for f in files:
        spec = as_remote(f)
        _safe_rel(spec.path)
        if spec.path not in seen:
            seen.add(spec.path)
            specs.append(spec)
    report = DownloadReport(dest=dest)
    if not specs:
        return report
    dest.mkdir(parents=True, exist_ok=True)
    cfg = Settings(retries=max(retries, 0), backoff=max(backoff, 0.0), timeout=timeout,
                    headers=dict(headers or {}), verify_existing=verify_existing, stop=threading.Event(),
                    stall_seconds=max(float(stall_seconds), 0.0), stall_bytes=max(int(stall_bytes), 0))
    start = time.monotonic()
    total = sum(s.size for s in specs if s.size is not None)
    where = redact(base_url) if base_url else "(per-file addresses)"
    log.info("downloading %d file(s) (%s bytes known) from %s to %s", len(specs),
             f"{total:,}", where, dest)
    fatal: BaseException | None = None
    with make_progress("B", disable=None if progress else True) as prog:
        bar = ByteBar(prog, description or f"download -> {dest.name or dest}", total)
        pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="avdata-dl")
        try:
            futures = {}
            for spec in specs:
                url = spec.url or join_url(base_url, spec.path)
                t = Transfer(spec, url, dest / spec.path, cfg, bar)
                futures[pool.submit(t.run)] = spec
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    report.add(fut.result())
                except DiskFullError as exc:
                    cfg.stop.set()
                    fatal = fatal or exc
                    log.debug("%s", exc)  # raised once all transfers stopped, saying what the rest needs
                except Exception as exc:  # a bug or an unexpected OS error: report it, keep going
                    log.exception("%s: unexpected error", spec.path)
                    report.add(FileResult(path=spec.path, status="failed", reason=f"{type(exc).__name__}: {exc}",
                                          kind="error"))
        except BaseException:  # Ctrl-C, kill (as KeyboardInterrupt): stop now, keep the .part files
            cfg.halt("the download was interrupted")
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if not report.failed:
            prog.update(bar.task, total=max(bar.total, 1), completed=max(bar.total, 1))
    report.seconds = time.monotonic() - start
    if isinstance(fatal, DiskFullError):
        done = {r.path for r in (*report.fetched, *report.already_present)}
        left = [s for s in specs if s.path not in done]
        needed = sum(max(s.size - _part_size(dest / s.path), 0) for s in left if s.size is not None)
        raise fatal.needing(dest, needed, sum(1 for s in left if s.size is None)) from fatal
    if fatal is not None:
        raise fatal
    for result in report.failed:
        if result.kind == "lfs-pointer" and LFS_HINT not in report.notes:
            report.notes.append(f"Git LFS pointers were served instead of media: {LFS_HINT}.")
    report.fetched.sort(key=lambda r: r.path)
    report.already_present.sort(key=lambda r: r.path)
    report.failed.sort(key=lambda r: r.path)
    log.info("%s in %.1fs", report.summary(), report.seconds)
    return report


def fetch_url(
    url: str,
    dest_path: str | Path,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    headers: Mapping[str, str] | None = None,
    check: Callable[[Path], str | None] | None = None,
    stall_seconds: float = STALL_SECONDS,
    stall_bytes: int = STALL_BYTES,
) -> FileResult:
    """Fetch one URL to `dest_path` through `fetch_files` (same resume, retries and checks).

    Returns the FileResult (status fetched or present); raises DownloadError when it failed.
    """
    dest_path = Path(dest_path)
    spec = RemoteFile(path=dest_path.name, size=size, sha256=sha256.lower() if sha256 else None,
                      md5=md5.lower() if md5 else None, url=url, check=check)
    report = fetch_files("", [spec], dest_path.parent, jobs=1, retries=retries, backoff=backoff, timeout=timeout,
                         progress=progress, headers=headers, description=f"download {dest_path.name}",
                         stall_seconds=stall_seconds, stall_bytes=stall_bytes)
    result = report.results[0]
    if result.status == "failed":
        raise DownloadError(result)
    return result
