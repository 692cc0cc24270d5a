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
from scmrl.train.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from scmrl.train.config import TrainConfig
from scmrl.train.distributed import DistContext, broadcast_object
from scmrl.train.results import RESULTS_NAME

log = logging.getLogger("scmrl.train.start")

__all__ = ["ARCHITECTURE", "RUN_FILES", "read_resume_checkpoint", "init_weights"]

#: a run's results, which a fresh run in the same --out would replace: it refuses a folder holding one. (Its
#: metrics.jsonl and plots are not among them: a run killed in its first epoch leaves those, to be redone.)
RUN_FILES = (BEST_NAME, RESULTS_NAME)

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
        elif held := [n for n in RUN_FILES if (out / n).exists() or (out / n).is_symlink()]:
            # e.g. a finished run whose checkpoint.pt was deleted to save space: its best.pt and results stay
            ckpt = AvdataError(f"{out} holds {', '.join(held)}, which a new run would replace (and no "
                               f"{CHECKPOINT_NAME} to --resume from); choose another --out, or move them away")
        elif cfg.resume:
            log.warning("--resume: no %s in %s yet; starting from scratch", CHECKPOINT_NAME, out)
    ckpt = broadcast_object(ckpt, ctx)
    if isinstance(ckpt, AvdataError):
        raise ckpt
    if ckpt is not None:
        _check_compatible(ckpt, mcfg, cfg, source)
    return ckpt


def _check_compatible(ckpt: dict[str, Any], mcfg: ModelConfig, cfg: TrainConfig, source: ShardsLocation) -> None:
    dataset = source.manifest.dataset
    if ckpt.get("dataset") not in (None, dataset):  # named first: it is why every model setting would differ
        raise AvdataError(f"{cfg.out}: the run there trained on {ckpt['dataset']!r} shards, and --shards "
                          f"{cfg.shards} holds {dataset!r}; pass the --shards it started with to --resume, or "
                          "another --out")
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
    if "model" not in ckpt or "model_config" not in ckpt:
        raise AvdataError(f"{path}: not a scmrl checkpoint (no model weights and configuration)")
    stored, now = ModelConfig.stored_fields(ckpt["model_config"]), asdict(mcfg)
    keys = [k for k in ARCHITECTURE if mcfg.model == "scmrl" or k not in ("attention", "residual_proj")]
    diff = [f"{k}: {stored.get(k)!r} (checkpoint) vs {now[k]!r}" for k in keys if stored.get(k) != now[k]]
    if diff:
        raise AvdataError(f"{path}: another architecture ({'; '.join(diff)}); pass the matching options")
    model.load_state_dict(ckpt["model"])
    log.info("initialised from %s", path)
