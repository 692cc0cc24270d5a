"""The one manifest schema (`manifest.json` in every shards folder).

A shards folder is self-describing: the manifest says what dataset and options made it, which shard
files each split has (bytes, sha256, sample count), the classes and per-split class counts, every
feature's dtype, shape and meaning, and every source clip that was skipped and why. It holds no
timestamps and no absolute paths, so the same input and options give the same bytes.

Optional per-split key `sample_stats`: {stat name: {"samples", "min", "median", "mean", "max"}}, the
distribution over the split's samples of a number the recipe measured on each (`ItemContext.stats`), e.g.
`crop_dropped_share` of mnistdvs-ntidigits with `--sensor crop`: the share of a recording's events that
fell outside the crop. Absent when the recipe measures nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from avdata import __version__
from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: The most a manifest may weigh (a real one is kilobytes; ten thousand shards are a few megabytes).
MAX_MANIFEST_SIZE = 64 << 20
MAX_SHOWN = 20  # problems listed in the error; the count says how many there are
REQUIRED_KEYS = ("schema_version", "dataset", "tool", "options", "classes", "features", "splits", "skipped")


def new_manifest(
    dataset: str,
    options: dict[str, Any],
    classes: list[str],
    features: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "tool": {"name": "avdata", "version": __version__},
        "options": dict(options),
        "classes": list(classes),
        "features": features,
        "splits": {},
        "skipped": [],
    }


def split_entry(shards: list[dict[str, Any]], class_counts: dict[str, int]) -> dict[str, Any]:
    return {
        "num_samples": sum(int(s["num_samples"]) for s in shards),
        "class_counts": dict(class_counts),
        "shards": list(shards),
    }


STAT_KEYS = ("samples", "min", "median", "mean", "max")


def summarize_stat(values: list[float]) -> dict[str, float | int]:
    """The `sample_stats` entry of one number over a split's samples (rounded to 6 decimals so the
    manifest reads well; the per-sample values are in each sample's json)."""
    if not values:
        raise ValueError("no values to summarise")
    v = sorted(float(x) for x in values)
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"samples": n, "min": round(v[0], 6), "median": round(median, 6),
            "mean": round(sum(v) / n, 6), "max": round(v[-1], 6)}


def dumps(manifest: dict[str, Any]) -> str:
    """Canonical text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save_manifest(directory: str | Path, manifest: dict[str, Any], name: str = MANIFEST_NAME) -> Path:
    validate(manifest, source=str(directory))
    path = Path(directory) / name
    atomic_write_text(path, dumps(manifest))
    return path


def parse_manifest(text: str, source: str = "manifest.json") -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AvdataError(f"{source}: not valid JSON ({exc}); the file may be cut short, fetch it again") from exc
    except RecursionError as exc:
        raise AvdataError(f"{source}: nested too deeply to be a manifest") from exc
    validate(manifest, source=source)
    return manifest


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Load `path` (a manifest file or a folder holding manifest.json) and check its schema."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise AvdataError(
            f"{path}: no manifest.json here; is this a shards folder made by `avdata prepare`"
            " (or an unfinished one: run `avdata merge` for --part outputs)?"
        )
    with open(path, "rb") as f:
        raw = f.read(MAX_MANIFEST_SIZE + 1)
    if len(raw) > MAX_MANIFEST_SIZE:
        raise AvdataError(f"{path}: larger than {MAX_MANIFEST_SIZE:,} bytes, far more than any manifest; "
                          "is this the right folder?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AvdataError(f"{path}: not UTF-8 text ({exc}); is this a shards folder?") from exc
    return parse_manifest(text, source=str(path))


#: Names of splits and shard files: plain names, no folders, no control characters, not hidden.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
#: Far above any real dataset; a larger count is a damaged or hostile manifest.
MAX_COUNT = 10**12
MAX_CLASSES = 100_000


def _is_int(value: Any) -> bool:
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
    features = manifest.get("features", {})
    if not isinstance(features, dict):
        out.append(f"$.features: must be an object, not {_kind(features)}")
    else:
        for name, spec in features.items():
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
        counts = entry.get("class_counts", {})
        if not isinstance(counts, dict):
            out.append(f"{where}.class_counts: must be an object (class name -> count), not {_kind(counts)}")
        else:
            for cls, n in counts.items():
                _count(n, f"{where}.class_counts{_key(cls)}", out)
        stats = entry.get("sample_stats", {})
        if not isinstance(stats, dict):
            out.append(f"{where}.sample_stats: must be an object (name -> figures), not {_kind(stats)}")
        else:
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
            if "file" in shard and _text_ok(shard["file"], f"{at}.file", out) and not _PLAIN_NAME.match(
                    shard["file"]):
                out.append(f"{at}.file: shard file name {shard['file']!r:.80} must be a plain name "
                           "(no folders, not hidden)")
            if "bytes" in shard:
                _count(shard["bytes"], f"{at}.bytes", out)
            if "num_samples" in shard:
                _count(shard["num_samples"], f"{at}.num_samples", out)
            if "sha256" in shard and not (isinstance(shard["sha256"], str) and _SHA256.match(shard["sha256"])):
                out.append(f"{at}.sha256: must be 64 hex digits, not {shard['sha256']!r:.80}")
    return out


def validate(manifest: Any, source: str = "manifest.json") -> None:
    """Raise AvdataError listing every schema problem of `manifest` (see `problems`)."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if _is_int(version) and version > SCHEMA_VERSION:
        raise AvdataError(
            f"{source}: manifest schema_version {version} is newer than this avdata understands"
            f" ({SCHEMA_VERSION}); upgrade avdata"
        )
    found = problems(manifest)
    if found:
        shown = found[:MAX_SHOWN]
        more = f"\n  ... and {len(found) - MAX_SHOWN} more" if len(found) > MAX_SHOWN else ""
        raise AvdataError(f"{source}: not a valid manifest ({len(found)} problem(s)); is it damaged, or "
                          f"made by another tool?\n  " + "\n  ".join(shown) + more)


def shard_files(manifest: dict[str, Any], splits: list[str] | None = None) -> list[dict[str, Any]]:
    """Shard entries of the given splits (all when None), each with its split added."""
    names = list(manifest["splits"]) if splits is None else splits
    out = []
    for name in names:
        if name not in manifest["splits"]:
            raise AvdataError(f"no split {name!r}; this folder has {', '.join(manifest['splits'])}")
        out.extend({**s, "split": name} for s in manifest["splits"][name]["shards"])
    return out
