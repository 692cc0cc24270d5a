"""Joining `--part i/N` outputs into one shards folder with one manifest.

Each part writes the same plan record and a sidecar per shard it made (`avdata.prepare.state`). The
manifest is assembled from those once every shard of the plan is present and matches its sidecar, so a
single run and N parts give byte-identical manifests.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from avdata.atomic import atomic_write_text, open_new, tmp_path
from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.owned import owned_names, refuse_foreign
from avdata.prepare.state import (load_plan, missing_shards, plan_names, plan_path, read_sidecar, sidecar_dir,
                                  sidecar_path)
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
    """Copy the shards and sidecars of part folders made elsewhere into `out`, then assemble.

    Only the plan's shards are copied, and only into a folder that is empty of their names or holds the
    same plan: another preparation there (with another plan, or none: a folder pulled there), or a file the
    project did not write under one of the names (a user's README.md), is refused."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    own = plan_path(out)
    if own.exists():
        if load_plan(out)["fingerprint"] != record["fingerprint"]:
            raise AvdataError(f"{out}: holds a different preparation; merge into an empty folder")
    else:
        held = sorted((n for n in owned_names(out) if (out / n).exists()), key=lambda n: (n != MANIFEST_NAME, n))
        if held:  # a folder pulled or copied here has no plan: its shards are another preparation's
            raise AvdataError(f"{out}: holds a shards folder avdata did not merge or prepare here ({held[0]}"
                              f"{' and more' if len(held) > 1 else ''}, e.g. one pulled); merge into an empty folder")
        refuse_foreign(out, plan_names(record), "avdata merge")
        own.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(own, plan_text)
    sidecar_dir(out).mkdir(parents=True, exist_ok=True)
    for part in parts:
        part = Path(part)
        if part.resolve() == out.resolve():
            continue
        for file in (s["file"] for s in record["shards"]):
            src = part / file
            if not src.is_file() or not sidecar_path(part, file).is_file():
                continue
            info = read_sidecar(part, file)["shard"]
            if sha256_file(src) != info["sha256"]:
                raise AvdataError(f"{src}: does not match its record; rerun that part")
            tmp = tmp_path(out / file)
            with open(src, "rb") as f, open_new(tmp) as g:  # never through a link planted under the name
                shutil.copyfileobj(f, g)
            tmp.replace(out / file)
            shutil.copyfile(sidecar_path(part, file), sidecar_path(out, file))
    return assemble(out, command=command)
