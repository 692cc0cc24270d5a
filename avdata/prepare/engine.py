"""The prepare engine: plan -> parallel processing -> shards per split -> manifest and dataset card.

Order: the samples of each split are written in a seeded random order (the recipe's `seed` option, salted
with the split's name; see `shuffled_split`), so that shards read in file order, even by a reader with a
small shuffle buffer, give mixed classes, actors and sources rather than the recipe's listing order.

Determinism: items are assigned to shards from the plan alone (fixed count per shard, shuffled plan
order, see above), and results are consumed in that order (the executor's futures in submission order), so the bytes do not
depend on `jobs`.

Workers: with --jobs > 1, a process pool forked before planning (each worker loads its recipe's tables
while the parent plans). A worker that dies (out of memory, a crash in a decoder) stops the run with
the clips it was on named, instead of leaving it waiting.

Hand-off: with --jobs > 1 a worker encodes its sample's tar members and writes them to a file in a
per-run folder `<out>/.avdata/work-*/`; the parent appends that file to the shard (hashing as it writes)
and deletes it. Passing ~1 MB per clip through the pool's pipe instead cost the parent about as much CPU
as the shard writing itself. (Slots of shared memory instead of files measured no faster.)

Resumability: every finished shard gets a sidecar record in `<out>/.avdata/shards/`; a rerun keeps a
shard whose file still matches its record and redoes the rest. `--part i/N` processes every N-th shard;
when all shards of the plan are done (by one run or by several parts) the manifest is assembled
(`avdata/merge.py`).
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from avdata import __version__
from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError, MediaError
from avdata.hashing import sha256_bytes, sha256_file
from avdata.prepare.lifeline import follow_parent
from avdata.shards.manifest import MANIFEST_NAME
from avdata.progress import make_progress
from avdata.datasets.recipe import ItemContext, Plan, Recipe, SkipSample, WorkItem, get_recipe, options_dict
from avdata.shards.tar import ShardWriter, encode_sample, shard_name
from avdata.prepare.splits import seeded_shuffle

log = logging.getLogger("avdata.prepare.engine")

STATE_DIR = ".avdata"
HANDOFF_PREFIX = "work-"
BUSY_SUFFIX = ".busy"
PLAN_NAME = "plan.json"


@dataclass
class PrepareSettings:
    """How to run (none of these change the output bytes, except samples_per_shard)."""

    samples_per_shard: int = 256
    jobs: int = 1
    part: tuple[int, int] | None = None  # (index, count), index in [0, count)
    strict: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class PrepareResult:
    out: Path
    complete: bool
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None


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


def state_dir(out: Path) -> Path:
    return out / STATE_DIR


def sidecar_path(out: Path, shard_file: str) -> Path:
    return state_dir(out) / "shards" / (shard_file + ".json")


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
    record["fingerprint"] = sha256_bytes(json.dumps(record, sort_keys=True).encode())
    return record


# --- worker side -----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(recipe_name: str, raw: str, options: Any, handoff: str | None = None) -> None:
    _WORKER["process"] = type(get_recipe(recipe_name)).process
    _WORKER["raw"] = Path(raw)
    _WORKER["options"] = options
    _WORKER["handoff"] = Path(handoff) if handoff else None
    if handoff:  # a pool worker: the pool is the parallelism, so OpenCV's own threads only get in the way
        follow_parent(_WORKER.get("parent") or os.getppid())  # and it never outlives the run
        import cv2

        cv2.setNumThreads(1)
    type(get_recipe(recipe_name)).warm(options)


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def _hash_sources(raw: Path, item: WorkItem) -> dict[str, str]:
    """sha256 of an item's source files; memoised per process, since items may share a big file (HDF5)."""
    out = {}
    for rel in item.sources.values():
        p = raw / rel
        if p.is_file():
            st = p.stat()
            memo_key = (str(p), st.st_size, st.st_mtime_ns)
            if memo_key not in _HASH_MEMO:
                _HASH_MEMO[memo_key] = sha256_file(p)
            out[rel] = _HASH_MEMO[memo_key]
    return out


