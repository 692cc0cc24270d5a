"""Test accuracy after the same number of training steps: the old data order against the new one.

On generated MNISTDVS-NTIDIGITS-format data (`avdata.datasets.ziputil`: real AEDAT zips and an N-TIDIGITS18 HDF5 file,
prepared by the real recipe), CPU. Each variant prepares the same raw data and trains the same small S-CMRL
for the same steps, with its own code:

  old: a copy of the code before shuffled shards and mixed batches (`--old-tree`, e.g. made with
       `git archive <commit> | tar -x -C DIR`): shards written class by class, a shuffle buffer split among
       the DataLoader workers, each batch from one worker;
  new: this tree: shards in seeded random order (marked so in the manifest), each DataLoader worker
       batching its own samples through a buffer of the whole `--shuffle-buffer` size.

The shards are cut at `--samples-per-shard` (default 60 = two classes' train samples, as the recipe's 1,000
per shard holds about two classes of the reference's 500 per class) and the buffer is `--shuffle-buffer`
(default 64, about the old default 1,000 relative to the reference's 4,500 train samples), the same for
both. Prints each run's test accuracy and a markdown table for BENCHMARKS.md.

    python benchmarks/data_order_accuracy.py --old-tree /tmp/old --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5  # noqa: E402


def _cli(tree: Path, module: str) -> str:
    """The import path of a CLI module in `tree`: `avdata.cli.*` (installed by setup.py) or, in trees from
    before that layout, the top-level `cli.*`."""
    return f"avdata.cli.{module}" if (tree / "setup.py").exists() else f"cli.{module}"


def _run(tree: Path, module_call: str, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "AVDATA_NO_PROGRESS": "1"}
    code = f"import sys; sys.argv = ['x'] + sys.argv[1:]; {module_call}"
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{module_call} {' '.join(args)} failed in {tree}:\n"
                         f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def run_variant(tree: Path, raw: Path, work: Path, a: argparse.Namespace, seed: int) -> float:
    shards = work / "shards"
    if not (shards / "manifest.json").exists():
        _run(tree, f"from {_cli(tree, 'avdata_app')} import main; main()",
             ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(shards), "--bins", "4",
              "--per-class", str(a.per_class), "--val-fraction", "0", "--samples-per-shard", str(a.samples_per_shard)])
    out = work / f"run-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    train_samples = 10 * (a.per_class // 2)
    epochs = -(-a.steps * a.batch // (train_samples - a.workers * a.batch))
    _run(tree, f"from {_cli(tree, 'train_app')} import main_train; main_train()",
         ["--shards", str(shards), "--out", str(out), "--device", "cpu", "--workers", str(a.workers),
          "--batch-size", str(a.batch), "--max-steps", str(a.steps), "--epochs", str(epochs),
          "--eval-every", "1000", "--lr", "1e-2", "--warmup-epochs", "1", "--embed-dim", "32", "--heads", "4",
          "--shuffle-buffer", str(a.shuffle_buffer), "--seed", str(seed)])
    res = json.loads((out / "results.json").read_text())
    return float(res["test_acc_last_epoch"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-tree", type=Path, required=True, help="a copy of the code before the change")
    p.add_argument("--per-class", type=int, default=60, help="MNIST-DVS recordings per class (half train)")
    p.add_argument("--samples-per-shard", type=int, default=60)
    p.add_argument("--shuffle-buffer", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-order-"))
    try:
        raw = work / "raw"
        make_mnistdvs_raw(raw, per_class=a.per_class, scales=(16,), n_events=1000)
        make_ntidigits_h5(raw, per_class=8)
        acc: dict[str, list[float]] = {"old": [], "new": []}
        for seed in a.seeds:  # alternate the variants
            for name, tree in (("old", a.old_tree.resolve()), ("new", ROOT)):
                t0 = time.perf_counter()
                acc[name].append(run_variant(tree, raw, work / name, a, seed))
                print(f"{name} seed {seed}: test accuracy {acc[name][-1]:.3f} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"| stream | test accuracy after {a.steps} steps (seeds {', '.join(map(str, a.seeds))}) | median |")
    print("|---|---|---|")
    for name, label in (("old", "old: class-ordered shards, per-worker buffers"),
                        ("new", "new: shuffled shards, a full-size buffer in each worker")):
        print(f"| {label} | {', '.join(f'{x:.3f}' for x in acc[name])} | {statistics.median(acc[name]):.3f} |")


if __name__ == "__main__":
    main()
