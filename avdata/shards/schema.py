"""The manifest schema check: every way a parsed manifest.json breaks the schema, as JSON paths.

Kept apart from `avdata.shards.manifest` (the type, load and save) because it is long and has one job.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeGuard

from avdata.errors import AvdataError
from avdata.printable import printable

SCHEMA_VERSION = 1
MAX_SHOWN = 20  # problems listed in the error; the count says how many there are
REQUIRED_KEYS = ("schema_version", "dataset", "tool", "options", "classes", "features", "splits", "skipped")
STAT_KEYS = ("samples", "min", "median", "mean", "max")

#: Names of splits and shard files: plain names, no folders, no control characters, not hidden.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}$")
#: A shard file's name: `<split>-NNNNNN.tar`, its split being the one that lists it (`avdata.shards.tar.shard_name`),
#: so a manifest cannot make `pull` fetch over, or a reader count, a file that is not a shard of that split.
_SHARD_INDEX = re.compile(r"-[0-9]{1,12}\.tar")  # prepare writes six digits; a list of bare .tar files, any
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
#: Far above any real dataset; a larger count is a damaged or hostile manifest.
MAX_COUNT = 10**12
MAX_CLASSES = 100_000


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _count(value: Any, path: str, problems: list[str], limit: int = MAX_COUNT) -> None:
    if not _is_int(value):
        problems.append(f"{path}: must be an integer, not {_kind(value)} ({value!r:.40})")
    elif not 0 <= value <= limit:
        problems.append(f"{path}: {value} is out of range (0..{limit})")


def _text_ok(value: Any, path: str, problems: list[str], empty: bool = False) -> bool:
    if not isinstance(value, str):
        problems.append(f"{path}: must be a string, not {_kind(value)} ({value!r:.40})")
        return False
    if not value and not empty:
        problems.append(f"{path}: must not be empty")
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problems.append(f"{path}: {value!r:.60} holds a control character (NUL, newline, ...)")
        return False
    return True


def _object(value: Any, where: str, out: list[str], what: str = "") -> dict:
    """`value` when it is a JSON object; otherwise the problem is noted and there is nothing to check."""
    if isinstance(value, dict):
        return value
    out.append(f"{where}: must be an object{what}, not {_kind(value)}")
    return {}


def _key(name: str) -> str:
    return f".{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"[{json.dumps(name)}]"


def problems(manifest: Any) -> list[str]:
    """Every way `manifest` breaks the schema (types, ranges, names), each as ``$.json.path: what``.

    Every reader (verify, inspect, pull, the trainer) goes through this before touching a manifest, so a
    damaged or hostile one is reported as a list of problems, never as a traceback deep inside a reader.
    Consistency between fields (counts that add up, files that match) is verify's job."""
    out: list[str] = []
    if not isinstance(manifest, dict):
        return [f"$: the manifest must be a JSON object, not {_kind(manifest)}"]
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        out.append(f"$: lacks {', '.join(missing)}")
    if "schema_version" in manifest:
        version = manifest["schema_version"]
        if not _is_int(version):
            out.append(f"$.schema_version: must be an integer, not {_kind(version)} ({version!r:.40})")
        elif version < 1:
            out.append(f"$.schema_version: {version} is out of range (1..{SCHEMA_VERSION})")
    if "dataset" in manifest:
        _text_ok(manifest["dataset"], "$.dataset", out)
    for key in ("tool", "options"):
        if key in manifest and not isinstance(manifest[key], dict):
            out.append(f"$.{key}: must be an object, not {_kind(manifest[key])}")
    classes = manifest.get("classes", [])
    if not isinstance(classes, list):
        out.append(f"$.classes: must be a list of class names, not {_kind(classes)} ({classes!r:.40})")
        classes = []
    elif len(classes) > MAX_CLASSES:
        out.append(f"$.classes: {len(classes):,} classes is more than {MAX_CLASSES:,}")
        classes = []
    else:
        seen: set[str] = set()
        for i, name in enumerate(classes):
            if _text_ok(name, f"$.classes[{i}]", out):
                if name in seen:
                    out.append(f"$.classes[{i}]: {name!r} is listed twice")
                seen.add(name)
    for name, spec in _object(manifest.get("features", {}), "$.features", out).items():
        where = f"$.features{_key(name)}"
        _text_ok(name, where, out)
        if not isinstance(spec, dict):
            out.append(f"{where}: must be an object, not {_kind(spec)}")
        elif "shape" in spec and not isinstance(spec["shape"], list):
            out.append(f"{where}.shape: must be a list, not {_kind(spec['shape'])}")
    if "skipped" in manifest and not isinstance(manifest["skipped"], list):
        out.append(f"$.skipped: must be a list, not {_kind(manifest['skipped'])}")
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        out.append(f"$.splits: must be an object (split name -> entry), not {_kind(splits)}")
        splits = {}
    listed: dict[str, str] = {}  # shard file -> where it is first listed: a file may be listed once only
    for split, entry in splits.items():
        where = f"$.splits{_key(split)}"
        if _text_ok(split, where, out) and not _PLAIN_NAME.match(split):
            out.append(f"{where}: split name {split!r:.60} must be a plain name (letters, digits, _ - .)")
        if not isinstance(entry, dict):
            out.append(f"{where}: must be an object, not {_kind(entry)} ({entry!r:.40})")
            continue
        for key in ("num_samples", "class_counts", "shards"):
            if key not in entry:
                out.append(f"{where}: lacks {key!r}")
        if "num_samples" in entry:
            _count(entry["num_samples"], f"{where}.num_samples", out)
        counts = _object(entry.get("class_counts", {}), f"{where}.class_counts", out, " (class name -> count)")
        for cls, n in counts.items():
            _count(n, f"{where}.class_counts{_key(cls)}", out)
        stats = _object(entry.get("sample_stats", {}), f"{where}.sample_stats", out, " (name -> figures)")
        for name, st in stats.items():
            at = f"{where}.sample_stats{_key(name)}"
            if not isinstance(st, dict):
                out.append(f"{at}: must be an object, not {_kind(st)}")
                continue
            for k in STAT_KEYS:
                if k not in st:
                    out.append(f"{at}: lacks {k!r}")
                elif not isinstance(st[k], (int, float)) or isinstance(st[k], bool):
                    out.append(f"{at}.{k}: must be a number, not {_kind(st[k])}")
        shards = entry.get("shards", [])
        if not isinstance(shards, list):
            out.append(f"{where}.shards: must be a list, not {_kind(shards)}")
            continue
        for i, shard in enumerate(shards):
            at = f"{where}.shards[{i}]"
            if not isinstance(shard, dict):
                out.append(f"{at}: must be an object, not {_kind(shard)} ({shard!r:.40})")
                continue
            lacking = [k for k in ("file", "bytes", "sha256", "num_samples") if k not in shard]
            if lacking:
                out.append(f"{at}: lacks {', '.join(map(repr, lacking))}")
            if "file" in shard and _text_ok(shard["file"], f"{at}.file", out):
                _shard_file(shard["file"], split, f"{at}.file", listed, out)
            if "bytes" in shard:
                _count(shard["bytes"], f"{at}.bytes", out)
            if "num_samples" in shard:
                _count(shard["num_samples"], f"{at}.num_samples", out)
            if "sha256" in shard and not (isinstance(shard["sha256"], str) and _SHA256.match(shard["sha256"])):
                out.append(f"{at}.sha256: must be 64 hex digits, not {shard['sha256']!r:.80}")
    return out