def _work(item: WorkItem) -> tuple:
    raw = _WORKER["raw"]
    hashes: dict[str, str] = {}
    try:
        hashes = _hash_sources(raw, item)
        ctx = ItemContext(raw, _WORKER["options"], hashes)
        fields = _WORKER["process"](item, ctx)
        parts = encode_sample(item.key, fields)
        handoff = _WORKER["handoff"]
        if handoff is None:
            return ("ok", item, parts, ctx.stats, hashes)
        path = handoff / f"{item.key}.part"
        try:
            with open(path, "wb") as f:
                f.writelines(parts)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno in _NO_SPACE:
                return ("nospace", item, f"{exc.strerror} while writing {path}")
            raise
        return ("ok", item, str(path), ctx.stats, hashes)
    except SkipSample as exc:
        return ("skip", item, exc.path or next(iter(item.sources.values()), ""), exc.reason, hashes)
    except MediaError as exc:
        path = exc.path
        try:
            path = str(Path(exc.path).relative_to(raw))
        except ValueError:
            pass
        return ("skip", item, path, exc.reason, hashes)
    except Exception:  # a bug, not bad input: stop loudly with the clip named
        return ("error", item, traceback.format_exc())


def _work_in_pool(items: list[WorkItem]) -> list[tuple]:
    """`_work` on a few items, each with a marker file while it runs: a worker killed by the system (out
    of memory) or by a crash in a decoder leaves it behind, which names the clip."""
    out = []
    for item in items:
        busy = _WORKER["handoff"] / (item.key + BUSY_SUFFIX)
        busy.touch()
        try:
            out.append(_work(item))
        finally:
            busy.unlink(missing_ok=True)
    return out


# --- engine ----------------------------------------------------------------------------------------


