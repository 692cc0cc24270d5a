"""The trainer's loader against a stock webdataset pipeline doing the same work, alternated in one run.

Shards: `avdata prepare cremad` with default options (JPEG frames, float32 spectrogram) of N clips made
from the six genuine CREMA-D videos (see `benchmarks/prepare_cremad.py --real`), or `--shards DIR`.
Both pipelines deliver the same training batches of the train split: (spectrogram float32 [B, 1, 128,
128], one stored frame per clip as its centre square uint8 [B, 256, 256, 3], labels [B]), batch 128 (the
trainer's default), shard order shuffled each epoch, samples through a shuffle buffer, full batches only,
`--workers` DataLoader workers (persistent, as the trainer's), one thread per worker, glibc's heap
thresholds raised as `scmrl-train` does on CPU (`scmrl.train.cpu_memory`; for both pipelines).

* ours: `scmrl.data.batching.make_loader` exactly as `scmrl-train` sets it up (default shuffle buffer);
* stock: what the webdataset documentation teaches, `wds.WebDataset(urls, shardshuffle=..)
  .shuffle(1000).decode("rgb8").map(pick frame, centre square, resize spectrogram).batched(B)` in a
  `wds.WebLoader`: `.decode` decodes every stored frame of a clip (PIL), then one is picked.

Each run is a fresh process (worker start-up included in its CPU time, not in its samples/s): one
warm-up epoch, then `--epochs` timed epochs; the two pipelines alternate, the order swapped every round,
and the medians are compared. Prints samples/s, samples per CPU-second (all processes of the run) and the
ratios, the time from the start of an epoch to its first batch, and a markdown row for BENCHMARKS.md.

    python benchmarks/loader_vs_webdataset.py --clips 1200 --workers 2 --rounds 5
    python benchmarks/loader_vs_webdataset.py --shards shards/cremad --workers 0
    git archive <commit> | tar -x -C /tmp/old   # and add --old /tmp/old: that tree's loader too
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `--child old --old TREE`: the loader of another code tree (an older commit), for before/after figures
_TREE = sys.argv[sys.argv.index("--old") + 1] if "--child" in sys.argv and "--old" in sys.argv else str(ROOT)
sys.path.insert(0, _TREE)

BATCH = 128
IMAGE = 128  # spectrogram side, the model's input side
SIDE = 256  # frame side handed to the device
SEED = 42


def ours(shards: str, workers: int, epochs: int):
    """Epoch iterables of the project's loader, as scmrl-train builds it (scmrl.train.loaders)."""
    from avdata.shards.location import open_shards
    from scmrl.data.batching import make_loader
    from scmrl.data.config import StreamConfig

    cfg = StreamConfig(kind="static", image_size=IMAGE, time_steps=4, seed=SEED, train=True)
    loader, ds = make_loader(open_shards(shards), "train", cfg, BATCH, workers)
    for e in range(epochs):
        ds.set_epoch(e)
        yield loader


