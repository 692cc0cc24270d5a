"""Check a shards folder against its manifest: every shard's byte count, sha256 and sample count.

Works the same on a local folder and on the folder behind a remote URL (http(s), s3, gs, hf;
`avdata.shards.location`). Each shard is read once: the bytes go through sha256 and, at the same time,
through the shard reader (`avdata.shards.reader`) that counts the samples, so a shard cut short is reported
as such instead of crashing the check.
`quick=True` compares sizes only (a file stat, or an HTTP HEAD request). A remote shard whose read failed
as a server can fail once (an error status, a dropped connection, fewer bytes than it holds) is read again
(REMOTE_RETRIES) before it is reported: a hiccup is not damage, and "truncated" sends users to re-upload.

Why this file is long: the full check is one pass (hash, tar reader, sample checks, retried whole for a
remote hiccup) whose parts share the shard's state; apart, each would need the others' internals.

Shards may come from strangers, so the full check also reads each sample's `cls` member (capped, as every
member is, by the manifest's features: `avdata.shards.member_caps`) and reports class indices that are not
integers in 0..len(classes)-1, sample keys the writer would refuse (dots, '/', '..', control characters),
and a key found twice, in one split or in two (a test split holding training samples). Text from shards
and the manifest is printed through `avdata.printable`.
"""

from __future__ import annotations

import hashlib
import http.client
import tarfile
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from avdata.errors import AvdataError
from avdata.fetch.transport import remote_size
from avdata.printable import printable
from avdata.samples import REMOTE_RETRIES, SampleChecks, may_pass, retry_pause
from avdata.shards.frames import JPEG_FRAMES, is_jpeg_frame
from avdata.shards.location import ShardsLocation, open_location
from avdata.shards.manifest import MANIFEST_NAME, Manifest, ShardEntry
from avdata.progress import make_progress
from avdata.pulled_splits import not_pulled
from avdata.shards.reader import TarCutShortError, TarHeaderError, iter_tar_files

CHUNK = 1 << 20


@dataclass
class VerifyReport:
    """What `verify_shards` found. `problems` and `warnings` are (file, what) pairs in manifest order."""

    location: str
    splits: list[str]
    quick: bool = False
    checked: int = 0  # shard files checked
    bytes_checked: int = 0  # bytes read (or stat-ed, with quick)
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    not_pulled: list[str] = field(default_factory=list)  # splits with no shard here (`avdata pull --split`)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_files(self) -> list[str]:
        """Files with at least one problem, each once, in the order found."""
        return list(dict.fromkeys(f for f, _ in self.problems))

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "splits": self.splits, "quick": self.quick, "ok": self.ok,
                "checked": self.checked, "bytes_checked": self.bytes_checked,
                "not_pulled": self.not_pulled, "problems": [{"file": f, "what": w} for f, w in self.problems],
                "warnings": [{"file": f, "what": w} for f, w in self.warnings]}


class _HashingReader:
    """A read-only file wrapper that hashes and counts every byte read through it, and ends the stream
    after `limit` bytes (a server that never stops sending is cut off one byte past the expected size)."""

    def __init__(self, f: IO[bytes], on_bytes: Callable[[int], None], limit: int | None = None) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.n = 0
        self.on_bytes = on_bytes
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        size = size if size is not None and size >= 0 else -1
        if self.limit is not None:
            left = self.limit - self.n
            if left <= 0:
                return b""
            size = left if size < 0 else min(size, left)
        data = self.f.read(size)
        if data:
            self.sha.update(data)
            self.n += len(data)
            self.on_bytes(len(data))
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


#: Member extensions that stock webdataset decodes with pickle (or torch.load) unless WDS_SECURE=1 is set.
PICKLED_EXTENSIONS = ("pyd", "pickle", "pkl", "pth")


