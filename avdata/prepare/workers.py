"""The processes that run `recipe.process`, and the one way a result comes back from them (`Outcome`).

Workers: with --jobs > 1, a process pool forked before planning (each worker loads its recipe's tables
while the parent plans). A worker that dies (out of memory, a crash in a decoder) stops the run with
the clips it was on named, instead of leaving it waiting.

Hand-off: with --jobs > 1 a worker encodes its sample's tar members and writes them to a file in a
per-run folder `<out>/.avdata/work-*/`; the parent appends that file to the shard (hashing as it writes)
and deletes it. Passing ~1 MB per clip through the pool's pipe instead cost the parent about as much CPU
as the shard writing itself; slots of shared memory instead of files measured no faster.
"""

from __future__ import annotations

import errno
import gc
import multiprocessing as mp
import os
import shutil
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from avdata.datasets.recipe import ItemContext, Recipe, SkipSample, WorkItem
from avdata.datasets.registry import get_recipe
from avdata.errors import AvdataError, MediaError
from avdata.hashing import sha256_file
from avdata.prepare.lifeline import follow_parent
from avdata.prepare.state import new_handoff_dir
from avdata.shards.tar import encode_sample

__all__ = ["Failure", "Outcome", "Workers", "NO_SPACE"]

BUSY_SUFFIX = ".busy"
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@dataclass(frozen=True)
class Failure:
    """Why an item made no sample. kind "input": bad input, skipped and recorded (or the end of the run
    with --strict); "no-space": the disk filled up; "bug": an exception in the recipe (reason: traceback)."""

    kind: str
    path: str
    reason: str

    def error(self, item: WorkItem, strict: bool) -> Exception | None:
        """The exception that ends the run, or None when the item is only skipped."""
        if self.kind == "bug":
            return AvdataError(f"internal error while processing {item.key}:\n{self.reason}")
        if self.kind == "no-space":
            return OSError(errno.ENOSPC, self.reason)
        if strict:
            return AvdataError(f"{self.path}: {self.reason} (stopped by --strict; without it such clips are "
                               "skipped and listed in manifest.json)")
        return None


@dataclass
class Outcome:
    """A worker's result for one item: the sample's tar members (in the pool: the hand-off file holding
    them, until the parent reads it), its stats and its sources' sha256; or the `Failure`."""

    item: WorkItem
    hashes: dict[str, str]
    data: list[bytes] | str | None = None
    stats: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None


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


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def _hash_sources(raw: Path, item: WorkItem) -> dict[str, str]:
    """sha256 of an item's source files; memoised per process, since items may share a big file (HDF5)."""
    out = {}
    for rel in item.sources.values():
        p = raw / rel
        if p.is_file():
            try:
                st = p.stat()
                memo_key = (str(p), st.st_size, st.st_mtime_ns)
                if memo_key not in _HASH_MEMO:
                    _HASH_MEMO[memo_key] = sha256_file(p)
            except OSError as exc:  # unreadable (permissions, a failing disk): bad input, not a bug
                raise MediaError(p, f"cannot read ({exc.strerror or exc})") from exc
            out[rel] = _HASH_MEMO[memo_key]
    return out


def _work(item: WorkItem) -> Outcome:
    raw = _WORKER["raw"]
    hashes: dict[str, str] = {}
    try:
        hashes = _hash_sources(raw, item)
        ctx = ItemContext(raw, _WORKER["options"], hashes)
        parts = encode_sample(item.key, _WORKER["process"](item, ctx))
        handoff = _WORKER["handoff"]
        if handoff is None:
            return Outcome(item, hashes, parts, ctx.stats)
        path = handoff / f"{item.key}.part"
        try:
            with open(path, "wb") as f:
                f.writelines(parts)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno in NO_SPACE:
                return Outcome(item, hashes, failure=Failure("no-space", str(path),
                                                             f"{exc.strerror} while writing {path}"))
            raise
        return Outcome(item, hashes, str(path), ctx.stats)
    except SkipSample as exc:
        return Outcome(item, hashes, failure=Failure("input", exc.path or next(iter(item.sources.values()), ""),
                                                     exc.reason))
    except MediaError as exc:
        path = exc.path
        try:
            path = str(Path(exc.path).relative_to(raw))
        except ValueError:
            pass
        return Outcome(item, hashes, failure=Failure("input", path, exc.reason))
    except Exception:  # a bug, not bad input: stop loudly with the clip named
        return Outcome(item, hashes, failure=Failure("bug", "", traceback.format_exc()))


def _work_in_pool(items: list[WorkItem]) -> list[Outcome]:
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


class Workers:
    """The processes that run `recipe.process`, started before planning so that they load what they need
    (`Recipe.warm`) while the parent plans. Forked here, before any progress-bar thread starts.

    A ProcessPoolExecutor rather than a multiprocessing Pool: when a worker dies (killed for memory, or a
    crash in a decoder) a Pool waits forever for its result, the executor reports it."""

    def __init__(self, recipe: Recipe, raw: Path, options: Any, jobs: int, out: Path, owner: str | None = None) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.finished = False
        self.handoff: Path | None = None
        self.args = (recipe.name, str(raw), options)
        if jobs > 1:
            self.handoff = new_handoff_dir(out, owner)  # owner: the run's lock; see new_handoff_dir
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

    def run(self, items: list[WorkItem]) -> Iterator[Outcome]:
        """Results in plan order."""
        if self.pool is None:
            _init_worker(*self.args)
            return map(_work, items)
        # two clips per task, as Pool.imap(chunksize=2): fewer messages, and still an even spread at the end
        return self._in_order(self.pool, [self.pool.submit(_work_in_pool, items[i:i + 2])
                                          for i in range(0, len(items), 2)])

    def _in_order(self, pool: ProcessPoolExecutor, futures: list) -> Iterator[Outcome]:
        """Results with the sample's encoded bytes in place of its hand-off file (read and deleted)."""
        for i, fut in enumerate(futures, start=1):
            try:
                results = fut.result()
            except BrokenProcessPool:
                raise AvdataError(self._death_message()) from None
            if i == len(futures):  # the workers may exit while the parent writes the last shard and the manifest
                pool.shutdown(wait=False)
                self.finished = True
            for res in results:
                if isinstance(res.data, str):
                    with open(res.data, "rb") as f:
                        data = f.read()
                    os.unlink(res.data)
                    res.data = [data]
                yield res

    def _death_message(self) -> str:
        assert self.handoff is not None  # made with the pool, whose death this explains
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
