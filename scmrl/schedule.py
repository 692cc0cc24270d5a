"""Warm-up then cosine learning rate, per step, as the reference (timm's CosineLRScheduler settings)."""

from __future__ import annotations

import math


def lr_at(step: int, steps_per_epoch: int, epochs: int, peak: float, warmup_epochs: int = 5,
          warmup_lr: float = 1e-6, min_lr: float = 1e-5) -> float:
    warm = warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)
    if step < warm:
        return warmup_lr + (peak - warmup_lr) * step / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * progress))


def scaled_lr(batch_size: int, world: int = 1, base: float = 5e-3) -> float:
    """lr = base * global batch / 1024 (6.25e-4 at batch 128)."""
    return base * batch_size * world / 1024
