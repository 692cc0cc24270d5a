"""`prepare --executor dask`: each shard of the plan is one task of a Dask distributed cluster.

Why Dask distributed (and not Ray) for the first version: it installs from pip alone (pure Python, no
daemon to set up), its scheduler retries a task whose worker died (`distributed.scheduler.allowed-failures`,
3 by default) while the nanny restarts that worker, `dask worker`/`dask scheduler` run on Slurm, Kubernetes or
plain ssh (and dask-jobqueue / dask-kubernetes start them from Python), and a `LocalCluster` of real worker
processes starts in about a second, so the tests run it for real.

Division of work:
- the client (the `avdata prepare` process) makes the plan once, exactly as a local run does, and submits
  one task per shard still to make, with that shard's work items;
- a task runs on a worker: it processes the shard's clips in plan order and writes the shard and its
  sidecar with the engine's own shard writing (`engine._write_pending`), so the bytes are those of a local
  `--jobs 1` run. It writes into a staging folder under `<out>/.avdata/work-*/` and renames the finished
  shard, then its sidecar, into `--out`: an attempt cut short (its worker died) leaves nothing under a final
  name, and the retry (or a duplicate attempt of a worker that was wrongly declared dead) writes the same bytes;
- the client assembles the manifest from the sidecars once every task is done (`merge.assemble`).

Assumption: **--raw and --out are on a file system every worker sees at the same path** (NFS, Lustre,
GPFS, CephFS; on one machine, any local folder). Shards are written by the workers, not returned to the
client, so the client never becomes the bottleneck of a large run and no sample bytes cross the network
twice. A worker that cannot see them stops the run with a message saying so.

A worker process runs one shard at a time (a lock, since the recipe's per-process state is global): start
workers with one thread each and as many processes as cores (`dask worker ADDRESS --nworkers N --nthreads 1`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
import threading
import uuid
from pathlib import Path
from typing import Any

from avdata.datasets.recipe import Recipe, WorkItem
from avdata.errors import AvdataError, install_hint
from avdata.progress import make_progress

__all__ = ["EXECUTORS", "check_executor", "import_distributed", "build_shards"]

EXECUTORS = ("local", "dask")
EXTRA_HINT = f"--executor dask needs Dask distributed, an optional extra: {install_hint('dask', 'dask[distributed]')}"

log = logging.getLogger("avdata.prepare.dask")


def import_distributed() -> Any:
    """The `distributed` module, or an error naming the extra that provides it."""
    try:
        import distributed
    except ImportError as exc:
        raise AvdataError(EXTRA_HINT) from exc
    return distributed


def check_executor(name: str) -> None:
    """An unknown --executor, or dask without its extra installed, is an error before any work starts."""
    if name not in EXECUTORS:
        raise AvdataError(f"--executor {name}: choose one of {', '.join(EXECUTORS)}")
    if name == "dask":
        import_distributed()


def build_shards(recipe: Recipe, raw_dir: Path, out: Path, options: Any, settings: Any,
                 pending: list[dict[str, Any]], items_by_key: dict[str, WorkItem], result: Any,
                 fingerprint: str) -> None:
    """Make the `pending` shards of the plan on a Dask cluster (`settings.scheduler`, or a local cluster of
    `settings.jobs` worker processes); adds the files written to `result.written`, in plan order."""
    distributed = import_distributed()
    from avdata.prepare.state import new_handoff_dir

    cluster = None
    if settings.scheduler:
        try:
            client = distributed.Client(settings.scheduler)  # waits distributed.comm.timeouts.connect (30 s)
        except (OSError, TimeoutError) as exc:
            raise AvdataError(f"--scheduler {settings.scheduler}: cannot reach a Dask scheduler there ({exc}); "
                              "start one with `dask scheduler` (it prints its address)") from exc
    else:
        cluster = distributed.LocalCluster(n_workers=settings.jobs, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = distributed.Client(cluster)
    run_dir = new_handoff_dir(out)
    ref = recipe_ref(recipe)
    tag = uuid.uuid4().hex[:8]
    try:
        futures = [client.submit(_build_shard, ref, str(raw_dir), str(out), str(run_dir), options,
                                 settings.strict, fingerprint, s, [items_by_key[k] for k in s["keys"]],
                                 key=f"avdata-{recipe.name}-{s['file']}-{tag}", pure=False)
                   for s in pending]
        _wait(distributed, client, futures, pending, settings, recipe.name)
        for s, fut in zip(pending, futures):
            _check_visible(out, s["file"], fut.result())
            result.written.append(s["file"])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def recipe_ref(recipe: Recipe) -> tuple[str, str]:
    """The recipe's name and import path: a recipe registered at run time (a lab's own, a test's) is
    registered on the worker too."""
    cls = type(recipe)
    return recipe.name, f"{cls.__module__}:{cls.__qualname__}"


#: Seconds the cluster may have no worker at all before the run stops (its tasks would wait for good: the
#: workers' jobs ended, hit their time limit, or were never started); how often that is looked at.
NO_WORKERS_S = 300.0
WATCH_S = 10.0


def _finished(distributed: Any, client: Any, futures: list, scheduler: str | None):
    """The futures as they finish; AvdataError once the cluster has had no worker for NO_WORKERS_S."""
    left, idle_since = list(futures), None
    while left:
        try:
            done, not_done = distributed.wait(left, timeout=WATCH_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done, not_done = set(), left
        yield from (f for f in left if f in done)
        left = [f for f in left if f in not_done]
        if done or client.scheduler_info().get("workers"):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > NO_WORKERS_S:
            raise AvdataError(f"the Dask cluster{f' at {scheduler}' if scheduler else ''} has had no worker for "
                              f"{NO_WORKERS_S:.0f} s, with {len(left)} shard(s) still to make; start workers "
                              f"(`dask worker {scheduler or 'ADDRESS'}`) and rerun: finished shards are kept")


def _wait(distributed: Any, client: Any, futures: list, pending: list[dict[str, Any]], settings: Any,
          name: str) -> None:
    """Wait for every task, advancing a progress bar per finished shard; the first failure cancels the rest
    and is raised (a worker that died too often becomes an error naming the shard and its clips), and so is
    a cluster left with no worker (`_finished`)."""
    shard_of = {f.key: s for f, s in zip(futures, pending)}
    progress = make_progress("clips", disable=None if settings.progress else True)
    try:
        with progress:
            task = progress.add_task(f"prepare {name} (dask)", total=sum(len(s["keys"]) for s in pending))
            for fut in _finished(distributed, client, futures, settings.scheduler):
                if fut.status != "finished":
                    try:
                        fut.result()
                    except distributed.KilledWorker:
                        s = shard_of[fut.key]
                        raise AvdataError(
                            f"the workers preparing {s['file']} died on every try (killed for memory, or a crash "
                            f"in a decoder, on one of {', '.join(s['keys'][:8])}"
                            f"{', ...' if len(s['keys']) > 8 else ''}). "
                            "Finished shards are kept: rerun the same command, with fewer workers per node if "
                            "memory ran out") from None
                progress.advance(task, len(shard_of[fut.key]["keys"]))
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _check_visible(out: Path, file: str, size: int) -> None:
    """The shard a worker wrote must be in --out here too: it is not when the workers see another file system."""
    from avdata.prepare.state import sidecar_path

    path = Path(out) / file
    if not path.is_file() or path.stat().st_size != size or not sidecar_path(out, file).is_file():
        raise AvdataError(f"{path}: a worker wrote this shard but it is not here; with --executor dask the "
                          "workers write into --out, so --out must be on a file system shared by this machine "
                          "and every worker, at the same path")


# --- on the worker ---------------------------------------------------------------------------------------

_LOCK = threading.Lock()  # one shard at a time per process: the recipe's state in a worker is per process
_READY: dict[str, Any] = {}


def _build_shard(ref: tuple[str, str], raw_dir: str, out: str, run_dir: str, options: Any, strict: bool,
                 fingerprint: str, shard: dict[str, Any], items: list[WorkItem]) -> int:
    """One task: the shard's samples in plan order, written as a local run writes them; returns its size."""
    from avdata.datasets.registry import get_recipe
    from avdata.prepare import engine
    from avdata.prepare.state import sidecar_path
    from avdata.prepare.workers import _init_worker, _work

    with _LOCK:
        _ensure_recipe(ref)
        host = socket.gethostname()
        if _plan_fingerprint(Path(out)) != fingerprint:
            raise AvdataError(f"--out {out} is not the client's folder on worker {host}: with --executor dask the "
                              "workers write the shards there, so it must be a shared file system at the same path")
        if not Path(raw_dir).is_dir():
            raise AvdataError(f"{raw_dir}: raw data not found on worker {host}; with --executor dask the workers "
                              "read --raw, so it must be on a shared file system at the same path")
        state = (ref, raw_dir, options)
        if _READY.get("state") != state:  # load the recipe's tables once per process, not once per shard
            _init_worker(ref[0], raw_dir, options)
            _limit_threads()
            _READY["state"] = state
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix="shard-", dir=run_dir))
        try:
            settings = engine.PrepareSettings(strict=strict, progress=False)
            done = engine.PrepareResult(out=stage, complete=False)
            engine._write_pending(get_recipe(ref[0]), stage, settings, [shard], items, map(_work, items), done)
            final = Path(out) / shard["file"]
            size = (stage / shard["file"]).stat().st_size
            os.replace(stage / shard["file"], final)  # the shard first: a sidecar never names a missing file
            sidecar_path(Path(out), shard["file"]).parent.mkdir(parents=True, exist_ok=True)
            os.replace(sidecar_path(stage, shard["file"]), sidecar_path(Path(out), shard["file"]))
            return size
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _plan_fingerprint(out: Path) -> str | None:
    """The fingerprint of the plan in `out` as this worker sees it (None: no plan there); read once per process
    and plan file, since a big run's plan lists every key."""
    from avdata.prepare.state import load_plan, plan_path

    try:
        st = plan_path(out).stat()
    except OSError:
        return None
    memo = (str(out), st.st_size, st.st_mtime_ns)
    if _READY.get("plan", (None,))[0] != memo:
        _READY["plan"] = (memo, load_plan(out).get("fingerprint"))
    return _READY["plan"][1]


def _ensure_recipe(ref: tuple[str, str]) -> None:
    from avdata.datasets.registry import recipe_names, register_recipe

    if ref[0] not in recipe_names():
        register_recipe(*ref)


def _limit_threads() -> None:
    """Worker processes are the parallelism, as in the local pool: OpenCV's own threads only get in the way."""
    import cv2

    cv2.setNumThreads(1)
