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
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_write_text
from .errors import AvdataError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
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
    return parse_manifest(path.read_text(encoding="utf-8"), source=str(path))


def validate(manifest: Any, source: str = "manifest.json") -> None:
    if not isinstance(manifest, dict):
        raise AvdataError(f"{source}: manifest must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise AvdataError(f"{source}: manifest lacks {', '.join(missing)}")
    version = manifest["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise AvdataError(
            f"{source}: manifest schema_version {version!r} is newer than this avdata understands"
            f" ({SCHEMA_VERSION}); upgrade avdata"
        )
    for split, entry in manifest["splits"].items():
        for key in ("num_samples", "class_counts", "shards"):
            if key not in entry:
                raise AvdataError(f"{source}: split {split!r} lacks {key!r}")
        for name, st in entry.get("sample_stats", {}).items():
            if not isinstance(st, dict) or any(k not in st for k in STAT_KEYS):
                raise AvdataError(f"{source}: split {split!r} sample_stats {name!r} lacks one of {', '.join(STAT_KEYS)}")
        for shard in entry["shards"]:
            for key in ("file", "bytes", "sha256", "num_samples"):
                if key not in shard:
                    raise AvdataError(f"{source}: a shard of split {split!r} lacks {key!r}")
            if "/" in shard["file"] or shard["file"].startswith("."):
                raise AvdataError(f"{source}: shard file name {shard['file']!r} must be a plain name")


def shard_files(manifest: dict[str, Any], splits: list[str] | None = None) -> list[dict[str, Any]]:
    """Shard entries of the given splits (all when None), each with its split added."""
    names = list(manifest["splits"]) if splits is None else splits
    out = []
    for name in names:
        if name not in manifest["splits"]:
            raise AvdataError(f"no split {name!r}; this folder has {', '.join(manifest['splits'])}")
        out.extend({**s, "split": name} for s in manifest["splits"][name]["shards"])
    return out
