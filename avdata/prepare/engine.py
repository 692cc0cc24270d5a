"""The prepare engine: plan -> parallel processing -> shards per split -> manifest and dataset card.

Order: the samples of each split are written in a seeded random order (the recipe's `seed` option, salted
with the split's name; see `shuffled_split`), so that shards read in file order, even by a reader with a
small shuffle buffer, give mixed classes, actors and sources rather than the recipe's listing order.

Determinism: items are assigned to shards from the plan alone (fixed count per shard, shuffled plan
order, see above), and results are consumed in that order (the executor's futures in submission order), so
the bytes do not depend on `jobs`.

Workers (`avdata.prepare.workers`): with --jobs > 1 a process pool, each result handed back as an
`Outcome` in plan order.

Resumability: every finished shard gets a sidecar record in `<out>/.avdata/shards/` (the state folder:
`avdata.prepare.state`); a rerun keeps a shard whose file still matches its record, and whose sources were
not modified since, and redoes the rest.
`--part i/N` processes every N-th shard; when all shards of the plan are done (by one run or by several
parts) the manifest is assembled (`avdata.prepare.merge`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avdata import __version__
from avdata.datasets.recipe import Plan, Recipe, WorkItem, options_dict
from avdata.atomic import tmp_path
from avdata.errors import AvdataError
from avdata.fetch.disk import free_space
from avdata.folder_lock import output_lock
from avdata.owned import left_as_found
from avdata.prepare.state import (missing_shards, plan_fingerprint, raw_workdir, remove_stale_handoffs, save_plan,
                                  shard_done, state_dir, write_sidecar)
from avdata.prepare.workers import NO_SPACE, Workers
from avdata.progress import make_progress
from avdata.datasets.splits import seeded_shuffle
from avdata.shards.manifest import Manifest
from avdata.shards.tar import ShardWriter, shard_name

log = logging.getLogger("avdata.prepare.engine")


@dataclass
class PrepareSettings:
    """How to run (none of these change the output bytes, except samples_per_shard)."""

    samples_per_shard: int = 256
    jobs: int = 1
    part: tuple[int, int] | None = None  # (index, count), index in [0, count)
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    executor: str = "local"  # or "dask": each shard a task of a Dask cluster (avdata.prepare.dask_executor)
    scheduler: str | None = None  # the Dask scheduler's address; None: a local cluster of `jobs` workers


@dataclass
class PrepareResult:
    out: Path
    complete: bool
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    manifest: Manifest | None = None


def parse_part(text: str | None) -> tuple[int, int] | None:
    """'i/N' (0-based i) -> (i, N)."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise AvdataError(f"--part must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise AvdataError(f"--part {text}: need 0 <= i < N")
    return i, n


def shuffled_split(items: list[WorkItem], seed: int, split: str) -> list[WorkItem]:
    """A split's items in the seeded random order they are written in: a function of the seed, the split's
    name and the set of keys only (not of the recipe's listing order or of --jobs/--part)."""
    by_key = {it.key: it for it in items}
    return [by_key[k] for k in seeded_shuffle(by_key, seed, f"order:{split}")]