def _count_samples(reader: _HashingReader, limit: int, fields: set[str] | None = None,
                   checks: SampleChecks | None = None, caps: Callable[[str], int] | None = None
                   ) -> tuple[int | None, str | None]:
    """Samples in the tar streamed from `reader`, or (None, why) when it cannot be read to the end.

    Samples are counted as webdataset groups them: consecutive members with the same key (the member
    name up to its first dot). The field names met (what follows the key) are added to `fields`; keys
    and `cls` members go to `checks`. Member bytes other than `cls` are read past, never held: only the
    hash sees them.
    """
    n = 0
    current = None
    try:
        # the hashing reader is read-only and reads like a file, all the tar reader asks of a stream
        for member in iter_tar_files(reader, limit=limit,  # type: ignore[arg-type]
                                     skip=lambda name: not name.endswith(".cls"), caps=caps):
            key, _, fld = member["fname"].partition(".")
            if fields is not None:
                fields.add(fld)
            if key != current:
                n += 1
                current = key
                if checks is not None:
                    checks.sample(key, member["fname"])
            if checks is not None and fld == "cls" and member["data"] is not None:
                checks.label(key, member["data"])
    except TarCutShortError as exc:
        return None, (f"truncated tar: the file ends before the end-of-archive blocks, after {n} sample(s) "
                      f"({printable(exc)})")
    except TarHeaderError as exc:
        return None, f"damaged tar: bad member header after {n} sample(s) ({printable(exc)})"
    except tarfile.TarError as exc:
        return None, f"unreadable tar after {n} sample(s): damaged ({printable(exc)})"
    return n, None


def _open_shard(loc: ShardsLocation, file: str) -> IO[bytes] | tuple[str, bool]:
    """An open file, or the problem text when it cannot be opened and whether another try may open it."""
    try:
        return loc.open(file)
    except FileNotFoundError:
        return "missing", False
    except AvdataError as exc:
        cause = exc.__cause__
        if isinstance(cause, urllib.error.HTTPError) and cause.code == 404:
            return "missing (HTTP 404)", False
        return f"cannot be opened ({printable(cause or exc)})", may_pass(cause)
    except OSError as exc:
        return f"cannot be opened ({printable(exc)})", False


def _remote_size(url: str, timeout: float = 60.0) -> int | str:
    """The size from a HEAD request (or the object's metadata), or the problem text (retried while a
    server error or a network failure may pass)."""
    for attempt in range(REMOTE_RETRIES + 1):
        try:
            length = remote_size(url, timeout)
            break
        except (urllib.error.URLError, OSError) as exc:
            if not may_pass(exc) or attempt == REMOTE_RETRIES:
                code = getattr(exc, "code", None)
                return "missing (HTTP 404)" if code == 404 else f"cannot be read ({f'HTTP {code}' if code else exc})"
            retry_pause(attempt + 1)
    if length is None:
        return "server sends no Content-Length; run without --quick"
    return length


def _size_problem(expected: int, found: int) -> str:
    if found < expected:
        return f"size differs: expected {expected} bytes, found {found} (truncated: {expected - found} bytes missing)"
    return f"size differs: expected {expected} bytes, found {found} ({found - expected} extra bytes)"


def _check_quick(loc: ShardsLocation, shard: ShardEntry, report: VerifyReport) -> int:
    file = shard.file
    if loc.remote:
        size = _remote_size(loc.address(file))
    else:
        path = Path(loc.address(file))
        size = path.stat().st_size if path.is_file() else "not a regular file" if path.exists() else "missing"
    if isinstance(size, str):
        report.problems.append((file, size))
        return 0
    if size != shard.bytes:
        report.problems.append((file, _size_problem(shard.bytes, size)))
    return size


