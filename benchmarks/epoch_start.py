"""How long a training epoch waits for its first batch after an evaluation, with the next epoch's iterator
made before the evaluation (what `scmrl-train` does) or when the first batch is asked for.

The evaluation is a pause in the main process (`--pause` seconds of sleep: the CPU idle, as while a GPU
evaluates). Shards: real-copy CREMA-D, default options (see `benchmarks/loader_vs_webdataset.py`), or
`--shards DIR`; the trainer's training loader (`scmrl.data.batching.make_loader`, batch 128, `--workers`).
The two ways alternate epoch by epoch on the same loader; medians of `--epochs` each.

    python benchmarks/epoch_start.py --clips 1200 --workers 2 --pause 1.0 --epochs 6
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1200, help="real-copy CREMA-D clips to prepare")
    ap.add_argument("--shards", help="use these prepared CREMA-D shards instead")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pause", type=float, default=1.0, help="seconds of 'evaluation' between epochs")
    ap.add_argument("--epochs", type=int, default=6, help="epochs timed for each way")
    args = ap.parse_args()

    import torch

    from avdata.shards.location import open_shards
    from loader_vs_webdataset import BATCH, IMAGE, SEED, prepare_real
    from scmrl.data.batching import make_loader
    from scmrl.data.config import StreamConfig
    from scmrl.train.cpu_memory import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(args.shards) if args.shards else prepare_real(args.clips, Path(tmp))
        cfg = StreamConfig(kind="static", image_size=IMAGE, time_steps=4, seed=SEED, train=True)
        loader, ds = make_loader(open_shards(shards), "train", cfg, BATCH, args.workers)
        ds.set_epoch(0)
        for _ in loader:  # warm-up: workers started, page cache filled
            pass
        waits: dict[str, list[float]] = {"made before the pause": [], "made at the first batch": []}
        epoch_s: dict[str, list[float]] = {k: [] for k in waits}
        for e in range(1, 2 * args.epochs + 1):
            early = e % 2 == 1
            if early:
                ds.set_epoch(e)
                batches = iter(loader)
                time.sleep(args.pause)
            else:
                time.sleep(args.pause)
                ds.set_epoch(e)
                batches = iter(loader)
            t0 = time.perf_counter()
            next(batches)
            first = time.perf_counter() - t0
            for _ in batches:
                pass
            key = "made before the pause" if early else "made at the first batch"
            waits[key].append(first)
            epoch_s[key].append(time.perf_counter() - t0)
        n = ds.rank_samples(0, max(1, args.workers))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {args.workers} workers, batch {BATCH}, "
          f"{n} training samples an epoch, pause {args.pause} s; medians of {args.epochs} epochs each")
    print("\n| next epoch's iterator | wait for the first batch (s) | epoch after the pause (s) |\n|---|---|---|")
    for k in waits:
        print(f"| {k} | {statistics.median(waits[k]):.3f} | {statistics.median(epoch_s[k]):.2f} |")


if __name__ == "__main__":
    main()