def _load_or_write_plan(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    path = state_dir(out) / PLAN_NAME
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("fingerprint") == record["fingerprint"]:
            return
        if not overwrite:
            raise AvdataError(
                f"{out} holds shards prepared from other input or options (see {path}); "
                "use a new --out folder, or --overwrite to replace them"
            )
    if overwrite or path.exists():
        _clear_outputs(out)
    state_dir(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _clear_outputs(out: Path) -> None:
    for p in out.glob("*.tar"):
        p.unlink()
    for name in (MANIFEST_NAME, "README.md"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(state_dir(out) / "shards", ignore_errors=True)


def _remove_stale_handoffs(out: Path, age_s: float = 3600.0) -> None:
    """Hand-off folders of runs that were killed. A live run touches its folder with every clip, so one
    left alone for an hour is not in use (another --part run may share the output folder)."""
    for d in state_dir(out).glob(HANDOFF_PREFIX + "*"):
        try:
            if time.time() - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:
            pass


def _shard_done(out: Path, shard: dict[str, Any]) -> bool:
    side = sidecar_path(out, shard["file"])
    tar = out / shard["file"]
    if not side.exists() or not tar.exists():
        return False
    try:
        rec = json.loads(side.read_text())
    except json.JSONDecodeError:
        return False
    info = rec.get("shard", {})
    if rec.get("keys") != shard["keys"] or info.get("bytes") != tar.stat().st_size:
        return False
    return info.get("sha256") == sha256_file(tar)


class _Workers:
    """The processes that run `recipe.process`, started before planning so that they load what they need
    (`Recipe.warm`) while the parent plans. Forked here, before any progress-bar thread starts.

    A ProcessPoolExecutor rather than a multiprocessing Pool: when a worker dies (killed for memory, or a
    crash in a decoder) a Pool waits forever for its result, the executor reports it."""

    def __init__(self, recipe: Recipe, raw: Path, options: Any, jobs: int, out: Path) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.finished = False
        self.handoff: Path | None = None
        self.args = (recipe.name, str(raw), options)
        if jobs > 1:
            # per run, so that --part runs sharing one output folder keep out of each other's way
            state_dir(out).mkdir(parents=True, exist_ok=True)
            self.handoff = Path(tempfile.mkdtemp(prefix=HANDOFF_PREFIX, dir=state_dir(out)))
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            _WORKER["parent"] = os.getpid()  # inherited by the forked workers
            self.pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                            initargs=(*self.args, str(self.handoff)))
            # The first task starts the workers. Frozen objects are left out of their garbage collections,
            # which would otherwise touch (and so copy) every page of the parent's heap they inherit:
            # about 5% of the workers' time.
            gc.freeze()
            try:
                self.pool.submit(int)
            finally:
                gc.unfreeze()

    def run(self, items: list[WorkItem]) -> Iterator[tuple]:
        """Results in plan order."""
        if self.pool is None:
            _init_worker(*self.args)
            return map(_work, items)
        # two clips per task, as Pool.imap(chunksize=2): fewer messages, and still an even spread at the end
        return self._in_order([self.pool.submit(_work_in_pool, items[i:i + 2]) for i in range(0, len(items), 2)])

    def _in_order(self, futures: list) -> Iterator[tuple]:
        """Results with the sample's encoded bytes in place of its hand-off file (read and deleted)."""
        for i, fut in enumerate(futures, start=1):
            try:
                results = fut.result()
            except BrokenProcessPool:
                raise AvdataError(self._death_message()) from None
            if i == len(futures):  # the workers may exit while the parent writes the last shard and the manifest
                self.pool.shutdown(wait=False)
                self.finished = True
            for res in results:
                if res[0] == "ok":
                    with open(res[2], "rb") as f:
                        data = f.read()
                    os.unlink(res[2])
                    res = (*res[:2], [data], *res[3:])
                yield res

    def _death_message(self) -> str:
        busy = sorted(p.name[: -len(BUSY_SUFFIX)] for p in self.handoff.glob("*" + BUSY_SUFFIX))
        # the other workers are stopped when one dies, so the clips of all of them are named
        which = (f"while preparing {busy[0]}" if len(busy) == 1 else
                 f"while preparing one of {', '.join(busy)}" if busy else "between clips")
        return (f"a worker process died {which}: killed by the system (out of memory?) or crashed in a decoder. "
                "Finished shards are kept: rerun the same command, with fewer --jobs if memory ran out; if it "
                "dies on the same clip again, move that clip's files out of the raw folder (it is then recorded "
                "as missing) or report the file")

    def close(self) -> None:
        if self.pool is not None:
            if not self.finished:
                # stop now: queued clips are dropped, running ones are not waited for
                for proc in list(getattr(self.pool, "_processes", {}).values()):
                    proc.terminate()
                self.pool.shutdown(wait=True, cancel_futures=True)
            else:
                self.pool.shutdown(wait=True)
            self.pool = None
        if self.handoff is not None:
            shutil.rmtree(self.handoff, ignore_errors=True)
            self.handoff = None


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
    out.mkdir(parents=True, exist_ok=True)
    raw_dir = recipe.prepare_raw(raw, state_dir(out) / "raw", options)
    workers = _Workers(recipe, raw_dir, options, settings.jobs, out)
    try:
        return _prepare(recipe, raw, raw_dir, out, options, settings, command, workers)
    finally:
        workers.close()


def _prepare(recipe, raw, raw_dir, out, options, settings, command, workers) -> PrepareResult:
    log.info("planning %s from %s", recipe.name, raw)
    plan = recipe.plan(raw_dir, options)
    if not plan.items:
        raise AvdataError(f"{raw}: no usable {recipe.name} clips found (is this the right folder?)")
    record = build_plan_record(recipe, plan, options, settings.samples_per_shard)
    _load_or_write_plan(out, record, settings.overwrite)
    for stale in out.glob("*.tmp"):
        stale.unlink()
    _remove_stale_handoffs(out)

    shards = record["shards"]
    if settings.part:
        i, n = settings.part
        mine = [s for k, s in enumerate(shards) if k % n == i]
    else:
        mine = shards
    items_by_key = {it.key: it for it in plan.items}
    result = PrepareResult(out=out, complete=False)
    pending = []
    for s in mine:
        if not settings.overwrite and _shard_done(out, s):
            result.kept.append(s["file"])
        else:
            pending.append(s)
    if result.kept:
        log.info("keeping %d finished shard(s) that match their records", len(result.kept))

    todo = [items_by_key[k] for s in pending for k in s["keys"]]
    if todo:
        _write_pending(recipe, out, settings, pending, todo, workers.run(todo), result)

    from avdata.prepare.merge import assemble, missing_shards

    missing = missing_shards(out, record)
    if missing:
        log.info("%d shard(s) of the plan are not made yet (other --part runs); run `avdata merge %s` "
                 "when all parts are done", len(missing), out)
        return result
    # shards were hashed when written or checked above; no need to read them all again
    result.manifest = assemble(out, command=command, check_hashes=False)
    result.complete = True
    result.skipped = result.manifest["skipped"]
    return result


def _write_pending(recipe, out, settings, pending, todo, results, result) -> None:
    progress = make_progress("clips", disable=None if settings.progress else True)
    classes = recipe.classes
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
                        status, item = res[0], res[1]
                        if status == "error":
                            raise AvdataError(f"internal error while processing {item.key}:\n{res[2]}")
                        if status == "nospace":
                            raise OSError(errno.ENOSPC, res[2])
                        sources.update(res[-1])
                        if status == "skip":
                            entry = {"key": item.key, "split": item.split, "path": res[2], "reason": res[3]}
                            if settings.strict:
                                raise AvdataError(
                                    f"{res[2]}: {res[3]} (stopped by --strict; without it such clips are "
                                    "skipped and listed in manifest.json)"
                                )
                            log.warning("skipping %s: %s: %s", item.key, res[2], res[3])
                            skipped.append(entry)
                            continue
                        writer.write_encoded(item.key, res[2])
                        counts[classes[item.label]] += 1
                        for name, value in res[3].items():
                            stats.setdefault(name, []).append(float(value))
                    info = writer.close()
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    raise AvdataError(
                        f"disk full while writing {path}; free space and rerun the same command "
                        "(finished shards are kept)"
                    ) from exc
                raise
            side = {"shard": info.to_dict(), "split": shard["split"], "keys": shard["keys"],
                    "class_counts": counts, "skipped": skipped, "sources": dict(sorted(sources.items())),
                    "stats": dict(sorted(stats.items()))}
            atomic_write_text(sidecar_path(out, shard["file"]), json.dumps(side, indent=1, sort_keys=True) + "\n")
            result.written.append(shard["file"])
            log.debug("wrote %s (%d samples)", shard["file"], info.num_samples)


def print_summary(result: PrepareResult) -> None:
    """Per-split counts and every skipped clip with its reason, on the console."""
    from rich.table import Table

    from avdata.progress import console

    console.print(f"[bold]{result.out}[/]: {len(result.written)} shard(s) written, {len(result.kept)} kept")
    if not result.complete or result.manifest is None:
        console.print("part done; the manifest is written once all parts are (`avdata merge`)")
        return
    m = result.manifest
    table = Table(title=f"{m['dataset']}: samples per split and class")
    table.add_column("split")
    table.add_column("samples", justify="right")
    for c in m["classes"]:
        table.add_column(c, justify="right")
    for split, entry in m["splits"].items():
        table.add_row(split, str(entry["num_samples"]), *(str(entry["class_counts"][c]) for c in m["classes"]))
    console.print(table)
    for split, entry in m["splits"].items():
        for name, st in entry.get("sample_stats", {}).items():
            console.print(f"{split} {name}: min {st['min']:.4f}, median {st['median']:.4f}, max {st['max']:.4f} "
                          f"(mean {st['mean']:.4f}) over {st['samples']} samples", markup=False, soft_wrap=True)
    if m["skipped"]:
        console.print(f"[yellow]{len(m['skipped'])} clip(s) skipped[/] (listed in manifest.json):")
        for s in m["skipped"]:
            console.print(f"  {s['key']} ({s.get('split', '')}): {s['path']}: {s['reason']}", markup=False)
