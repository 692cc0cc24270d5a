"""Which files of a folder the project wrote: every command that writes into a folder the user names
(`prepare --out`, `merge`, `pull --to`) creates, replaces or deletes those names only, never a user's file.

A name in a folder is ours when the folder's own records say so:

    .avdata/plan.json      (prepare, merge) each shard of the plan, and manifest.json and README.md
    .avdata/owned.json     (pull) every name a pull claimed before it wrote it
    manifest.json          when it is a valid avdata manifest: each shard it lists, itself and README.md
    <name>.tmp, <name>.part  the temporary names of a name a command writes

Anything else (a user's README.md, notes.txt, a.tar, x.tmp) is left alone; a command that would write
one of its names stops first and names it (`refuse_foreign`), with --overwrite too.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError
from avdata.shards.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, Manifest
from avdata.shards.reader import read_capped

__all__ = ["STATE_DIR", "PLAN_NAME", "CARD_NAME", "owned_names", "foreign_names", "refuse_foreign", "claim",
           "our_manifest", "other_preparation", "read_json_record", "left_as_found"]

STATE_DIR = ".avdata"
PLAN_NAME = "plan.json"
OWNED_NAME = "owned.json"
CARD_NAME = "README.md"
TEMP_SUFFIXES = (".tmp", ".part")


def read_json_record(path: Path) -> Any:
    """A JSON record of ours, or None when it is absent, unreadable or larger than a manifest may be (a
    damaged record owns nothing; a folder received from someone else may hold any `.avdata/` files)."""
    try:
        data = read_capped(path, MAX_MANIFEST_SIZE)
        return None if data is None else json.loads(data)
    except (OSError, ValueError, RecursionError, AvdataError):
        return None


def our_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest.json when it is a valid avdata manifest (else None: not ours)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        return None
    try:
        manifest = Manifest.load(path)
    except AvdataError:
        return None
    return manifest if manifest.tool.get("name") == "avdata" else None


def other_preparation(held: Manifest, new: Manifest) -> str | None:
    """How the dataset `held` (already at a destination) differs from `new` in what it is, not in how its
    bytes came out: another dataset, other options or other source files. None: the same preparation,
    which a command may replace without --overwrite."""
    if held.dataset != new.dataset:
        return f"the dataset {held.dataset!r}, not {new.dataset!r}"
    changed = sorted(k for k in set(held.options) | set(new.options) if held.options.get(k) != new.options.get(k))
    if changed:
        verb = "differs" if len(changed) == 1 else "differ"
        return f"the dataset {held.dataset!r} prepared with other options ({', '.join(changed[:5])} {verb})"
    if held.sources != new.sources:
        return f"the dataset {held.dataset!r} prepared from other source files"
    return None


def _plan_names(folder: Path) -> set[str]:
    plan = read_json_record(Path(folder) / STATE_DIR / PLAN_NAME)
    shards = plan.get("shards") if isinstance(plan, dict) else None
    if not isinstance(shards, list):
        return set()
    names = {s["file"] for s in shards if isinstance(s, dict) and isinstance(s.get("file"), str)}
    return names | {MANIFEST_NAME, CARD_NAME}


def _claimed_names(folder: Path) -> set[str]:
    record = read_json_record(Path(folder) / STATE_DIR / OWNED_NAME)
    names = record.get("names") if isinstance(record, dict) else None
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def owned_names(folder: Path) -> set[str]:
    """Every name in `folder` the project wrote or claimed (see the module docstring), without temp names."""
    folder = Path(folder)
    names = _plan_names(folder) | _claimed_names(folder)
    manifest = our_manifest(folder)
    if manifest is not None:
        names |= {e.file for _split, e in manifest.shard_entries()} | {MANIFEST_NAME, CARD_NAME}
    return {n for n in names if n and "/" not in n and "\\" not in n and not n.startswith(".")}


def foreign_names(folder: Path, names: Iterable[str]) -> list[str]:
    """Those of `names` present in `folder` that the project did not write. (The temp names of a name a
    command writes, `<name>.tmp` and `<name>.part`, are the command's own: a file planted there is removed,
    never followed, by `avdata.atomic.open_new`.)"""
    folder = Path(folder)
    owned = owned_names(folder)
    return [n for n in dict.fromkeys(names) if n not in owned and ((folder / n).exists() or (folder / n).is_symlink())]


def refuse_foreign(folder: Path, names: Iterable[str], what: str) -> None:
    """Stop before `what` (e.g. "prepare") writes any of `names` in `folder` where a file the project did
    not write has that name: it is never replaced, with --overwrite or without."""
    found = foreign_names(folder, names)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise AvdataError(f"{folder} holds {shown}, which avdata did not write (no avdata record of it in this "
                          f"folder); {what} never replaces such files, with --overwrite or without. Choose an "
                          f"empty or new folder, or move those files away")


def claim(folder: Path, names: Iterable[str]) -> None:
    """Record `names` as the project's in `folder`/.avdata/owned.json before writing them, so that a rerun
    (e.g. of a pull cut short before its manifest) knows they are ours."""
    folder = Path(folder)
    have = _claimed_names(folder)
    new = have | set(names)
    if new != have:
        atomic_write_text(folder / STATE_DIR / OWNED_NAME, json.dumps({"names": sorted(new)}, indent=1) + "\n")


@contextlib.contextmanager
def left_as_found(*folders: Path) -> Iterator[None]:
    """Of `folders` (outermost first), those that do not exist yet are removed when the block ends, if it left
    them empty: a run refused or stopped before it wrote anything (or one that needed the state folder only
    for its lock) leaves the place as it found it, and anything written stays."""
    made = [Path(f) for f in folders if not Path(f).exists()]
    try:
        yield
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
