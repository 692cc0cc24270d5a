"""Shards given one by one (`--shards a.tar,b.tar` or a glob) instead of as a folder.

The split of a shard is read from its name (`<split>-NNNNNN.tar`). When `manifest.json` lies beside
them (`avdata.shards.location.open_shards` looks), its entries for those files are used; otherwise the
class names must be given and a `Manifest` is made by
reading each file (sample and class counts, the first sample's field shapes; sha256 via
`avdata.hashing`), its members capped as fields the manifest does not describe are
(`avdata.shards.member_caps`), a FIFO or device in its place refused (`open_regular`).
"""

from __future__ import annotations

import glob as globlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from avdata.errors import AvdataError
from avdata.fetch.urls import is_url
from avdata.hashing import sha256_file
from avdata.printable import printable
from avdata.shards.manifest import Manifest, ShardEntry, SplitEntry
from avdata.shards.frames import JPEG_FRAMES, jpeg_frame_names
from avdata.shards.jpeg import jpeg_size
from avdata.shards.member_caps import MemberCaps
from avdata.shards.npy import decode_npy_view
from avdata.shards.reader import iter_shard

SHARD_NAME_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-\d+\.tar$")


def tar_list(spec: str | Sequence[str | Path]) -> list[str] | None:
    """The tar files named by `spec` (comma list, glob, or sequence), or None when spec is a folder/URL."""
    if isinstance(spec, (list, tuple)):
        items = [str(s) for s in spec]
    else:
        spec = str(spec)
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        globbed = lambda p: not is_url(p) and any(ch in p for ch in "*?[")  # noqa: E731
        if not any(p.endswith(".tar") or globbed(p) for p in parts):
            return None
        items = []
        for p in parts:
            if globbed(p):
                found = sorted(globlib.glob(p))
                if not found:
                    raise AvdataError(f"{p}: no shard files match")
                items.extend(found)
            else:
                items.append(p)
    bad = [i for i in items if not i.endswith(".tar")]
    if bad:
        raise AvdataError(f"not .tar files: {', '.join(bad)}")
    return items


def split_of(name: str) -> str:
    m = SHARD_NAME_RE.match(name)
    if not m:
        raise AvdataError(f"{name}: shard names must look like <split>-NNNNNN.tar (train-000000.tar) "
                          "so that the split is known")
    return m.group("split")


def scan_shard(path: str) -> tuple[ShardEntry, dict[str, int], dict[str, list[int]]]:
    """(manifest shard entry, class index counts, {field: shape of the first sample}) of a local tar."""
    counts: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    n = 0
    for key, fields in iter_shard(path, caps=MemberCaps()):  # no manifest yet: the caps of unknown fields
        n += 1
        try:
            if "cls" in fields:
                c = fields["cls"].decode().strip()
                counts[c] = counts.get(c, 0) + 1
            if n == 1:
                jpegs = jpeg_frame_names(fields)
                if jpegs:  # K JPEG members are one feature, [K, H, W, 3]
                    shapes[JPEG_FRAMES] = [len(jpegs), *jpeg_size(fields[jpegs[0]])]
                for fld, data in fields.items():
                    if fld.endswith(".npy"):
                        shapes[fld] = list(decode_npy_view(data).shape)
                    elif fld != "cls" and fld not in jpegs:
                        shapes.setdefault(fld, [])
        except ValueError as exc:  # FieldError, or numpy's or the text decoder's own for the same bytes
            raise AvdataError(f"{path}: sample {printable(key)!r}: bad field ({printable(exc)}); the shard is "
                              "damaged or was made by another tool") from exc
    entry = ShardEntry(Path(path).name, Path(path).stat().st_size, sha256_file(path), n)
    return entry, counts, shapes


def cut_to_files(manifest: Manifest, files: list[str], classes: Sequence[str] | None
                 ) -> tuple[Manifest, dict[str, str]]:
    """The manifest beside the files cut to them (a split given in part keeps no class counts), and
    each file's address."""
    by_file = {s.file: (split, s) for split, e in manifest.splits.items() for s in e.shards}
    chosen: dict[str, list] = {}
    addresses: dict[str, str] = {}
    for f in files:
        name = f.rsplit("/", 1)[-1]
        if name not in by_file:
            raise AvdataError(f"{f}: not listed in the manifest.json beside it")
        split, s = by_file[name]
        chosen.setdefault(split, []).append(s)
        addresses[name] = f
    if classes is not None and list(classes) != manifest.classes:
        raise AvdataError(f"the classes given ({', '.join(classes)}) differ from the manifest's "
                          f"({', '.join(manifest.classes)})")
    splits = {}
    for split, shards in chosen.items():
        whole = manifest.splits[split]
        counts = whole.class_counts if shards == whole.shards else {}
        splits[split] = SplitEntry(sum(s.num_samples for s in shards), dict(counts), shards)
    return replace(manifest, splits=splits), addresses


def manifest_of_files(files: list[str], classes: Sequence[str] | None) -> tuple[Manifest, dict[str, str]]:
    """A manifest made by reading local files with no manifest.json beside them, and each file's address."""
    if classes is None:
        raise AvdataError(f"no manifest.json beside {files[0]}: give the class names (--classes a,b,c) "
                          "or point --shards at the shards folder")
    if any(is_url(f) for f in files):
        raise AvdataError("shard URLs without a manifest.json beside them cannot be sized; serve the manifest too")
    shards: dict[str, list[ShardEntry]] = {}
    features: dict[str, Any] = {}
    class_counts: dict[str, dict[str, int]] = {}
    addresses: dict[str, str] = {}
    for f in files:
        if not Path(f).exists():
            raise AvdataError(f"{f}: no such file")
        split = split_of(Path(f).name)
        entry, counts, shapes = scan_shard(f)
        shards.setdefault(split, []).append(entry)
        addresses[entry.file] = f
        totals = class_counts.setdefault(split, {})
        for c, k in counts.items():
            name = classes[int(c)] if c.isdigit() and int(c) < len(classes) else c
            totals[name] = totals.get(name, 0) + k
        for fld, shape in shapes.items():
            features.setdefault(fld, {"shape": shape})
    for frames in ("frames.npy", JPEG_FRAMES):  # frame counts vary across clips: the first one's is no rule
        if frames in features:
            features[frames]["shape"] = ["K", *features[frames]["shape"][1:]]
    manifest = Manifest(dataset="custom", classes=list(classes), features=features, splits={
        split: SplitEntry.of_shards(entries, class_counts.get(split, {})) for split, entries in shards.items()})
    return manifest.check(source=f"{len(files)} shard file(s)"), addresses
