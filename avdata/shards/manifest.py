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

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avdata import __version__
from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError
from avdata.shards.schema import SCHEMA_VERSION, validate
from avdata.shards.frames import has_frames
from avdata.shards.member_caps import NPY_SLACK, VARIABLE_CAP
from avdata.shards.reader import read_capped

__all__ = ["MANIFEST_NAME", "SHUFFLED_ORDER", "MAX_MANIFEST_SIZE", "SCHEMA_VERSION", "Manifest", "SplitEntry",
           "ShardEntry", "summarize_stat", "data_kind", "event_bins"]

MANIFEST_NAME = "manifest.json"
#: A split entry's `order` when its samples were written in a seeded random order (`avdata prepare`).
SHUFFLED_ORDER = "shuffled"
#: The most a manifest may weigh (a real one is kilobytes; ten thousand shards are a few megabytes).
MAX_MANIFEST_SIZE = 64 << 20


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


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AvdataError(f"{source}: not valid JSON ({exc}); the file may be cut short, fetch it again") from exc
    except RecursionError as exc:
        raise AvdataError(f"{source}: nested too deeply to be a manifest") from exc


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _shards_folders_below(folder: Path, look_at: int = 64) -> list[Path]:
    """The subfolders of `folder` (of its first `look_at` entries) that hold a manifest.json: the folder a
    user meant when they named its parent (`--shards demo` for `demo/shards`)."""
    try:
        with os.scandir(folder) as entries:
            subs = [Path(e.path) for e in itertools.islice(entries, look_at) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(d for d in subs if (d / MANIFEST_NAME).is_file())[:3]


def _read_text(path: Path) -> tuple[str, Path]:
    """The text of `path` (a manifest file or a folder holding manifest.json), bounded, and the file read."""
    folder = path if path.is_dir() else None
    if folder is not None:
        path = folder / MANIFEST_NAME
    if not path.exists():
        below = _shards_folders_below(folder) if folder is not None else []
        if below:
            which = "holds one: pass that folder" if len(below) == 1 else "each hold one: pass one of them"
            raise AvdataError(f"{path}: no manifest.json here, but {' and '.join(map(str, below))} {which}")
        raise AvdataError(
            f"{path}: no manifest.json here; is this a shards folder made by `avdata prepare`"
            " (or an unfinished one: run `avdata merge` for --part outputs)?"
        )
    if path.suffix == ".tar":
        raise AvdataError(f"{path}: a shard file, not a shards folder or its manifest.json; pass its folder "
                          f"{path.parent}")
    raw = read_capped(path, MAX_MANIFEST_SIZE)
    if raw is None:
        raise AvdataError(f"{path}: larger than {MAX_MANIFEST_SIZE:,} bytes, far more than any manifest; "
                          "is this the right folder?")
    try:
        return raw.decode("utf-8"), path
    except UnicodeDecodeError as exc:
        raise AvdataError(f"{path}: not UTF-8 text ({exc}); is this a shards folder?") from exc


# --------------------------------------------------------------------------------------------- the type

def _rest(d: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Keys this version does not model, kept so that a manifest round-trips to the same bytes."""
    return {k: v for k, v in d.items() if k not in known}


@dataclass
class ShardEntry:
    """One shard file of a split, as the manifest lists it."""

    file: str
    bytes: int
    sha256: str
    num_samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("file", "bytes", "sha256", "num_samples")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShardEntry":
        return cls(d["file"], d["bytes"], d["sha256"], d["num_samples"], _rest(d, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256, "num_samples": self.num_samples,
                **self.extra}


@dataclass
class SplitEntry:
    """A split: its sample and class counts, its shards in order and, when measured, `sample_stats`."""

    num_samples: int
    class_counts: dict[str, int]
    shards: list[ShardEntry]
    sample_stats: dict[str, dict[str, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("num_samples", "class_counts", "shards", "sample_stats")

    @classmethod
    def of_shards(cls, shards: list[ShardEntry], class_counts: dict[str, int],
                  sample_stats: dict[str, dict[str, float]] | None = None) -> "SplitEntry":
        """A split made of `shards`: its sample count is theirs."""
        return cls(sum(s.num_samples for s in shards), dict(class_counts), list(shards), sample_stats)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SplitEntry":
        return cls(d["num_samples"], dict(d["class_counts"]), [ShardEntry.from_dict(s) for s in d["shards"]],
                   d.get("sample_stats"), _rest(d, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        out = {"num_samples": self.num_samples, "class_counts": dict(self.class_counts),
               "shards": [s.to_dict() for s in self.shards]}
        if self.sample_stats is not None:
            out["sample_stats"] = self.sample_stats
        return {**out, **self.extra}


@dataclass
class Manifest:
    """A checked manifest.json (see the module docstring; the schema is `avdata.shards.schema`).

    `from_dict` refuses what the schema check finds, so readers index fields without further checks;
    `save` checks before writing. `sources` (sha256 per source file) and `notes` (facts the recipe's plan
    adds, e.g. coverage) are written only when set; keys this version does not model stay in `extra`, so
    a manifest round-trips to the same bytes."""

    dataset: str
    classes: list[str]
    features: dict[str, dict[str, Any]]
    splits: dict[str, SplitEntry] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    tool: dict[str, Any] = field(default_factory=lambda: {"name": "avdata", "version": __version__})
    skipped: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, Any] | None = None
    notes: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("schema_version", "dataset", "tool", "options", "classes", "features", "splits", "skipped", "sources",
             "notes")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = MANIFEST_NAME) -> "Manifest":
        validate(d, source=source)
        return cls(dataset=d["dataset"], classes=list(d["classes"]), features=d["features"],
                   splits={name: SplitEntry.from_dict(e) for name, e in d["splits"].items()},
                   options=d["options"], tool=d["tool"], skipped=d["skipped"], sources=d.get("sources"),
                   notes=d.get("notes"), schema_version=d["schema_version"], extra=_rest(d, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        out = {"schema_version": self.schema_version, "dataset": self.dataset, "tool": self.tool,
               "options": self.options, "classes": list(self.classes), "features": self.features,
               "splits": {name: e.to_dict() for name, e in self.splits.items()}, "skipped": self.skipped}
        for key in ("sources", "notes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}

    def to_json(self) -> str:
        """Canonical text: sorted keys, 2-space indent, trailing newline (no timestamps, no paths)."""
        return _canonical(self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """`path`: a manifest file or a folder holding manifest.json; bounded, then checked."""
        text, file = _read_text(Path(path))
        return cls.parse(text, source=str(file))

    @classmethod
    def parse(cls, text: str, source: str = MANIFEST_NAME) -> "Manifest":
        return cls.from_dict(_parse_json(text, source), source=source)

    def check(self, source: str = MANIFEST_NAME) -> "Manifest":
        """This manifest, after the schema check a manifest.json read from disk gets (AvdataError names
        every problem)."""
        validate(self.to_dict(), source=source)
        return self

    def save(self, directory: str | Path, name: str = MANIFEST_NAME) -> Path:
        """Check, then write `directory/name` atomically."""
        path = Path(directory) / name
        atomic_write_text(path, self.check(source=str(directory)).to_json())
        return path

    def split(self, name: str) -> SplitEntry:
        if name not in self.splits:
            raise AvdataError(f"no split {name!r}; this folder has {', '.join(self.splits)}")
        return self.splits[name]

    def shard_entries(self, splits: list[str] | None = None) -> list[tuple[str, ShardEntry]]:
        """(split, shard) of the given splits (all when None), in manifest order."""
        names = list(self.splits) if splits is None else splits
        return [(name, s) for name in names for s in self.split(name).shards]


def data_kind(manifest: Manifest) -> str:
    """'static' (frames + spectrogram) or 'events' (event-count bins): the two shard contracts the
    trainer reads (docs/reference.md §3), told apart by the manifest's features."""
    feats = manifest.features
    if has_frames(feats) and "spec.npy" in feats:
        return "static"
    if "visual.npy" in feats and "audio.npy" in feats:
        return "events"
    raise AvdataError(f"shards of {manifest.dataset!r} have neither frames (frames.npy or frames.<i>.jpg) + "
                      f"spec.npy nor visual.npy + audio.npy fields (they have: {', '.join(feats) or 'none'})")


#: uint16 [2, 28, 28]: the bytes of one time bin of visual.npy, the larger of an event sample's arrays.
_BIN_BYTES = 2 * 28 * 28 * 2
#: More bins than this would not fit the most a shard member may hold, so no sample of them could be read.
MAX_EVENT_BINS = (VARIABLE_CAP - NPY_SLACK) // _BIN_BYTES


def event_bins(manifest: Manifest) -> int:
    """Time bins of event shards (the first dimension of visual.npy), 1 to MAX_EVENT_BINS: the trainer
    takes them as its time steps, and sizes its first allocations (the memory probe) by them, before any
    sample is read to contradict a manifest that claims millions."""
    shape = manifest.features["visual.npy"].get("shape", [])
    if not shape or type(shape[0]) is not int:
        raise AvdataError("the manifest does not say how many time bins visual.npy has")
    if not 1 <= shape[0] <= MAX_EVENT_BINS:
        raise AvdataError(f"the manifest says visual.npy has {shape[0]:,} time bins, not 1 to {MAX_EVENT_BINS:,} "
                          f"(more would not fit the {VARIABLE_CAP >> 20} MiB a shard member may hold); it is "
                          "damaged or was not made by `avdata prepare`")
    return shape[0]
