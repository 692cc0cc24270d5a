"""Joining `--part i/N` outputs into one shards folder with one manifest.

Each part writes the same plan record and a sidecar per shard it made (`avdata.prepare.state`). The
manifest is assembled from those once every shard of the plan is present and matches its sidecar, so a
single run and N parts give byte-identical manifests.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from avdata.atomic import atomic_open, atomic_write_text
from avdata.errors import AvdataError
from avdata.hashing import CHUNK, sha256_file
from avdata.owned import left_as_found, owned_names, read_json_record, refuse_foreign
from avdata.folder_lock import output_lock
from avdata.prepare.state import (load_plan, missing_shards, plan_names, plan_path, read_sidecar, sidecar_dir,
                                  sidecar_path, state_dir, write_sidecar)
from avdata.shards.manifest import MANIFEST_NAME, SHUFFLED_ORDER, Manifest, ShardEntry, SplitEntry, summarize_stat

log = logging.getLogger("avdata.prepare.merge")


def assemble(out: Path, command: str | None = None, check_hashes: bool = True) -> Manifest:
    """Write manifest.json and the dataset card from the plan and the shard sidecars."""
    out = Path(out)
    record = load_plan(out)
    missing = missing_shards(out, record)
    if missing:
        raise AvdataError(
            f"{out}: {len(missing)} shard(s) not made yet, e.g. {missing[0]}; run the remaining "
            "`avdata prepare ... --part i/N` jobs (or rerun without --part) first"
        )
    skipped = list(record["plan_skipped"])
    sources: dict[str, str] = {}
    by_split: dict[str, list[ShardEntry]] = {s: [] for s in record["splits"]}
    counts: dict[str, dict[str, int]] = {s: {c: 0 for c in record["classes"]} for s in record["splits"]}
    stats: dict[str, dict[str, list[float]]] = {s: {} for s in record["splits"]}
    for shard in record["shards"]:
        side = read_sidecar(out, shard["file"])
        info = side["shard"]
        if side.get("keys") != shard["keys"] or info.get("file") != shard["file"]:
            raise AvdataError(f"{out / shard['file']}: made from another plan; rerun prepare for it")
        if not set(side["class_counts"]) <= set(record["classes"]):
            raise AvdataError(f"{sidecar_path(out, shard['file'])}: counts classes the plan does not have; delete "
                              f"it and {shard['file']}, and rerun prepare for it")
        tar = out / shard["file"]
        if tar.stat().st_size != info["bytes"] or (check_hashes and sha256_file(tar) != info["sha256"]):
            raise AvdataError(f"{tar}: does not match its record (changed or cut short); delete it and rerun prepare")
        by_split[shard["split"]].append(ShardEntry.from_dict(info))
        for c, n in side["class_counts"].items():
            counts[shard["split"]][c] += n
        skipped.extend(side["skipped"])
        sources.update(side["sources"])
        for name, values in side.get("stats", {}).items():
            stats[shard["split"]].setdefault(name, []).extend(values)
    splits = {split: SplitEntry.of_shards(by_split[split], counts[split], {
        name: summarize_stat(v) for name, v in sorted(stats[split].items())} or None) for split in record["splits"]}
    for entry in splits.values():
        entry.extra["order"] = SHUFFLED_ORDER  # seeded random order: engine.shuffled_split
    manifest = Manifest(dataset=record["dataset"], classes=list(record["classes"]), features=record["features"],
                        splits=splits, options=record["options"],
                        tool={"name": "avdata", "version": record["tool_version"]},
                        skipped=sorted(skipped, key=lambda s: (s.get("split", ""), s["key"])),
                        sources={"sha256": dict(sorted(sources.items()))}, notes=record.get("notes") or None)
    manifest.save(out)
    from avdata.shards.card import render_card

    atomic_write_text(out / "README.md", render_card(manifest, record["card"], command))
    log.info("wrote %s and README.md", out / "manifest.json")
    return manifest


def merge(out: Path, parts: list[Path], command: str | None = None) -> Manifest:
    """Copy the shards and sidecars of part folders made elsewhere into `out`, then assemble; holds the
    lock of `out` (`avdata.folder_lock`) throughout, as `assemble_locked` does.

    Only the plan's shards are copied, and only into a folder that is empty of their names or holds the
    same plan: another preparation there (with another plan, or none: a folder pulled there), or a file the
    project did not write under one of the names (a user's README.md), is refused. A shard already in
    `out` with the part's sidecar beside it (a rerun after a stop) is neither copied nor hashed again: a
    shard reaches its name only whole and checked, and its sidecar only after it."""
    out = Path(out)
    plan_text = None
    for part in parts:
        part = Path(part)
        if not plan_path(part).exists():
            raise AvdataError(f"{part}: no .avdata/plan.json; not an `avdata prepare --part` output")
        text = plan_path(part).read_text()
        if plan_text is None:
            plan_text = text
        elif load_plan(part)["fingerprint"] != load_plan(Path(parts[0]))["fingerprint"]:
            raise AvdataError(f"{part}: prepared with other input or options than {parts[0]}")
    if plan_text is None:
        raise AvdataError("merge needs at least one part folder")
    record = load_plan(Path(parts[0]))
    out.mkdir(parents=True, exist_ok=True)
    # refused before the plan was written: the lock's folder goes, the folder is as found
    with left_as_found(state_dir(out)), output_lock(out, None, command="avdata merge"):
        _adopt_plan(out, record, plan_text)
        sidecar_dir(out).mkdir(parents=True, exist_ok=True)
        copied: set[str] = set()
        for part in parts:
            part = Path(part)
            if part.resolve() == out.resolve():
                continue
            for file in (s["file"] for s in record["shards"]):
                if file not in copied and _copy_shard(part, out, file):
                    copied.add(file)
        return assemble(out, command=command, check_hashes=False)


def assemble_locked(out: Path, command: str | None = None) -> Manifest:
    """`assemble`, holding the lock of `out`: no prepare, pull or other merge writes there meanwhile."""
    with output_lock(out, None, command="avdata merge"):
        return assemble(out, command=command)


def _adopt_plan(out: Path, record: dict[str, Any], plan_text: str) -> None:
    """Give `out` the parts' plan record, or check that it has it already."""
    own = plan_path(out)
    if own.exists():
        if load_plan(out)["fingerprint"] != record["fingerprint"]:
            raise AvdataError(f"{out}: holds a different preparation; merge into an empty folder")
        return
    held = sorted((n for n in owned_names(out) if (out / n).exists()), key=lambda n: (n != MANIFEST_NAME, n))
    if held:  # a folder pulled or copied here has no plan: its shards are another preparation's
        raise AvdataError(f"{out}: holds a shards folder avdata did not merge or prepare here ({held[0]}"
                          f"{' and more' if len(held) > 1 else ''}, e.g. one pulled); merge into an empty folder")
    refuse_foreign(out, plan_names(record), "avdata merge")
    own.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(own, plan_text)


def _copy_shard(part: Path, out: Path, file: str) -> bool:
    """Copy one shard and its sidecar from `part` into `out` unless it is there already; whether `out` has
    it now. The shard is hashed as it is copied and renamed into place only when it matches its record; the
    sidecar follows it, written whole, so a sidecar in `out` vouches for its shard."""
    src = part / file
    if not src.is_file() or not sidecar_path(part, file).is_file():
        return False
    side = read_sidecar(part, file)
    info = side["shard"]
    dst = out / file
    if read_json_record(sidecar_path(out, file)) == side and dst.is_file() and dst.stat().st_size == info["bytes"]:
        return True
    sidecar_path(out, file).unlink(missing_ok=True)  # it vouches for the shard replaced below: not meanwhile
    digest = hashlib.sha256()
    with open(src, "rb") as f, atomic_open(dst) as g:  # a temp file, never through a link planted there
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            g.write(chunk)
        if digest.hexdigest() != info["sha256"] or g.tell() != info["bytes"]:
            raise AvdataError(f"{src}: does not match its record; rerun that part")
    write_sidecar(out, file, side)
    return True