def _shard_file(name: str, split: Any, at: str, listed: dict[str, str], out: list[str]) -> None:
    """A shard's file name: `<split>-NNNNNN.tar` of the split that lists it, and listed once in the whole
    manifest (a shard in two splits would let a trainer "test" on training data)."""
    if not _PLAIN_NAME.match(name):
        out.append(f"{at}: shard file name {name!r:.80} must be a plain name (no folders, not hidden)")
    elif not (isinstance(split, str) and name.startswith(split) and _SHARD_INDEX.fullmatch(name[len(split):])):
        out.append(f"{at}: shard file name {name!r:.80} must be {split}-NNNNNN.tar (the split that lists it, "
                   "a number, .tar)")
    if name in listed:
        out.append(f"{at}: {name!r:.80} is already listed at {listed[name]}; a shard file belongs to one split, once")
    else:
        listed[name] = at


def validate(manifest: Any, source: str = "manifest.json") -> None:
    """Raise AvdataError listing every schema problem of `manifest` (see `problems`)."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if _is_int(version) and version > SCHEMA_VERSION:
        raise AvdataError(
            f"{source}: manifest schema_version {version} is newer than this avdata understands"
            f" ({SCHEMA_VERSION}); upgrade avdata"
        )
    if not isinstance(manifest, dict) or not {"schema_version", "tool"} & manifest.keys():
        what = (f"its keys: {printable(', '.join(map(str, list(manifest)[:8])), 120)}" if isinstance(manifest, dict)
                else f"a JSON {type(manifest).__name__}, not an object")
        raise AvdataError(f"{source}: not an avdata manifest ({what}); this folder was not made by `avdata prepare` "
                          "(or `avdata push`): point at a shards folder, the one holding avdata's manifest.json")
    found = problems(manifest)
    if found:
        shown = found[:MAX_SHOWN]
        more = f"\n  ... and {len(found) - MAX_SHOWN} more" if len(found) > MAX_SHOWN else ""
        raise AvdataError(f"{source}: not a valid manifest ({len(found)} problem(s)); is it damaged, or "
                          f"made by another tool?\n  " + "\n  ".join(shown) + more)
