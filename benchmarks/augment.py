"""Per-sample cost of loading a training sample against augmenting it, on the CPU, this tree against another.

Shards: `avdata prepare cremad` (default options: JPEG frames, float32 spectrogram) of N clips made from
the six genuine CREMA-D videos (`benchmarks/prepare_cremad.py`), or `--shards DIR`. Each measurement is a
fresh process that runs one code tree (`--baseline TREE`, e.g. `git archive 0bb23b4 | tar -x -C TREE`,
against this one), with `--threads` torch threads:

* load: ms per sample of `scmrl.data.batching.make_loader` (training, 0 workers: read the shard, decode
  the JPEG frame and the spectrogram, shuffle buffer, collate), after one warm-up epoch;
* augment: ms per sample of `BatchTransform("static", T=4, 128)` in training mode (RandomResizedCrop,
  flip, normalisation, repetition over T) on those batches, as `scmrl.train.epoch` applies it on the CPU.

With `--workers 0,2`, the data side as the CPU trainer runs it instead: samples/s of whole epochs of
the loader with that many DataLoader workers, each batch augmented in the main process (batch 16,
`--threads` main-process threads; the issue's comparison with the authors' data path).

With `--step`, what handing the model the static inputs expanded over T (no copy) saves: the CPU training
step (forward, loss, backward, AdamW) of the reference S-CMRL configuration (C 256, T 4, 128 x 128),
batch 8, on inputs made contiguous (as the trainer handed them before) against expanded ones (one tree).

The two trees alternate, the order swapped every round; the medians are printed with the load average,
and a markdown table for BENCHMARKS.md.

    python benchmarks/augment.py --baseline /tmp/aug-base --rounds 3
    python benchmarks/augment.py --shards /tmp/shards --batches 16,128 --threads 1,2
    python benchmarks/augment.py --shards /tmp/shards --baseline /tmp/aug-base --workers 0,2 --threads 2
    python benchmarks/augment.py --step --rounds 3
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
# `--child --tree TREE`: that code tree's loader and transforms
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--child" in sys.argv else str(ROOT)
sys.path.insert(0, _TREE)


def child(shards: str, batch: int, threads: int, samples: int) -> None:
    """Prints 'load-ms-per-sample augment-ms-per-sample' for one tree, after warm-ups."""
    import torch

    from avdata.shards.location import open_shards
    from scmrl.data.batching import make_loader
    from scmrl.data.config import StreamConfig
    from scmrl.data.transforms import BatchTransform, make_generator

    torch.set_num_threads(threads)
    cfg = StreamConfig(kind="static", image_size=128, time_steps=4, seed=42, train=True)
    loader, ds = make_loader(open_shards(shards), "train", cfg, batch, 0)
    batches: list = []
    n, seconds, epoch = 0, 0.0, 0
    while n < samples or epoch < 2:
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        got = list(loader)
        if epoch:  # epoch 0 warms the page cache
            seconds += time.perf_counter() - t0
            n += sum(len(b[2]) for b in got)
            batches.extend(got)
        epoch += 1
    load_ms = 1e3 * seconds / n
    tf = BatchTransform("static", 4, 128)
    gen = make_generator("cpu", 42, "train", 0, 0)
    tf(batches[0][0], batches[0][1], True, gen)  # warm-up
    t0 = time.perf_counter()
    for audio, visual, _labels in batches:
        tf(audio, visual, True, gen)
    aug_ms = 1e3 * (time.perf_counter() - t0) / n
    print(f"{load_ms:.4f} {aug_ms:.4f}")


def child_side(shards: str, batch: int, threads: int, workers: int, samples: int) -> None:
    """Prints the samples/s of loading + augmenting whole epochs (after a warm-up epoch)."""
    import torch

    from avdata.shards.location import open_shards
    from scmrl.data.batching import make_loader
    from scmrl.data.config import StreamConfig
    from scmrl.data.transforms import BatchTransform, make_generator

    torch.set_num_threads(threads)
    cfg = StreamConfig(kind="static", image_size=128, time_steps=4, seed=42, train=True)
    loader, ds = make_loader(open_shards(shards), "train", cfg, batch, workers)
    tf = BatchTransform("static", 4, 128)
    n, seconds, epoch = 0, 0.0, 0
    while n < samples or epoch < 2:
        ds.set_epoch(epoch)
        gen = make_generator("cpu", 42, "train", epoch, 0)
        t0 = time.perf_counter()
        m = 0
        for audio, visual, labels in loader:
            tf(audio, visual, True, gen)
            m += len(labels)
        if epoch:  # epoch 0 starts the workers and warms the page cache
            seconds += time.perf_counter() - t0
            n += m
        epoch += 1
    print(f"{n / seconds:.2f}")


def child_step(dense: bool, steps: int = 3) -> None:
    """Prints the median ms of a CPU training step of the reference configuration, batch 8."""
    import torch

    from scmrl.model.config import ModelConfig
    from scmrl.model.losses import compute_loss
    from scmrl.model.models import build_model
    from scmrl.train.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as scmrl-train on CPU
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=6)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-4, eps=1e-8, weight_decay=1e-4)
    a = torch.randn(8, 1, 128, 128).expand(cfg.time_steps, -1, -1, -1, -1)
    v = torch.randn(8, 3, 128, 128).expand(cfg.time_steps, -1, -1, -1, -1)
    y = torch.randint(0, 6, (8,))
    times = []
    for i in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        ins = (a.contiguous(), v.contiguous()) if dense else (a, v)
        opt.zero_grad(set_to_none=True)
        loss, _ = compute_loss(cfg, model(*ins), y)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    print(f"{1e3 * statistics.median(times):.1f}")


def step_ab(rounds: int) -> None:
    """Dense against expanded inputs, alternated in fresh processes; medians."""
    res: dict[str, list[float]] = {"dense": [], "expanded": []}
    loads = []
    for r in range(rounds):
        for name in (list(res) if r % 2 == 0 else list(res)[::-1]):
            out = subprocess.run([sys.executable, __file__, "--child", "--tree", str(ROOT), "--step"]
                                 + (["--dense"] if name == "dense" else []), check=True, capture_output=True,
                                 text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
            res[name].append(float(out))
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1} {name:8s}: {res[name][-1]:.0f} ms a step", flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\nload average {min(loads):.1f}-{max(loads):.1f}; medians of {rounds}: dense {med['dense']:.0f} ms, "
          f"expanded {med['expanded']:.0f} ms a step ({med['dense'] / med['expanded']:.2f}x)")


def prepare_real(clips: int, work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from prepare_cremad import prepare_real_shards

    return prepare_real_shards(clips, work)


def run(tree: str, shards: Path, batch: int, threads: int, samples: int,
        workers: int | None = None) -> tuple[float, ...]:
    out = subprocess.run([sys.executable, __file__, "--child", "--tree", tree, "--shards", str(shards),
                          "--batches", str(batch), "--threads", str(threads), "--samples", str(samples)]
                         + (["--workers", str(workers)] if workers is not None else []),
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    return tuple(float(x) for x in out.split())


def data_side(args: argparse.Namespace, trees: dict[str, str], shards: Path) -> None:
    """Samples/s of loader + augmentation per worker count, the trees alternated; medians and a table."""
    threads = int(args.threads.split(",")[0])
    loads, rows = [], []
    for workers in (int(w) for w in args.workers.split(",")):
        res: dict[str, list[float]] = {k: [] for k in trees}
        for r in range(args.rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                res[name].append(run(trees[name], shards, 16, threads, args.samples, workers)[0])
                loads.append(os.getloadavg()[0])
                print(f"workers {workers} round {r + 1} {name:8s}: {res[name][-1]:.1f} samples/s", flush=True)
        rows.append((workers, {k: statistics.median(v) for k, v in res.items()}))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average during "
          f"the runs {min(loads):.1f}-{max(loads):.1f}; batch 16, {threads} main-process threads; medians of "
          f"{args.rounds} fresh processes")
    print("| workers | " + " | ".join(f"{k} samples/s" for k in trees) + (" | this / baseline |" if len(trees) > 1
                                                                        else " |"))
    print("|---|" + "---|" * len(trees) + ("---|" if len(trees) > 1 else ""))
    for workers, med in rows:
        cells = " | ".join(f"{med[k]:.0f}" for k in trees)
        ratio = f" | {med['this'] / med['baseline']:.2f}x |" if len(trees) > 1 else " |"
        print(f"| {workers} | {cells}{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=600, help="real-copy CREMA-D clips to prepare (600: 292 train)")
    ap.add_argument("--shards", help="use these prepared CREMA-D shards instead")
    ap.add_argument("--baseline", help="code tree to compare against (e.g. an older commit's)")
    ap.add_argument("--batches", default="16,128", help="batch sizes, comma-separated")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    ap.add_argument("--samples", type=int, default=512, help="timed samples per run (whole epochs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", help="measure the data side (loader + augmentation) with these worker counts")
    ap.add_argument("--step", action="store_true", help="dense against expanded inputs in the CPU training step")
    ap.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child and args.step:
        child_step(args.dense)
        return
    if args.step:
        step_ab(args.rounds)
        return
    if args.child and args.workers is not None:
        child_side(args.shards, int(args.batches), int(args.threads), int(args.workers), args.samples)
        return
    if args.child:
        child(args.shards, int(args.batches), int(args.threads), args.samples)
        return
    trees = {"this": str(ROOT)} | ({"baseline": args.baseline} if args.baseline else {})
    loads = []
    with tempfile.TemporaryDirectory(prefix="augment-bench-") as tmp:
        shards = Path(args.shards) if args.shards else prepare_real(args.clips, Path(tmp))
        if args.workers is not None:
            data_side(args, trees, shards)
            return
        rows = []
        for batch in (int(b) for b in args.batches.split(",")):
            for threads in (int(t) for t in args.threads.split(",")):
                res: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
                for r in range(args.rounds):
                    for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                        res[name].append(run(trees[name], shards, batch, threads, args.samples))
                        loads.append(os.getloadavg()[0])
                        print(f"batch {batch} threads {threads} round {r + 1} {name:8s}: load "
                              f"{res[name][-1][0]:.3f} ms/sample, augment {res[name][-1][1]:.3f} ms/sample", flush=True)
                med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
                       for k, vals in res.items()}
                rows.append((batch, threads, med))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load average during the runs {min(loads):.1f}-{max(loads):.1f}; "
          f"medians of {args.rounds} fresh processes per cell")
    base = "baseline" in trees
    print("| batch | threads | load ms/sample" + (" (baseline -> this)" if base else "") + " | augment ms/sample"
          + (" (baseline -> this)" if base else "") + " | augment / load" + (" | augment speed-up |" if base else " |"))
    print("|---|---|---|---|---|" + ("---|" if base else ""))
    for batch, threads, med in rows:
        this = med["this"]
        if base:
            old = med["baseline"]
            print(f"| {batch} | {threads} | {old[0]:.2f} -> {this[0]:.2f} | {old[1]:.2f} -> {this[1]:.3f} | "
                  f"{old[1] / old[0]:.2f} -> {this[1] / this[0]:.3f} | {old[1] / this[1]:.1f}x |")
        else:
            print(f"| {batch} | {threads} | {this[0]:.2f} | {this[1]:.3f} | {this[1] / this[0]:.3f} |")


if __name__ == "__main__":
    main()
