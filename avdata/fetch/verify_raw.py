"""Checking an existing raw copy (a clone, an old download, a shared disk) against a source list.

Each listed file is classified as ok, missing, lfs-pointer (a Git LFS stub: the clone lacks `git lfs
pull`), size-mismatch or hash-mismatch, with the fix for each problem.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.fetch.disk import part_path
from avdata.fetch.lfs import MAX_POINTER_SIZE, describe_pointer, is_lfs_pointer
from avdata.progress import make_progress
from avdata.fetch.sources import SourceFile

log = logging.getLogger("avdata.fetch.verify_raw")

STATUSES = ("ok", "missing", "lfs-pointer", "size-mismatch", "hash-mismatch")

FIXES = {
    "missing": "download it: `avdata download` fetches only what is missing or wrong",
    "lfs-pointer": "this is a Git LFS pointer stub, not the media: run `git lfs pull` in the clone "
                   "(or fetch the media with `avdata download`)",
    "size-mismatch": "truncated or a different version: delete it and download again (`avdata download` "
                     "replaces it)",
    "hash-mismatch": "corrupt or a different version: delete it and download again (`avdata download` "
                     "replaces it)",
}


@dataclass
class RawFileCheck:
    path: str
    status: str
    expected_size: int
    actual_size: int | None = None
    expected_sha256: str = ""
    actual_sha256: str | None = None
    detail: str = ""


@dataclass
class RawReport:
    raw_dir: Path
    checks: list[RawFileCheck] = field(default_factory=list)
    hashed: bool = True

    @property
    def ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(ch.status for ch in self.checks)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def problems(self) -> list[RawFileCheck]:
        return [c for c in self.checks if c.status != "ok"]

    def summary(self) -> str:
        parts = [f"{n} {s}" for s, n in self.counts.items() if n or s == "ok"]
        return f"{len(self.checks)} files: " + ", ".join(parts) + ("" if self.hashed else " (sizes only)")


def check_file(raw_dir: Path, spec: SourceFile, check_hash: bool = True, advance=lambda n: None) -> RawFileCheck:
    """Classify one file of the list."""
    path = raw_dir / spec.path
    res = RawFileCheck(path=spec.path, status="ok", expected_size=spec.size, expected_sha256=spec.sha256)
    if not path.is_file():
        res.status = "missing"
        res.detail = "not there" + (" (a partial download .part is: rerun `avdata download` to finish it)"
                                    if part_path(path).exists() else "")
        return res
    size = path.stat().st_size
    res.actual_size = size
    if size <= MAX_POINTER_SIZE and size != spec.size and is_lfs_pointer(path):
        res.status = "lfs-pointer"
        res.detail = describe_pointer(path)
        return res
    if size != spec.size:
        res.status = "size-mismatch"
        res.detail = f"{size:,} bytes instead of {spec.size:,}"
        return res
    if check_hash:
        res.actual_sha256 = sha256_file(path, advance)
        if res.actual_sha256 != spec.sha256:
            res.status = "hash-mismatch"
            res.detail = f"sha256 {res.actual_sha256} instead of {spec.sha256}"
    return res


def verify_raw(
    raw_dir: str | Path,
    files: Sequence[SourceFile],
    check_hash: bool = True,
    jobs: int = 4,
    progress: bool = True,
) -> RawReport:
    """Check every listed file under `raw_dir`: present, not an LFS stub, right size, right sha256
    (`check_hash=False`: sizes only). Hashing runs on `jobs` threads under one progress bar."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise AvdataError(f"{raw_dir}: no such folder")
    report = RawReport(raw_dir=raw_dir, hashed=check_hash)
    if check_hash:
        unit, total = "B", sum(f.size for f in files)
    else:
        unit, total = "files", len(files)
    with make_progress(unit, disable=None if progress else True) as prog:
        task = prog.add_task(f"verify {raw_dir.name or raw_dir}", total=total or None)
        lock = threading.Lock()

        def advance(n: int) -> None:
            prog.update(task, advance=n)

        def one(spec: SourceFile) -> RawFileCheck:
            res = check_file(raw_dir, spec, check_hash, advance)
            if check_hash:
                hashed = spec.size if res.actual_sha256 is not None else 0
                with lock:
                    prog.update(task, advance=spec.size - hashed)  # files not hashed count as done
            else:
                advance(1)
            return res

        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="avdata-verify") as pool:
            report.checks = list(pool.map(one, files))
    for c in report.problems:
        log.debug("%s: %s (%s)", c.path, c.status, c.detail)
    log.info("%s: %s", raw_dir, report.summary())
    return report
