"""Where a run starts: from scratch, from its own checkpoint (`--resume`), or from another run's weights
(`--init-from`), after checking that the checkpoint fits this run."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from avdata.errors import AvdataError

from avdata.shards.location import ShardsLocation
from scmrl.model.config import ModelConfig
from scmrl.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from scmrl.train.checkpoint_fit import load_weights
from scmrl.train.config import TrainConfig
from scmrl.train.distributed import DistContext, broadcast_object

log = logging.getLogger("scmrl.train.start")

__all__ = ["ARCHITECTURE", "read_resume_checkpoint", "init_weights"]

#: what the training loop reads of a checkpoint it resumes from (`save_checkpoint`'s payload in the loop)
RESUME_KEYS = ("model", "optimizer", "schedule", "state", "rng", "model_config", "train_config", "classes")

# what must agree between a run and the checkpoint it starts from (the rest may change when fine-tuning)
ARCHITECTURE = ("model", "attention", "residual_proj", "embedding", "embed_dim", "heads", "mlp_ratio",
                "num_classes", "audio_channels", "visual_channels")


def read_resume_checkpoint(cfg: TrainConfig, mcfg: ModelConfig, source: ShardsLocation,
                           ctx: DistContext) -> dict[str, Any] | None:
    """The checkpoint in `cfg.out` to continue from, or None for a fresh run. Rank 0 decides and reads;
    the other ranks receive its checkpoint (or its refusal)."""
    out = Path(cfg.out)
    path = out / CHECKPOINT_NAME
    ckpt: AvdataError | dict[str, Any] | None = None
    if ctx.main:
        if path.exists() and not cfg.resume:
            ckpt = AvdataError(f"{out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it "
                               "or choose another --out")
        elif cfg.resume and path.exists():
            ckpt = load_checkpoint(path, map_location="cpu")
            missing = [k for k in RESUME_KEYS if k not in ckpt]
            if missing:  # a best.pt or scmrl-convert output copied in: weights only (a KeyError in the loop)
                ckpt = AvdataError(f"{path}: cannot be resumed from: it holds no {', '.join(missing)} (a best.pt "
                                   "or an scmrl-convert output holds weights only); start from its weights with "
                                   "--init-from in a new --out instead")
        elif cfg.resume:
            log.warning("--resume: no %s in %s yet; starting from scratch", CHECKPOINT_NAME, out)
    ckpt = broadcast_object(ckpt, ctx)
    if isinstance(ckpt, AvdataError):
        raise ckpt
    if ckpt is not None:
        _check_compatible(ckpt, mcfg, cfg, source)
    return ckpt


def _check_compatible(ckpt: dict[str, Any], mcfg: ModelConfig, cfg: TrainConfig, source: ShardsLocation) -> None:
    stored = ModelConfig.stored_fields(ckpt.get("model_config", {}))
    now = asdict(mcfg)
    diff = [f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in now if stored.get(k) != now[k]]
    if diff:
        raise AvdataError(f"{cfg.out}: the checkpoint was made with another model configuration ({'; '.join(diff)}); "
                          "use the same options to --resume, or another --out")
    if ckpt.get("classes") != source.classes:
        raise AvdataError(f"{cfg.out}: the checkpoint's classes differ from these shards' classes")
    if ckpt.get("shards_fingerprint") != source.fingerprint():
        log.warning("the shard lists differ from the ones this run started with; continuing anyway")


def init_weights(model: torch.nn.Module, mcfg: ModelConfig, path: str) -> None:
    """Load the weights of the checkpoint at ``path`` (any scmrl checkpoint, or one from scmrl-convert)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    if "model" not in ckpt or not isinstance(ckpt.get("model_config"), dict):
        raise AvdataError(f"{path}: not a scmrl checkpoint (no model weights and configuration)")
    stored, now = ModelConfig.stored_fields(ckpt["model_config"]), asdict(mcfg)
    keys = [k for k in ARCHITECTURE if mcfg.model == "scmrl" or k not in ("attention", "residual_proj")]
    diff = [f"{k}: {stored.get(k)!r} (checkpoint) vs {now[k]!r}" for k in keys if stored.get(k) != now[k]]
    if diff:
        raise AvdataError(f"{path}: another architecture ({'; '.join(diff)}); pass the matching options")
    load_weights(model, ckpt["model"], path)
    log.info("initialised from %s", path)
