"""The output folder's lock: one `avdata prepare` writes into an --out at a time, except `--part i/N` runs,
which share it (each writes only its own shards, and removes only its own shards' temp files); `avdata
pull` takes the whole lock of its --to (two pulls into one folder renamed each other's `.part` files);
`avdata push` takes a reader's lock of its folder (`reading_lock`), which excludes those writers only;
`avdata merge`, `avdata download` and `scmrl-train` take the whole lock of their folder (two runs there would
remove or replace each other's files; two downloads appended to the same `.part` files).

    .avdata/prepare.lock          a whole run: excludes every other run
    .avdata/part-I-of-N.lock      part I of N: excludes a whole run, the same part, and parts of
                                        another N (their shards overlap)
    .avdata/read-HOST-PID-*.lock  a reading run (push): excludes every writing run

A lock file holds the holder's pid and host, and the holder touches it every minute. A lock file with no
live holder is taken over: on this host, when its pid is gone; from another host (whose pids cannot be
asked about, e.g. an array task resubmitted on another node after its node was lost), when it has not
been touched for STALE_S seconds. A lock file is a plain file rather than an OS
lock (flock) because the --part runs of an array job run on several hosts sharing one file system, on
which OS locks are often not available.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from avdata.atomic import open_new
from avdata.errors import AvdataError
from avdata.owned import STATE_DIR, left_as_found, read_json_record

WHOLE = "prepare.lock"
#: the commands that take a folder's whole lock, named in the message another run gets
COMMANDS = ("avdata prepare", "avdata pull", "avdata merge", "avdata download", "scmrl-train")
#: `reading_lock`'s files: `read-<host>-<pid>-<random>.lock`, one per reading run; they exclude writers, not each other
READER_PREFIX = "read-"
HEARTBEAT_S = 60.0
#: Another host's lock untouched this long belongs to a run that is gone (ten missed heartbeats).
STALE_S = 600.0


def lock_dir(out: Path) -> Path:
    return Path(out) / STATE_DIR


def _name(part: tuple[int, int] | None) -> str:
    return WHOLE if part is None else f"part-{part[0]}-of-{part[1]}.lock"


def _alive(path: Path, info: Any, now: Callable[[], float] = time.time) -> bool:
    """Whether the holder of the lock file `path` may still run (see the module docstring)."""
    pid = info.get("pid") if isinstance(info, dict) else None
    if type(pid) is not int or not 0 < pid < 1 << 31:  # os.kill: 0 and -1 ask about groups, 2**64 overflows
        return False  # damaged: no run of ours writes one so
    if info.get("host") != socket.gethostname():
        try:
            return now() - path.stat().st_mtime < STALE_S
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
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
    later = (f" (a lock from another host is taken over once untouched for {STALE_S / 60:.0f} minutes)"
             if isinstance(info, dict) and info.get("host") != socket.gethostname() else "")
    command = info.get("command") if isinstance(info, dict) else None
    writer = f"`{command}`" if command in COMMANDS else "`avdata prepare` or `avdata pull`"
    doing = ("an `avdata push` ({who}) is uploading from" if _is_reader(path)
             else f"another {writer} ({{who}}) is writing into").format(who=who)
    return AvdataError(f"{doing} {path.parents[1]}; it holds the lock {path}. Wait for it to end, or write into "
                       f"another folder; if no such run is alive, delete {path}{later}")


def _is_reader(path: Path) -> bool:
    return path.name.startswith(READER_PREFIX)


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create the lock file whole or not at all: written under a temp name, then hard-linked to its name
    (a link fails where the name exists, on network file systems too), so no reader sees it half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open_new(tmp, "w") as f:  # never through a link planted under that name
        f.write(json.dumps(record))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _remove_if_dead(path: Path) -> bool:
    """Remove the lock file `path` if its holder is gone; whether it is gone now. One run at a time decides,
    holding `<lock>.takeover`, and reads the lock again under it: two runs that both saw a dead holder would
    otherwise each remove the lock, the second removing the one the first had just made, and both go on as
    its holder (or a run would remove another part's lock made since it looked)."""
    claim = path.with_name(path.name + ".takeover")
    record = {"pid": os.getpid(), "host": socket.gethostname()}
    if not _create(claim, record):
        if _alive(claim, read_json_record(claim)):
            return False  # another run is deciding: its lock, if it takes one, is then live
        claim.unlink(missing_ok=True)  # a run that died while it decided
        if not _create(claim, record):
            return False
    try:
        if path.exists() and _alive(path, read_json_record(path)):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        claim.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(out: Path, part: tuple[int, int] | None, command: str = "avdata prepare") -> Iterator[Path]:
    """Hold the lock of `out` for a whole run (`part` None) or one part; AvdataError naming the lock file,
    the command holding it and its pid when another live run holds a conflicting one."""
    folder = lock_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / _name(part)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "part": list(part) if part else None,
              "command": command}
    if not _create(mine, record):
        info = read_json_record(mine)
        if _alive(mine, info):
            raise _held(mine, info)
        if not (_remove_if_dead(mine) and _create(mine, record)):  # a dead run's lock: take it over
            raise _held(mine, read_json_record(mine))
    try:
        for other in sorted(folder.glob("*.lock")):
            if other == mine:
                continue
            info = read_json_record(other)
            if not _alive(other, info) and _remove_if_dead(other):
                continue
            info = read_json_record(other)  # live, or replaced by a live one since
            theirs = info.get("part") if isinstance(info, dict) and other.name != WHOLE else None
            if other.exists() and _conflicts(part, theirs):
                raise _held(other, info)
        with _heartbeat(mine):
            yield mine
    finally:
        mine.unlink(missing_ok=True)


@contextlib.contextmanager
def reading_lock(folder: Path) -> Iterator[Path | None]:
    """Hold a reader's lock of `folder` while a run reads it whole (`avdata push`): no prepare or pull may
    write into it meanwhile (a shard or the manifest replaced between push's check and its upload would be
    uploaded under the other's sha256), while other readers may. AvdataError naming the writer's lock when
    one holds the folder. Yields None, taking no lock, where the folder cannot be written (a read-only
    mount: no run of this user writes into it either)."""
    state = lock_dir(Path(folder))
    mine = state / f"{READER_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.lock"
    with left_as_found(state):
        try:
            state.mkdir(exist_ok=True)
            _create(mine, {"pid": os.getpid(), "host": socket.gethostname(), "reader": True})
        except OSError as exc:
            if not isinstance(exc, PermissionError) and exc.errno != errno.EROFS:
                raise
            yield None
            return
        try:
            for other in sorted(state.glob("*.lock")):
                if other == mine or _is_reader(other):
                    continue
                if not _alive(other, read_json_record(other)) and _remove_if_dead(other):
                    continue
                if other.exists():
                    raise _held(other, read_json_record(other))
            with _heartbeat(mine):
                yield mine
        finally:
            mine.unlink(missing_ok=True)


@contextlib.contextmanager
def _heartbeat(path: Path) -> Iterator[None]:
    """Touch `path` every HEARTBEAT_S seconds while the run lasts, so other hosts see it is alive."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="avdata-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