def _check_full(loc: ShardsLocation, shard: ShardEntry, report: VerifyReport,
                on_bytes: Callable[[int], None], checks: SampleChecks) -> int:
    """One shard's full check, read again (a fresh report and sample checks each time) while a remote
    read fails in a way that may pass."""
    for attempt in range(REMOTE_RETRIES + 1 if loc.remote else 1):
        if attempt:
            retry_pause(attempt)
            checks.restart()
        trial = VerifyReport(report.location, report.splits)
        got, passing = _check_full_once(loc, shard, trial, on_bytes, checks)
        if not (trial.problems and passing):
            break
    report.problems += trial.problems
    report.warnings += trial.warnings
    return got


def _check_full_once(loc: ShardsLocation, shard: ShardEntry, report: VerifyReport,
                     on_bytes: Callable[[int], None], checks: SampleChecks) -> tuple[int, bool]:
    """(bytes read, whether a failure may pass on another read: an error status, a read that failed or
    came up short)."""
    file = shard.file
    opened = _open_shard(loc, file)
    if isinstance(opened, tuple):
        report.problems.append((file, opened[0]))
        return 0, opened[1]
    reader = _HashingReader(opened, on_bytes, limit=shard.bytes + 1)
    tar_problem = read_problem = None
    count: int | None = None
    fields: set[str] = set()
    try:
        with opened:
            count, tar_problem = _count_samples(reader, shard.bytes, fields, checks, loc.caps())
            reader.drain()  # the end-of-archive blocks and anything after them are part of the file too
    except (OSError, http.client.HTTPException) as exc:
        read_problem = f"read failed after {reader.n} bytes ({printable(exc)})"
    if read_problem:
        report.problems.append((file, read_problem))
        return reader.n, True
    if reader.n > shard.bytes:
        report.problems.append((file, f"size differs: more than the expected {shard.bytes} bytes "
                                      "(stopped reading there)"))
    elif reader.n != shard.bytes:
        report.problems.append((file, _size_problem(shard.bytes, reader.n)))
    else:
        digest = reader.sha.hexdigest()
        if digest != shard.sha256:
            report.problems.append((file, f"sha256 differs: expected {shard.sha256}, got {digest}"))
    listed = set(loc.manifest.features)
    unlisted = sorted(printable(f) for f in fields - listed if not (JPEG_FRAMES in listed and is_jpeg_frame(f)))
    if unlisted:
        pickled = [f for f in unlisted if f.rsplit(".", 1)[-1].lower() in PICKLED_EXTENSIONS]
        warn = (f"members not listed in the manifest's features: {', '.join('.' + f for f in unlisted[:10])}"
                f"{' ...' if len(unlisted) > 10 else ''}; a reader that decodes by extension may handle them "
                "in ways the manifest does not describe")
        if pickled:
            warn += (f"; {', '.join('.' + f for f in pickled)} would be unpickled (running code) by stock "
                     "webdataset: read shards from others with WDS_SECURE=1 or explicit decoders")
        report.warnings.append((file, warn))
    report.problems += [(file, what) for what in checks.listed()]
    if tar_problem:
        report.problems.append((file, tar_problem))
    elif count != shard.num_samples:
        report.problems.append((file, f"sample count differs: expected {shard.num_samples}, found {count}"))
    return reader.n, reader.n < shard.bytes


def _check_manifest(manifest: Manifest, splits: list[str], report: VerifyReport) -> None:
    """The manifest's own sums: split sample counts vs its shards and its class counts."""
    for split in splits:
        entry = manifest.splits[split]
        from_shards = sum(s.num_samples for s in entry.shards)
        if entry.num_samples != from_shards:
            report.problems.append((MANIFEST_NAME, f"split {split!r}: num_samples {entry.num_samples} but its "
                                                   f"shards hold {from_shards}"))
        from_classes = sum(entry.class_counts.values())
        if from_classes != entry.num_samples:
            report.problems.append((MANIFEST_NAME, f"split {split!r}: class_counts add up to {from_classes}, "
                                                   f"not num_samples {entry.num_samples}"))