def build_plan_record(recipe: Recipe, plan: Plan, options: Any, samples_per_shard: int) -> dict[str, Any]:
    """Everything the manifest needs that the plan fixes, plus each shard's item keys."""
    if samples_per_shard < 1:
        raise AvdataError("--samples-per-shard must be at least 1")
    order = list(recipe.splits) + sorted({it.split for it in plan.items} - set(recipe.splits))
    by_split: dict[str, list[WorkItem]] = {s: [] for s in order}
    for it in plan.items:
        by_split[it.split].append(it)
    seed = int(getattr(options, "seed", 0))
    shards = []
    for split in order:
        items = shuffled_split(by_split[split], seed, split)
        for i in range(0, len(items), samples_per_shard):
            shards.append({"file": shard_name(split, i // samples_per_shard), "split": split,
                           "keys": [it.key for it in items[i:i + samples_per_shard]]})
    keys = [it.key for it in plan.items]
    if len(set(keys)) != len(keys):
        raise AvdataError("the plan has duplicate sample keys; this is a recipe bug")
    record = {
        "dataset": recipe.name,
        "tool_version": __version__,
        "options": {**options_dict(options), "samples_per_shard": samples_per_shard},
        "classes": list(recipe.classes),
        "features": recipe.features(options),
        "card": asdict(recipe.card),
        "splits": [s for s in order if by_split[s]],
        "plan_skipped": sorted(plan.skipped, key=lambda s: (s.get("split", ""), s["key"])),
        "notes": plan.notes,
        "shards": shards,
    }
    record["fingerprint"] = plan_fingerprint(record)
    return record


def prepare(
    recipe: Recipe,
    raw: Path,
    out: Path,
    options: Any,
    settings: PrepareSettings | None = None,
    command: str | None = None,
) -> PrepareResult:
    """Prepare `recipe` from `raw` into the shards folder `out` (see module docstring)."""
    settings = settings or PrepareSettings()
    raw, out = Path(raw), Path(out)
    if not raw.exists():
        raise AvdataError(f"{raw}: raw data not found; pass the folder you downloaded into (--raw)")
    if settings.executor != "local":
        from avdata.prepare.dask_executor import check_executor

        check_executor(settings.executor)  # before planning: a missing extra fails at once
    check_out_apart(raw, out)
    # e.g. a mistyped --raw: no empty --out (and .avdata/) left behind by the refusal
    with left_as_found(out, state_dir(out)):
        out.mkdir(parents=True, exist_ok=True)
        with output_lock(out, settings.part) as lock:
            raw_dir = recipe.prepare_raw(raw, raw_workdir(out), options)
            workers = Workers(recipe, raw_dir, options, settings.jobs if settings.executor == "local" else 1, out,
                              owner=lock.name.removesuffix(".lock"))
            try:
                return _prepare(recipe, raw, raw_dir, out, options, settings, command, workers)
            finally:
                workers.close()


def check_out_apart(raw: Path, out: Path) -> None:
    """--out must not be --raw or a folder above it: the raw data would sit among the outputs (and its
    README.md, *.tar or *.tmp share their names)."""
    r, o = raw.resolve(), out.resolve()
    if r == o or o in r.parents:
        where = "is the --raw folder" if r == o else f"holds the --raw folder {raw}"
        raise AvdataError(f"--out {out} {where}; write the shards to a folder of their own, e.g. "
                          f"--out {r.parent / (r.name + '-shards')}")


def _prepare(recipe, raw, raw_dir, out, options, settings, command, workers) -> PrepareResult:
    log.info("planning %s from %s", recipe.name, raw)
    plan = recipe.plan(raw_dir, options)
    if not plan.items:
        why = "(is this the right folder?)"
        if plan.skipped:  # say why: the plan knew (a missing modality, files in another format...)
            first = plan.skipped[0]
            why = (f"all {len(plan.skipped):,} found were skipped, e.g. {first.get('key', '')}: "
                   f"{first.get('path', '')}: {first.get('reason', '')}")
        raise AvdataError(f"{raw}: no usable {recipe.name} clips found: {why}")
    fraction = getattr(options, "val_fraction", 0.0) or 0.0
    if fraction > 0 and not any(it.split == "val" for it in plan.items):
        plan.warn(f"--val-fraction {fraction} held out no sample (too few per class to round to one): "
                  "no val split; raise it, or pass 0 to say so")
    record = build_plan_record(recipe, plan, options, settings.samples_per_shard)
    save_plan(out, record, settings.overwrite)
    remove_stale_handoffs(out)

    shards = record["shards"]
    if settings.part:
        i, n = settings.part
        mine = [s for k, s in enumerate(shards) if k % n == i]
    else:
        mine = shards
    # what a killed run left half-written: only this run's shards' temp files (other parts may be writing
    # theirs into the same folder right now, and other *.tmp files are not ours)
    for s in mine:
        tmp_path(out / s["file"]).unlink(missing_ok=True)
    items_by_key = {it.key: it for it in plan.items}
    result = PrepareResult(out=out, complete=False)
    pending = []
    for s in mine:
        if not settings.overwrite and shard_done(out, s, raw_dir):
            result.kept.append(s["file"])
        else:
            pending.append(s)
    if result.kept:
        log.info("keeping %d finished shard(s) that match their records", len(result.kept))

    todo = [items_by_key[k] for s in pending for k in s["keys"]]
    if todo and settings.executor == "dask":
        from avdata.prepare.dask_executor import build_shards

        build_shards(recipe, raw_dir, out, options, settings, pending, items_by_key, result, record["fingerprint"])
    elif todo:
        _write_pending(recipe, out, settings, pending, todo, workers.run(todo), result)

    from avdata.prepare.merge import assemble

    missing = missing_shards(out, record)
    if missing:
        log.info("%d shard(s) of the plan are not made yet (other --part runs); run `avdata merge %s` "
                 "when all parts are done", len(missing), out)
        return result
    # shards were hashed when written or checked above; no need to read them all again
    result.manifest = assemble(out, command=command, check_hashes=False)
    result.complete = True
    result.skipped = result.manifest.skipped
    return result


def _write_pending(recipe, out, settings, pending, todo, results, result) -> None:
    progress = make_progress("clips", disable=None if settings.progress else True)
    classes = recipe.classes
    written_bytes = written_items = 0  # this run's finished shards: how much room the rest needs
    with progress:
        task = progress.add_task(f"prepare {recipe.name}", total=len(todo))
        for shard in pending:
            path = out / shard["file"]
            counts = {c: 0 for c in classes}
            skipped: list[dict[str, Any]] = []
            sources: dict[str, str] = {}
            stats: dict[str, list[float]] = {}  # per stat name, one value per written sample in plan order
            try:
                with ShardWriter(path) as writer:
                    for _ in shard["keys"]:
                        res = next(results)
                        progress.advance(task)
                        item, failure = res.item, res.failure
                        sources.update(res.hashes)
                        if failure is not None:
                            error = failure.error(item, settings.strict)
                            if error is not None:
                                raise error
                            log.warning("skipping %s: %s: %s", item.key, failure.path, failure.reason)
                            skipped.append({"key": item.key, "split": item.split, "path": failure.path,
                                            "reason": failure.reason})
                            continue
                        writer.write_encoded(item.key, res.data)
                        counts[classes[item.label]] += 1
                        for name, value in res.stats.items():
                            stats.setdefault(name, []).append(float(value))
                    info = writer.close()
            except OSError as exc:
                if exc.errno in NO_SPACE:
                    left = pending[pending.index(shard):]
                    raise AvdataError(_disk_full(out, path, left, written_bytes, written_items)) from exc
                if exc.filename is None:  # a write's error names no file: say which (e.g. EFBIG, a size limit)
                    raise OSError(exc.errno, exc.strerror or str(exc), str(tmp_path(path))) from exc
                raise
            written_bytes += info.bytes
            written_items += len(shard["keys"])
            side = {"shard": info.to_dict(), "split": shard["split"], "keys": shard["keys"],
                    "class_counts": counts, "skipped": skipped, "sources": dict(sorted(sources.items())),
                    "stats": dict(sorted(stats.items()))}
            write_sidecar(out, shard["file"], side)
            result.written.append(shard["file"])
            log.debug("wrote %s (%d samples)", shard["file"], info.num_samples)


def _disk_full(out: Path, path: Path, left: list[dict[str, Any]], written_bytes: int, written_items: int) -> str:
    """The message for a disk that filled up while writing the shard `path`: the folder, its free space and
    the room the shards `left` (that one included) need, estimated from this run's finished shards."""
    free = free_space(out)
    items = sum(len(s["keys"]) for s in left)
    room = f"{free:,} bytes free in {out}" if free is not None else f"no room left in {out}"
    need = (f"; the {len(left)} shard(s) left need about {written_bytes * items // written_items:,} bytes "
            f"(at the {written_bytes // written_items:,} bytes a clip of the shards written)" if written_items else
            f"; the {len(left)} shard(s) left ({items:,} clips) need more")
    return (f"disk full while writing {path} ({room}{need}); free space and rerun the same command "
            "(finished shards are kept)")
