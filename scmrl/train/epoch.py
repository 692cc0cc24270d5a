"""One training epoch: optimizer steps over the loader, with the learning rate set per step, and the
epoch's metrics summed over ranks. Under DDP, ranks whose share holds fewer batches join early
(`torch.distributed.algorithms.Join`) instead of hanging the others."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from scmrl.data.failures import ShardReadError
from scmrl.data.transforms import BatchTransform, make_generator
from scmrl.model.config import ModelConfig
from scmrl.model.losses import compute_loss
from scmrl.train.config import TrainConfig
from scmrl.train.distributed import DistContext, all_reduce_sum, gather_sums
from scmrl.train.evaluate import autocast_for
from scmrl.train.loaders import RECORD_KEYS_ENV
from scmrl.train.schedule import WarmupCosine

__all__ = ["train_epoch", "loss_probe"]


def loss_probe(mcfg: ModelConfig, device: torch.device) -> Callable[[torch.nn.Module], torch.Tensor]:
    """A tiny forward pass to the loss, for DDP's check of parameters that get no gradient."""
    def run(model: torch.nn.Module) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        t = mcfg.time_steps
        a = torch.randn(t, 2, mcfg.audio_channels, mcfg.audio_size, mcfg.audio_size, generator=g).to(device)
        v = torch.randn(t, 2, mcfg.visual_channels, mcfg.visual_size, mcfg.visual_size, generator=g).to(device)
        labels = torch.tensor([0, min(1, mcfg.num_classes - 1)], device=device)
        return compute_loss(mcfg, model(a, v), labels)[0]
    return run


def train_epoch(ddp_model, opt, sched: WarmupCosine, batches, transform: BatchTransform, mcfg: ModelConfig,
                cfg: TrainConfig, ctx: DistContext, epoch: int, steps: int, cap: int, progress) -> dict[str, Any]:
    """Train for `cap` of the epoch's `steps` batches (`batches`: the epoch's iterator of the training
    loader); the epoch's row of metrics (summed over ranks)."""
    device = ctx.device
    ddp_model.train()
    gen = make_generator(device, cfg.seed, "train", epoch, ctx.rank)
    # static crops and flips drawn on the host: the same on every device, and no device sync per batch
    crops = make_generator("cpu", cfg.seed, "train-crops", epoch, ctx.rank)
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # samples, correct
    # the loss parts times the batch size, summed on the device in float64 (the same arithmetic as summing
    # them on the host, without a device-to-host wait every step); read once, after the epoch
    part_names: list[str] = []
    part_sums: torch.Tensor | None = None
    lr = sched.lr_at_step(epoch, 0, steps)
    task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=cap)
    join = contextlib.nullcontext()
    if ctx.distributed:
        from torch.distributed.algorithms.join import Join

        join = Join([ddp_model])
    record = os.environ.get(RECORD_KEYS_ENV)
    keys: list[str] = []
    t0 = time.perf_counter()
    try:
        with join:
            for i, batch in enumerate(batches):
                if i >= cap:
                    break
                lr = sched.lr_at_step(epoch, i, steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                audio, visual, labels = (t.to(device, non_blocking=True) for t in batch[:3])
                if record and len(batch) > 3:
                    keys.extend(batch[3])
                a, v = transform(audio, visual, True, gen, crops)
                opt.zero_grad(set_to_none=True)
                with autocast_for(device, cfg.amp):
                    outp = ddp_model(a, v)
                loss, parts = compute_loss(mcfg, outp, labels)
                loss.backward()
                opt.step()
                n = labels.numel()
                counts[0] += n
                counts[1] += (outp.logits.detach().argmax(1) == labels).sum()
                step_sums = torch.stack(list(parts.values())).double() * n
                part_names = list(parts)
                part_sums = step_sums if part_sums is None else part_sums + step_sums
                progress.advance(task)
    except ShardReadError as exc:
        raise exc from None  # its message is already clean (ShardFailure): no worker traceback to chain
    seconds = time.perf_counter() - t0
    progress.remove_task(task)
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        (Path(record) / f"keys-epoch{epoch + 1}-rank{ctx.rank}.txt").write_text("".join(k + "\n" for k in keys))
    all_reduce_sum(counts, ctx)
    sums = gather_sums(dict(zip(part_names, part_sums.tolist())) if part_sums is not None else {}, ctx)
    seen, correct = int(counts[0]), int(counts[1])
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    for k in sorted(sums):
        row[f"train_{k}"] = sums[k] / max(1, seen)
    row.update(train_acc=correct / max(1, seen), train_samples=seen, samples_per_s=seen / max(seconds, 1e-9),
               seconds=seconds)
    return row
