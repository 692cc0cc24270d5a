"""Unpacking a zip without trusting it: the one extractor every dataset's zips go through (AVE.zip,
the UrbanSound8K-AV Kaggle zip, the MNIST-DVS `grabbed_data<d>.zip`), on download or on `prepare --raw`.

A zip from a mirror may name members outside the target (`../x`, `/etc/x`, `C:\\x`), hold links, claim
small sizes and inflate to far more, or be cut off. `unpack_zip` therefore:

- refuses member names that are absolute, carry a drive letter or a backslash, or step up with `..`, and
  checks that each resolved destination lies inside the target;
- refuses links and encrypted members, and names that occur twice;
- bounds the total by the sizes the zip declares (`max_bytes`, and the free disk space), and never writes
  more than a member declares (zipfile stops there; the CRC check then fails for a lying member);
- bounds the compression ratio (`max_ratio`), of each member and of the chosen members together against
  the zip's size, once past `RATIO_MIN_BYTES`: media and event recordings deflate by a few times at most,
  a zip bomb by a thousand (2.7 MB of zip holding 1.5 GB of zeros); callers pass `keep` so that members
  the dataset does not use are never written at all;
- writes each member as `<name>.part` (created afresh, never through a link planted under that name),
  renamed once complete and CRC-checked, so a member is never half present under its name; members
  already there with their declared size are kept (a rerun resumes), and a marker file records a
  finished unpack of that zip and that choice of members, so a rerun does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from avdata.atomic import atomic_write_text, open_new
from avdata.errors import AvdataError

#: Default bound on what one zip may unpack to (the AVE zip unpacks to a few GB, UrbanSound8K-AV's to about 7).
MAX_UNPACKED_BYTES = 64 * 2**30
MAX_MEMBERS = 200_000
#: Largest compression ratio (declared size / compressed size) unpacked: real media and event files
#: deflate by under 5x; deflate's own maximum is about 1032x (runs of one byte).
MAX_RATIO = 100
#: Sizes below which the ratio is not checked (small text lists compress far better than media; harmless).
RATIO_MIN_BYTES = 8 * 2**20
_COPY_CHUNK = 1 << 20


def _member_path(name: str, zpath: Path) -> PurePosixPath:
    """The relative path a member name stands for; AvdataError when it would leave the target."""
    bad = (not name or name.startswith("/") or "\\" in name or "\x00" in name
           or (len(name) > 1 and name[1] == ":"))
    rel = PurePosixPath(name)
    if bad or ".." in rel.parts or rel.is_absolute():
        raise AvdataError(f"{zpath}: member {name!r} would be written outside the target folder; "
                          "the zip is damaged or not the dataset's: download it again from a trusted copy")
    return rel


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _marker(zpath: Path, target: Path) -> Path:
    return target / f".unpacked-{zpath.name}"


def _stamp(zpath: Path, names: list[str]) -> str:
    """What a finished unpack was of: the zip (name, size, time) and the members chosen (another `keep`,
    e.g. another MNIST-DVS scale, is another unpack)."""
    st = zpath.stat()
    chosen = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{zpath.name} {st.st_size} {st.st_mtime_ns} {len(names)} {chosen}\n"


def unpack_zip(
    zpath: str | Path,
    target: str | Path,
    keep: Callable[[str], bool] = lambda name: True,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_ratio: float = MAX_RATIO,
) -> list[str]:
    """Unpack the members of `zpath` whose name passes `keep` into `target` (see the module docstring).
    Returns the relative paths unpacked or already present, sorted. AvdataError names the zip, the member
    and the fix for any refusal."""
    zpath, target = Path(zpath), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    marker = _marker(zpath, target)
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AvdataError(f"{zpath}: not a readable zip file ({exc}); download it again") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise AvdataError(f"{zpath}: {len(infos):,} members, more than the {MAX_MEMBERS:,} allowed; "
                              "not the dataset's zip?")
        chosen: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        seen: set[str] = set()
        for info in infos:
            rel = _member_path(info.filename, zpath)
            if not keep(info.filename):
                continue
            if _is_link(info):
                raise AvdataError(f"{zpath}: member {info.filename!r} is a link; refusing to unpack links")
            if info.flag_bits & 0x1:
                raise AvdataError(f"{zpath}: member {info.filename!r} is encrypted; not the dataset's zip?")
            if rel.as_posix() in seen:
                raise AvdataError(f"{zpath}: member {info.filename!r} occurs twice; the zip is damaged")
            seen.add(rel.as_posix())
            chosen.append((info, rel))
        names = sorted(rel.as_posix() for _, rel in chosen)
        stamp = _stamp(zpath, names)
        if marker.is_file() and marker.read_text() == stamp:
            return names
        total = sum(i.file_size for i, _ in chosen)
        if total > max_bytes:
            raise AvdataError(f"{zpath}: would unpack to {total:,} bytes, more than the {max_bytes:,} allowed; "
                              "not the dataset's zip, or raise the limit")
        _check_ratio(zpath, chosen, total, max_ratio)
        todo = [(i, rel) for i, rel in chosen
                if not ((target / rel).is_file() and (target / rel).stat().st_size == i.file_size)]
        need = sum(i.file_size for i, _ in todo)
        free = shutil.disk_usage(target).free
        if need > free:
            raise AvdataError(f"{target}: unpacking {zpath.name} needs {need:,} bytes, {free:,} are free; "
                              "free some space or unpack elsewhere")
        for info, rel in todo:
            _unpack_member(zf, info, rel, target, root, zpath)
    atomic_write_text(marker, stamp)
    return names


def _check_ratio(zpath: Path, chosen: list[tuple[zipfile.ZipInfo, PurePosixPath]], total: int,
                 max_ratio: float) -> None:
    """AvdataError when a chosen member, or all of them against the zip's size, inflate more than
    `max_ratio` times (sizes under RATIO_MIN_BYTES pass)."""
    why = "a zip bomb, or not the dataset's zip: download it again from a trusted copy"
    for info, _ in chosen:
        if info.file_size > RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise AvdataError(f"{zpath}: member {info.filename!r} would inflate {ratio:,.0f}:1 ({info.file_size:,} "
                              f"bytes from {info.compress_size:,}), more than the {max_ratio:,.0f}:1 allowed; {why}")
    size = zpath.stat().st_size
    if total > RATIO_MIN_BYTES and total > max_ratio * max(size, 1):
        raise AvdataError(f"{zpath}: its {len(chosen):,} members would inflate {total / max(size, 1):,.0f}:1 "
                          f"({total:,} bytes from a {size:,}-byte zip), more than the {max_ratio:,.0f}:1 allowed; "
                          f"{why}")


def _unpack_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: PurePosixPath, target: Path, root: Path,
                   zpath: Path) -> None:
    dest = target / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(root):
        raise AvdataError(f"{zpath}: member {info.filename!r} resolves outside {target} (a link in the way?)")
    part = dest.with_name(dest.name + ".part")
    written = 0
    try:
        with zf.open(info) as src, open_new(part) as out:
            while chunk := src.read(_COPY_CHUNK):
                written += len(chunk)
                if written > info.file_size:  # zipfile stops at the declared size; this is a second guard
                    raise AvdataError(f"{zpath}: member {info.filename!r} inflates past its declared size")
                out.write(chunk)
        if written != info.file_size:
            raise AvdataError(f"{zpath}: member {info.filename!r} holds {written:,} of its {info.file_size:,} "
                              "bytes; the zip is cut off: download it again")
        os.replace(part, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        part.unlink(missing_ok=True)
        raise AvdataError(f"{zpath}: member {info.filename!r} is corrupt ({exc}); download the zip again") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
