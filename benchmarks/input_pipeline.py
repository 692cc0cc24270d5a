"""How fast the input pipeline delivers training batches, against how fast the model consumes them.

Three measurements on synthetic shards in the CREMA-D format with realistic sizes (frames uint8
[3, 256, 341, 3], the reference spectrogram float32 [257, ~150]; about 0.94 MB per sample):

  (1) pipeline: samples/s of `scmrl.data.batching.make_loader` (training mode: shard split, shuffle buffer, seeded
      frame pick, centre square, spectrogram resize to 128, collate to fixed-size tensors, full batches)
      from the shards on disk with N DataLoader workers (default 2), no model. The shards were just
      written, so they are read from the page cache: this measures CPU work, not the disk;
  (2) device transforms: samples/s of the batched RandomResizedCrop + flip + normalisation + repetition
      over T on the current device (host-to-device copy included);
  (3) model: forward + loss + backward + AdamW step samples/s of the reference S-CMRL configuration
      (C=256, 16 heads, 128 x 128, T=4) on the current device; bf16 autocast on CUDA. On CPU a small batch
      (default 8) is used and the table says so.

Prints each figure and a markdown table row for BENCHMARKS.md.

    python benchmarks/input_pipeline.py                     # 2 workers, device auto
    python benchmarks/input_pipeline.py --samples 1024 --workers 4 --device cuda --model-batch 128
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from scmrl.model.config import ModelConfig  # noqa: E402
from avdata.shards.location import open_shards  # noqa: E402
from scmrl.data.batching import collate, make_loader  # noqa: E402
from scmrl.data.config import StreamConfig  # noqa: E402
from scmrl.train.distributed import resolve_device  # noqa: E402
from scmrl.train.evaluate import autocast_for  # noqa: E402
from scmrl.model.losses import compute_loss  # noqa: E402
from scmrl.model.models import build_model  # noqa: E402
from scmrl.data.synthetic import make_synthetic_av_shards  # noqa: E402
from scmrl.data.transforms import BatchTransform, make_generator  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_pipeline(shards: Path, workers: int, batch: int, epochs: int) -> tuple[float, int]:
    src = open_shards(shards)
    cfg = StreamConfig(kind="static", image_size=128, time_steps=4, seed=42, train=True, shuffle_buffer=1000)
    loader, ds = make_loader(src, "train", cfg, batch, workers)
    total, seconds = 0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up (worker start-up and the page cache)
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(len(b[2]) for b in loader)
        if epoch:
            total += n
            seconds += time.perf_counter() - t0
    return total / seconds, total


def bench_in_process(shards: Path, batch: int) -> float:
    """Samples/s of the same work in this process with no DataLoader (what one worker could do alone)."""
    src = open_shards(shards)
    cfg = StreamConfig(kind="static", image_size=128, time_steps=4, seed=42, train=True, shuffle_buffer=1000)
    _, ds = make_loader(src, "train", cfg, batch, 0)
    rate = 0.0
    for epoch in (1, 2):  # the first pass warms the page cache
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        held, n = [], 0
        for sample in ds.iter_slot():
            held.append(sample)
            n += 1
            if len(held) == batch:
                collate(held)
                held = []
        rate = n / (time.perf_counter() - t0)
    return rate


def bench_transforms(device: torch.device, batch: int, steps: int) -> float:
    visual = torch.randint(0, 256, (batch, 256, 256, 3), dtype=torch.uint8)
    audio = torch.randn(batch, 1, 128, 128)
    if device.type == "cuda":
        visual, audio = visual.pin_memory(), audio.pin_memory()
    tf = BatchTransform("static", 4, 128)
    gen = make_generator(device, 0)
    for i in range(steps + 2):
        if i == 2:
            _sync(device)
            t0 = time.perf_counter()
        a, v = tf(audio.to(device, non_blocking=True), visual.to(device, non_blocking=True), True, gen)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def bench_model(device: torch.device, batch: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=6)  # the reference CREMA-D S-CMRL: C=256, 16 heads, 128 x 128, T=4
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-4, eps=1e-8, weight_decay=1e-4)
    # static inputs repeated over T, as the device transforms hand them to the model (expanded views)
    a = torch.randn(batch, 1, 128, 128, device=device).expand(cfg.time_steps, -1, -1, -1, -1)
    v = torch.randn(batch, 3, 128, 128, device=device).expand(cfg.time_steps, -1, -1, -1, -1)
    y = torch.randint(0, 6, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast_for(device):
            out = model(a, v)
        loss, _ = compute_loss(cfg, out, y)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=512, help="training samples in the synthetic shards")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--batch", type=int, default=128, help="loader batch size")
    p.add_argument("--epochs", type=int, default=2, help="timed passes over the shards (after one warm-up pass)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (transforms and model)")
    p.add_argument("--model-batch", type=int, default=None, help="model batch [default: 128 on CUDA, 8 on CPU]")
    p.add_argument("--model-steps", type=int, default=None, help="timed model steps [default: 20 CUDA, 3 CPU]")
    p.add_argument("--skip-model", action="store_true", help="measure the input pipeline only")
    p.add_argument("--dir", type=Path, default=None, help="where to write the shards (default: a temp folder)")
    args = p.parse_args()

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    model_batch = args.model_batch or (128 if cuda else 8)
    model_steps = args.model_steps or (20 if cuda else 3)
    work = args.dir or Path(tempfile.mkdtemp(prefix="scmrl-bench-"))
    try:
        t0 = time.perf_counter()
        shards = make_synthetic_av_shards(work / "shards", args.samples, 0, 0, frame_shape=(256, 341), frames=3,
                                          spec_shape=(257, 150), per_shard=64, vary_frames=False, dataset="cremad")
        size = sum(f.stat().st_size for f in shards.glob("*.tar"))
        print(f"shards: {args.samples} samples, {size / 2**20:.0f} MiB, written in {time.perf_counter() - t0:.1f} s",
              flush=True)
        pipe, n = bench_pipeline(shards, args.workers, args.batch, args.epochs)
        print(f"(1) input pipeline, {args.workers} workers, batch {args.batch}: {pipe:.0f} samples/s "
              f"({n} samples timed, {os.cpu_count()} CPU cores)", flush=True)
        alone = bench_in_process(shards, args.batch)
        print(f"    the same work in one process without a DataLoader: {alone:.0f} samples/s", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.skip_model:
        return
    tf = bench_transforms(device, args.batch, 10 if cuda else 3)
    print(f"(2) device transforms on {device}, batch {args.batch}: {tf:.0f} samples/s", flush=True)
    model = bench_model(device, model_batch, model_steps, 3 if cuda else 1)
    dev_name = (torch.cuda.get_device_name(device) if cuda
                else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    note = "bf16 autocast" if cuda else "float32; CPU, so a small batch"
    print(f"(3) S-CMRL reference config fwd+bwd on {dev_name}, batch {model_batch} ({note}): {model:.1f} samples/s",
          flush=True)
    verdict = "input-bound" if pipe < model else "model-bound"
    print()
    print("| device | pipeline samples/s (workers) | device transforms samples/s | model fwd+bwd samples/s (batch) "
          "| pipeline / model |")
    print("|---|---|---|---|---|")
    print(f"| {dev_name} | {pipe:.0f} ({args.workers}) | {tf:.0f} | {model:.1f} ({model_batch}, {note}) "
          f"| {pipe / model:.1f}x ({verdict}) |")


if __name__ == "__main__":
    main()
