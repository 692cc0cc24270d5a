"""Accuracy and confusion matrix over a split; every sample counted once across DDP ranks."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


@torch.no_grad()
def evaluate(model, loader, kind: str, mcfg, cfg, device: torch.device, world: int = 1) -> dict[str, Any]:
    from .train import to_inputs

    model = getattr(model, "module", model)  # no DDP collectives while ranks hold different sample counts
    was_training = model.training
    model.eval()
    k = mcfg.num_classes
    conf = torch.zeros(k, k, dtype=torch.float64, device=device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for batch in loader:
        a, v, labels = to_inputs(batch, kind, mcfg, cfg, device, False, gen)
        with autocast:
            pred = model(a, v).logits.argmax(1)
        conf.index_put_((labels, pred), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
    if world > 1:
        dist.all_reduce(conf)
    model.train(was_training)
    total = float(conf.sum())
    per_class = (conf.diag() / conf.sum(1).clamp(min=1)).tolist()
    return {"accuracy": float(conf.diag().sum()) / max(total, 1.0), "samples": int(total),
            "per_class": per_class, "confusion": conf.long().tolist()}


def evaluate_checkpoint(checkpoint: str, shards: str, split: str = "test", device: str = "auto",
                        batch_size: int = 128, workers: int = 0) -> dict[str, Any]:
    """Evaluate a saved model (its configs are stored in the checkpoint) on any split of any shards."""
    from .config import ModelConfig
    from .data import StreamConfig, data_kind, make_loader, open_shards
    from .models import build_model
    from .train import TrainConfig, resolve_device

    dev = resolve_device(device)
    ckpt = torch.load(checkpoint, map_location=dev, weights_only=False)
    mcfg = ModelConfig(**ckpt["model_config"])
    cfg = TrainConfig(**{**ckpt["train_config"], "shards": shards, "device": device})
    model = build_model(mcfg).to(dev)
    model.load_state_dict(ckpt["model"])
    loc = open_shards(shards)
    kind = data_kind(loc.manifest)
    loader, _ = make_loader(loc, split, StreamConfig(kind=kind, image_size=cfg.image_size, time_steps=mcfg.time_steps,
                                                     frames_per_step=cfg.frames_per_step, seed=cfg.seed),
                            batch_size, workers, False)
    res = evaluate(model, loader, kind, mcfg, cfg, dev)
    res["classes"] = loc.manifest["classes"]
    return res