def _extra_files(loc: ShardsLocation, report: VerifyReport) -> None:
    if loc.remote:
        return
    known = {s.file for _split, s in loc.manifest.shard_entries()}
    base = Path(loc.base)
    for p in sorted(base.glob("*.tar")):
        if p.name not in known:
            report.warnings.append((p.name, "tar file not listed in manifest.json"))
    for p in sorted(base.glob("*.tmp")):
        report.warnings.append((p.name, "unfinished temporary file (an interrupted prepare?)"))


def verify_shards(spec: str | Path, splits: list[str] | None = None, quick: bool = False,
                  progress: bool | None = None) -> VerifyReport:
    """Check the shards folder `spec` (local folder or http(s) URL) against its manifest.json.

    splits: only these splits (all when None: then the splits `avdata pull --split` left out of a local
    folder are listed in `not_pulled` instead of reported missing).
    quick: byte counts only, no sha256 or tar reading.
    progress: show a progress bar over bytes (None: unless AVDATA_NO_PROGRESS is set).
    Raises AvdataError when the manifest itself cannot be read or a split does not exist.
    """
    loc = open_location(spec)
    manifest = loc.manifest
    names = list(manifest.splits) if not splits else list(dict.fromkeys(splits))
    absent = [] if splits else not_pulled(loc)
    names = [n for n in names if n not in absent]
    entries = manifest.shard_entries(names)  # raises AvdataError for an unknown split
    checks = SampleChecks(len(manifest.classes))
    report = VerifyReport(location=loc.shown, splits=names, quick=quick, not_pulled=absent)
    _check_manifest(manifest, names, report)
    total = sum(s.bytes for _split, s in entries)
    bar = make_progress("B", disable=None if progress in (None, True) else True)
    with bar:
        task = bar.add_task("verify (sizes)" if quick else "verify", total=total)
        for split, shard in entries:
            expected = shard.bytes
            bar.update(task, description=f"verify {shard.file}")
            advanced = [0]

            def on_bytes(n: int) -> None:
                n = max(0, min(n, expected - advanced[0]))  # a longer file does not overfill the bar
                advanced[0] += n
                bar.advance(task, n)

            if quick:
                got = _check_quick(loc, shard, report)
                on_bytes(got)
            else:
                checks.start(split, shard.file)
                got = _check_full(loc, shard, report, on_bytes, checks)
            on_bytes(expected)  # missing or short files still count as checked
            report.checked += 1
            report.bytes_checked += got
        bar.update(task, description="verify")
    _extra_files(loc, report)
    return report


def print_report(report: VerifyReport, console=None) -> None:
    """Warnings, then the problems by file, then one final line ("N shards OK" or the count of problems)."""
    from rich.console import Console
    from rich.markup import escape  # file names and problems may hold shard text: never markup

    console = console or Console()
    if report.not_pulled:
        listed = ", ".join(report.not_pulled)
        console.print(f"split(s) {listed} not pulled (avdata pull --split), not checked "
                      f"(`avdata pull URL --to DIR --split {report.not_pulled[0]}` fetches one; "
                      f"`avdata verify DIR --split {report.not_pulled[0]}` checks it)", highlight=False, soft_wrap=True)
    for file, what in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(printable(file, 400))}: {escape(printable(what, 2000))}",
                      highlight=False, soft_wrap=True)
    if report.ok:
        how = "sizes match" if report.quick else "sha256, sizes and sample counts match"
        console.print(f"[green]{report.checked} shards OK[/] ({how}; splits: {', '.join(report.splits)})",
                      highlight=False)
        return
    for file, what in report.problems:
        console.print(f"[red]{escape(printable(file, 400))}[/]: {escape(printable(what, 2000))}", highlight=False,
                      soft_wrap=True)
    console.print(f"[red]{len(report.problems)} problem(s) in {len(report.bad_files)} file(s)[/] "
                  f"({report.checked} shards checked)", highlight=False)
