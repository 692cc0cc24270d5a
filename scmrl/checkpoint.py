"""Checkpoints: written atomically (temporary name in the same folder, fsync, rename), holding everything a
run needs to continue exactly: model, optimizer and schedule state, epoch, global step, RNG states, best
metrics and the metric history, plus the model/train configuration and the classes (so `scmrl-eval`
can rebuild the network from the file alone)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avdata.atomic import atomic_open
from avdata.errors import AvdataError

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng"]

CHECKPOINT_NAME = "checkpoint.pt"  # the latest epoch (resume)
BEST_NAME = "best.pt"  # the validation-best epoch (weights and configs only)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save to `<path>.tmp`, fsync, rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise AvdataError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise AvdataError(f"{path}: not a readable checkpoint ({exc})") from exc
