"""Evaluation: accuracy, per-class accuracy and the confusion matrix over a split.

Under DDP each rank reads a disjoint part of the split (no padding, no duplicated samples) and the
confusion matrices are summed over ranks, so every sample is counted exactly once. `evaluate_checkpoint`
rebuilds a saved model from the configuration stored in its checkpoint (`scmrl-eval`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from avdata.errors import AvdataError

from avdata.shards.location import ShardsLocation, open_shards
from scmrl.data.batching import make_loader
from scmrl.data.failures import ShardReadError
from scmrl.data.config import StreamConfig
from scmrl.train.distributed import DistContext, all_reduce_sum, resolve_device, unwrap
from scmrl.data.transforms import BatchTransform, make_generator

__all__ = ["evaluate", "evaluate_checkpoint", "autocast_for", "summarize_confusion"]


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; nothing on CPU (float32 there, as the reference)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def summarize_confusion(conf: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    conf = conf.to("cpu", torch.int64)
    total = int(conf.sum())
    correct = int(conf.diag().sum())
    rows = conf.sum(1)
    per_class = [float(conf[i, i]) / int(rows[i]) if int(rows[i]) else None for i in range(conf.shape[0])]
    return {"accuracy": correct / total if total else float("nan"), "correct": correct, "samples": total,
            "per_class": per_class, "class_samples": [int(r) for r in rows], "confusion": conf.tolist(),
            "classes": list(classes)}


@torch.no_grad()
def evaluate(model: nn.Module, loader, transform: BatchTransform, classes: list[str], ctx: DistContext,
             seed: int = 42, amp: bool = True, tag: str = "eval") -> dict[str, Any]:
    """Accuracy and confusion over everything `loader` yields on every rank (summed over ranks)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    device = ctx.device
    k = len(classes)
    conf = torch.zeros(k * k, dtype=torch.int64, device=device)
    gen = make_generator(device, seed, tag, ctx.rank)  # only used for eval-time noise
    try:
        for batch in loader:
            audio, visual, labels = (t.to(device, non_blocking=True) for t in batch[:3])
            a, v = transform(audio, visual, False, gen)
            with autocast_for(device, amp):
                logits = net(a, v).logits
            pred = logits.argmax(1)
            conf += torch.bincount(labels * k + pred, minlength=k * k)
    except ShardReadError as exc:
        raise exc from None  # its message is already clean (ShardFailure): no worker traceback to chain
    finally:
        net.train(was_training)
    all_reduce_sum(conf, ctx)
    return summarize_confusion(conf.view(k, k), classes)


def evaluate_checkpoint(checkpoint: str, shards: str, split: str = "test", device: str = "auto",
                        batch_size: int = 128, workers: int = 0, noise_snr: float | None = None,
                        classes: list[str] | None = None) -> dict[str, Any]:
    """Evaluate a saved model (checkpoint.pt or best.pt) on a split of any shards of the same classes."""
    from scmrl.train.checkpoint import load_checkpoint
    from scmrl.train.checkpoint_fit import model_from_checkpoint, stored_run

    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    for key in ("model", "model_config", "train_config", "classes"):
        if key not in ckpt:
            raise AvdataError(f"{checkpoint}: not a scmrl-train checkpoint (no {key!r})")
    stored_classes, tcfg = stored_run(ckpt, checkpoint)
    source: ShardsLocation = open_shards(shards, classes)
    if source.classes != stored_classes:
        raise AvdataError(f"{shards}: classes {source.classes} differ from the checkpoint's {stored_classes}")
    if split in source.splits and source.num_samples(split) == 0:
        raise AvdataError(f"{shards}: the {split} split holds no samples (all its clips were skipped while "
                          "preparing; see manifest.json); choose another --split")
    mcfg, model = model_from_checkpoint(ckpt, checkpoint)
    model.to(dev)
    from scmrl.train.protocol import get_protocol

    proto = get_protocol(tcfg.get("protocol", "ours"))
    stream = StreamConfig(kind=source.kind, image_size=tcfg["image_size"], time_steps=mcfg.time_steps,
                          frames_per_step=tcfg["frames_per_step"], seed=tcfg["seed"], train=False,
                          spec_resize=proto.spec_resize)
    loader, _ = make_loader(source, split, stream, batch_size, workers, pin_memory=dev.type == "cuda")
    transform = BatchTransform(source.kind, mcfg.time_steps, tcfg["image_size"], noise_snr, "eval",
                               noise=proto.noise)
    res = evaluate(model, loader, transform, source.classes, DistContext(device=dev), seed=tcfg["seed"],
                   amp=tcfg.get("amp", True), tag=f"eval-{split}")
    res.update(split=split, checkpoint=str(checkpoint), epoch=ckpt.get("epoch"), noise_snr=noise_snr)
    return res
