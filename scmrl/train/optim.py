"""The AdamW optimiser and which parameters it decays."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer"]


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool) -> list[dict]:
    """One group decayed by ``weight_decay``, or, with ``exclude_1d``, timm's split (the authors' optimiser
    factory): biases and every 1-d parameter (batch-norm scales and shifts) in a group without decay."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not exclude_1d:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    no_decay = [p for n, p in params if p.ndim <= 1 or n.endswith(".bias")]
    decay = [p for n, p in params if not (p.ndim <= 1 or n.endswith(".bias"))]
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, exclude_1d: bool) -> torch.optim.AdamW:
    """AdamW (eps 1e-8, betas 0.9/0.999) as both protocols use it."""
    return torch.optim.AdamW(param_groups(model, weight_decay, exclude_1d), lr=lr, eps=1e-8, weight_decay=weight_decay)
