"""Input-pipeline samples/s of two code trees, alternated in fresh processes on the same shards (medians).

For a before/after figure on a noisy machine: `bench_pipeline` of `benchmarks/input_pipeline.py` (training
mode, batch 128, shuffle buffer 1,000, 3 timed epochs after a warm-up one) is run from tree A and tree B in
turn, the order swapped every round, over one set of 512 synthetic CREMA-D-size samples. Also reports samples
per CPU-second (all processes of a run), steadier than wall time on a machine shared with other jobs.

    git archive <old commit> | tar -x -C /tmp/old
    python benchmarks/input_pipeline_ab.py --old /tmp/old --workers 2 --rounds 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scmrl.data.synthetic import make_synthetic_av_shards  # noqa: E402

# prints "samples/s samples-per-CPU-second"; the CPU time is that of the whole run (4 epochs, one of them the
# warm-up, plus worker start-up), this process and its DataLoader workers (reaped when the loader is freed)
CODE = """
import gc, resource, sys
sys.path.insert(0, "benchmarks")
from input_pipeline import bench_pipeline
def cpu():
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
c0 = cpu()
rate, n = bench_pipeline(sys.argv[1], int(sys.argv[2]), 128, 3)
gc.collect()
print(rate, n * 4 / 3 / (cpu() - c0))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True, help="the other code tree (e.g. the commit before a change)")
    p.add_argument("--new", type=Path, default=ROOT, help="this tree by default")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--samples", type=int, default=512)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pipeline-ab-"))
    try:
        shards = make_synthetic_av_shards(work / "s", a.samples, 0, 0, frame_shape=(256, 341), frames=3,
                                          spec_shape=(257, 150), per_shard=64, vary_frames=False, dataset="cremad")
        trees = {"old": a.old.resolve(), "new": a.new.resolve()}
        rates: dict[str, list[float]] = {"old": [], "new": []}
        per_cpu: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(a.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                tree = str(trees[name])
                res = subprocess.run([sys.executable, "-c", CODE, str(shards), str(a.workers)], cwd=tree,
                                     env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True, check=True)
                rate, cpu_rate = (float(x) for x in res.stdout.strip().splitlines()[-1].split())
                rates[name].append(rate)
                per_cpu[name].append(cpu_rate)
                print(f"round {r} {name}: {rate:.0f} samples/s, {cpu_rate:.0f} samples per CPU-second", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for what, vals in (("samples/s", rates), ("samples per CPU-second", per_cpu)):
        mo, mn = statistics.median(vals["old"]), statistics.median(vals["new"])
        print(f"| {a.workers} | {what} | {', '.join(f'{x:.0f}' for x in vals['old'])} (median {mo:.0f}) | "
              f"{', '.join(f'{x:.0f}' for x in vals['new'])} (median {mn:.0f}) | {mn / mo:.2f} |")


if __name__ == "__main__":
    main()
