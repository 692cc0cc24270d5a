"""Benchmark `avdata prepare cremad --executor dask` against the local pool (`--jobs N`): the engine's cost.

Data: N clips copied from the genuine CREMA-D VP6 sample under real clip names (as `prepare_cremad.py --real`),
--samples-per-shard S (small, so that there are enough shards, one task each, to keep N workers busy).
Variants, alternating, --repeat times each (medians; the machine is shared):
  (a) local: `--jobs N` (the process pool);
  (b) dask, cold: `--executor dask --jobs N`, which starts and stops a local cluster of N worker processes;
  (c) dask, warm: `--executor dask --scheduler ADDRESS` on a cluster of N workers started once beforehand
      (a lab's running cluster: what a shard costs the engine, without the start-up).
Each run is its own process (as the command is; its start-up is in every variant's figures). Wall time, and
CPU time of that process with every descendant it reaped (pool or cluster workers), plus, for (c), the
running workers' as they report it (the scheduler of (c) lives in this process and is not counted). Every
variant's shards and manifest are checked to be byte-identical to (a)'s. A pause (--settle) after each
variant lets a stopped cluster's processes exit.

    python benchmarks/prepare_dask.py --clips 192 --samples-per-shard 16 --jobs 2 --repeat 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_cremad import machine, make_real_raw


def children_cpu() -> float:
    """CPU time of finished children and the descendants they reaped (pool workers, cluster workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def workers_cpu(client) -> float:
    def cpu() -> float:
        import psutil

        t = psutil.Process().cpu_times()
        return t.user + t.system

    return sum(client.run(cpu).values()) if client is not None else 0.0


RUN = """
import sys
from pathlib import Path
from avdata.datasets.cremad.recipe import CremadOptions
from avdata.datasets.registry import get_recipe
from avdata.prepare.engine import PrepareSettings, prepare
if __name__ == "__main__":
    raw, out, per_shard, jobs, executor, scheduler = sys.argv[1:]
    prepare(get_recipe("cremad"), Path(raw), Path(out), CremadOptions(),
            PrepareSettings(samples_per_shard=int(per_shard), jobs=int(jobs), overwrite=True, progress=False,
                            executor=executor, scheduler=scheduler or None))
"""


def run(raw: Path, out: Path, per_shard: int, jobs: int, executor: str, scheduler: str | None,
        client) -> tuple[float, float]:
    """One prepare as its own process, as the command runs (its interpreter start-up included, the same for all)."""
    script = out.parent / "run_prepare.py"
    script.write_text(RUN)
    c0, w0, t0 = children_cpu(), workers_cpu(client), time.perf_counter()
    subprocess.run([sys.executable, str(script), str(raw), str(out), str(per_shard), str(jobs), executor,
                    scheduler or ""], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return wall, children_cpu() - c0 + workers_cpu(client) - w0


def folder(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=192)
    ap.add_argument("--samples-per-shard", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of pause between variants (not timed)")
    args = ap.parse_args()
    import distributed

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_real_raw(work / "raw", args.clips)
        cluster = distributed.LocalCluster(n_workers=args.jobs, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = distributed.Client(cluster)
        variants = {"local --jobs N": ("local", None, None), "dask, local cluster started": ("dask", None, None),
                    "dask, running cluster": ("dask", cluster.scheduler_address, client)}
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        reference = None
        try:
            for r in range(args.repeat):
                for name, (executor, scheduler, cl) in variants.items():
                    out = work / name.replace(" ", "_").replace(",", "")
                    times[name].append(run(work / "raw", out, args.samples_per_shard, args.jobs, executor,
                                           scheduler, cl))
                    got = folder(out)
                    reference = reference or got
                    assert got == reference, f"{name}: output differs from the local run"
                    time.sleep(args.settle)  # let a stopped cluster's processes exit before the next variant
                    print(f"round {r + 1} {name}: {times[name][-1][0]:.2f} s wall, {times[name][-1][1]:.2f} s CPU",
                          flush=True)
        finally:
            client.close()
            cluster.close()
        shards = sum(n.endswith(".tar") for n in reference)
    print(f"\n{machine()}\n{args.clips} clips, {shards} shards of <= {args.samples_per_shard}, {args.jobs} workers, "
          f"medians of {args.repeat}\n")
    print("| variant | wall s | clips/s | CPU s | wall s a shard over local | CPU ms a shard over local |")
    print("|---|---|---|---|---|---|")
    base_wall = statistics.median(t[0] for t in times["local --jobs N"])
    base_cpu = statistics.median(t[1] for t in times["local --jobs N"])
    for name, ts in times.items():
        wall, cpu = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        print(f"| {name.replace('N', str(args.jobs))} | {wall:.2f} | {args.clips / wall:.1f} | {cpu:.2f} | "
              f"{(wall - base_wall) / shards:+.3f} | {1000 * (cpu - base_cpu) / shards:+.0f} |")


if __name__ == "__main__":
    main()
