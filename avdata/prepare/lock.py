"""The output folder's lock: one `avdata prepare` writes into an --out at a time, except `--part i/N` runs,
which share it (each writes only its own shards, and removes only its own shards' temp files).

    .avdata/prepare.lock          a whole run: excludes every other run
    .avdata/part-I-of-N.lock      part I of N: excludes a whole run, the same part, and parts of
                                        another N (their shards overlap)

A lock file holds the holder's pid and host. A lock file with no live holder (a killed run's; on this
host, where its pid can be asked about) is taken over. A lock file is a plain file rather than an OS
lock (flock) because the --part runs of an array job run on several hosts sharing one file system, on
which OS locks are often not available.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from avdata.errors import AvdataError
from avdata.owned import STATE_DIR, read_json_record

WHOLE = "prepare.lock"


def lock_dir(out: Path) -> Path:
    return Path(out) / STATE_DIR


def _name(part: tuple[int, int] | None) -> str:
    return WHOLE if part is None else f"part-{part[0]}-of-{part[1]}.lock"


def _alive(info: Any) -> bool:
    """Whether the lock's holder may still run: a pid on this host that exists; on another host, unknowable,
    so assumed alive."""
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        return False  # damaged or half-written by a killed run
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _conflicts(mine: tuple[int, int] | None, theirs: Any) -> bool:
    if mine is None or not (isinstance(theirs, list) and len(theirs) == 2):
        return True
    return theirs[1] != mine[1] or theirs[0] == mine[0]


def _held(path: Path, info: Any) -> AvdataError:
    who = f"pid {info.get('pid')} on {info.get('host')}" if isinstance(info, dict) else "another run"
    return AvdataError(f"another `avdata prepare` ({who}) is writing into {path.parents[1]}; it holds the lock "
                       f"{path}. Wait for it to end, or use another --out; if no such run is alive, delete {path}")


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create the lock file whole or not at all: written under a temp name, then hard-linked to its name
    (a link fails where the name exists, on network file systems too), so no reader sees it half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def output_lock(out: Path, part: tuple[int, int] | None) -> Iterator[Path]:
    """Hold the lock of `out` for a whole run (`part` None) or one part; AvdataError naming the lock file
    and its holder's pid when another live run holds a conflicting one."""
    folder = lock_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / _name(part)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "part": list(part) if part else None}
    if not _create(mine, record):
        info = read_json_record(mine)
        if _alive(info):
            raise _held(mine, info)
        mine.unlink(missing_ok=True)  # a dead run's lock: take it over
        if not _create(mine, record):
            raise _held(mine, read_json_record(mine))
    try:
        for other in sorted(folder.glob("*.lock")):
            if other == mine:
                continue
            info = read_json_record(other)
            if not _alive(info):
                other.unlink(missing_ok=True)
            elif _conflicts(part, info.get("part") if other.name != WHOLE else None):
                raise _held(other, info)
        yield mine
    finally:
        mine.unlink(missing_ok=True)