def stock(shards: str, workers: int, epochs: int):
    """Epoch iterables of a stock webdataset pipeline producing the same batches."""
    import random

    import cv2
    import numpy as np
    import torch
    import webdataset as wds

    urls = sorted(str(p) for p in Path(shards).glob("train-*.tar"))

    def to_tensors(s: dict) -> tuple:
        frames = [s[k] for k in sorted(k for k in s if k.endswith(".jpg"))]
        frame = frames[random.randrange(len(frames))]
        h, w = frame.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        sq = np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side])
        if side != SIDE:
            sq = cv2.resize(sq, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        spec = cv2.resize(s["spec.npy"].astype(np.float32), (IMAGE, IMAGE), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(spec)[None], torch.from_numpy(sq), int(s["cls"])

    def init(_: int) -> None:
        torch.set_num_threads(1)
        cv2.setNumThreads(1)

    ds = (wds.WebDataset(urls, shardshuffle=len(urls), seed=SEED, empty_check=False)
          .shuffle(1000).decode("rgb8").map(to_tensors).batched(BATCH, partial=False))
    loader = wds.WebLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                           worker_init_fn=init if workers else None)
    for _ in range(epochs):
        yield loader


def child(kind: str, shards: str, workers: int, epochs: int) -> None:
    """One run: warm-up epoch + `epochs` timed ones; prints 'samples/s samples-per-CPU-second'."""
    import gc
    import resource

    import torch

    torch.set_num_threads(1)
    # as scmrl-train on CPU: freed large blocks stay in the heap (scmrl.train.cpu_memory); in both runs, so
    # that stock's batches get the same allocator
    from scmrl.train.cpu_memory import keep_freed_memory

    keep_freed_memory()

    def cpu() -> float:
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))

    c0 = cpu()
    make = stock if kind == "stock" else ours
    n, seconds, firsts = 0, 0.0, []
    for e, loader in enumerate(make(shards, workers, epochs + 1)):
        t0 = time.perf_counter()
        m, first = 0, None
        for batch in loader:
            m += len(batch[2])
            first = time.perf_counter() - t0 if first is None else first
        if e:
            n, seconds = n + m, seconds + time.perf_counter() - t0
            firsts.append(first)
    del loader
    gc.collect()
    time.sleep(0.5)  # let persistent workers exit, so their CPU time is counted
    print(f"{n / seconds:.1f} {n * (epochs + 1) / epochs / (cpu() - c0):.1f} {statistics.median(firsts):.3f}")


def prepare_real(clips: int, work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from prepare_cremad import prepare_real_shards

    return prepare_real_shards(clips, work)


def run(kind: str, shards: Path, workers: int, epochs: int, old: str | None) -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--shards", str(shards),
                          "--workers", str(workers), "--epochs", str(epochs)]
                         + (["--old", old] if kind == "old" else []),
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    rate, per_cpu, first = out.split()
    return float(rate), float(per_cpu), float(first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1200, help="real-copy CREMA-D clips to prepare")
    ap.add_argument("--shards", help="use these prepared CREMA-D shards instead")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--old", help="also time the loader of this code tree (e.g. an older commit)")
    ap.add_argument("--child", choices=["ours", "stock", "old"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.shards, args.workers, args.epochs)
        return
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        shards = Path(args.shards) if args.shards else prepare_real(args.clips, Path(tmp))
        kinds = ["ours", "stock"] + (["old"] if args.old else [])
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                results[kind].append(run(kind, shards, args.workers, args.epochs, args.old))
                rate, per_cpu, first = results[kind][-1]
                print(f"round {r + 1} {kind:5s}: {rate:7.1f} samples/s, {per_cpu:6.1f} per CPU-second, "
                      f"first batch after {first:.2f} s", flush=True)
    med = {k: tuple(statistics.median(v[i] for v in vals) for i in range(3)) for k, vals in results.items()}
    ratio, cpu_ratio = med["ours"][0] / med["stock"][0], med["ours"][1] / med["stock"][1]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    for k in kinds:
        print(f"{k:5s}: {med[k][0]:.1f} samples/s, {med[k][1]:.1f} per CPU-second, first batch of an epoch after "
              f"{med[k][2]:.2f} s (medians of {args.rounds})")
    print(f"ratio ours / stock: {ratio:.2f}x samples/s, {cpu_ratio:.2f}x per CPU-second")
    if args.old:
        print(f"ours / old ({args.old}): {med['ours'][0] / med['old'][0]:.2f}x samples/s, "
              f"{med['ours'][1] / med['old'][1]:.2f}x per CPU-second")
    print(f"| {args.workers} | {med['ours'][0]:.0f} | {med['stock'][0]:.0f} | **{ratio:.2f}x** | {cpu_ratio:.2f}x | "
          f"{med['ours'][2]:.2f} / {med['stock'][2]:.2f} s |")


if __name__ == "__main__":
    main()
