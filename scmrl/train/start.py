"""Where a run starts: from scratch, from its own checkpoint (`--resume`), or from another run's weights
(`--init-from`), after checking that the checkpoint fits this run."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from avdata.atomic import tmp_path
from avdata.errors import AvdataError

from avdata.shards.location import ShardsLocation
from scmrl.model.config import ModelConfig
from scmrl.train.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from scmrl.train.checkpoint_fit import load_weights
from scmrl.train.config import TrainConfig
from scmrl.train.distributed import DistContext, broadcast_object
from scmrl.train.results import CONFUSION_NAME, CURVES_NAME, METRICS_NAME, RESULTS_NAME

log = logging.getLogger("scmrl.train.start")

__all__ = ["ARCHITECTURE", "FROM_CHECKPOINT", "RUN_FILES", "remove_killed_temporaries", "SHAPES_TRAINING",
           "read_resume_checkpoint", "resume_differences", "init_weights"]

#: a run's results, which a fresh run in the same --out would replace: it refuses a folder holding one. (Its
#: metrics.jsonl and plots are not among them: a run killed in its first epoch leaves those, to be redone.)
RUN_FILES = (BEST_NAME, RESULTS_NAME)

#: what the training loop reads of a checkpoint it resumes from (`save_checkpoint`'s payload in the loop)
RESUME_KEYS = ("model", "optimizer", "schedule", "state", "rng", "model_config", "train_config", "classes")

# what must agree between a run and the checkpoint it starts from (the rest may change when fine-tuning)
ARCHITECTURE = ("model", "attention", "residual_proj", "embedding", "embed_dim", "heads", "mlp_ratio",
                "num_classes", "audio_channels", "visual_channels")

#: options a resumed run takes from its checkpoint whatever is passed: the optimiser's and the schedule's
#: state hold them (AdamW's groups keep their weight decay, the schedule its peak, warm-up and floor)
FROM_CHECKPOINT = ("lr", "base_lr", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr")
#: options a resumed run uses as passed, but which decide its data order, batches, augmentation or
#: arithmetic: another value continues the run validly, not as the uninterrupted run would have
#: (the shards are dealt to processes and DataLoader workers, each with its own shuffle buffer)
SHAPES_TRAINING = ("seed", "batch_size", "workers", "shuffle_buffer", "frames_per_step", "noise_snr", "noise_on",
                   "amp")


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
        _check_compatible(ckpt, mcfg, cfg, source, ctx.world, ctx.device.type)
    return ckpt


def _check_compatible(ckpt: dict[str, Any], mcfg: ModelConfig, cfg: TrainConfig, source: ShardsLocation,
                      world: int = 1, device_type: str = "cpu") -> None:
    dataset = source.manifest.dataset
    if ckpt.get("dataset") not in (None, dataset):  # named first: it is why every model setting would differ
        raise AvdataError(f"{cfg.out}: the run there trained on {ckpt['dataset']!r} shards, and --shards "
                          f"{cfg.shards} holds {dataset!r}; pass the --shards it started with to --resume, or "
                          "another --out")
    warnings = resume_differences(ckpt, cfg, world, device_type)  # next: another --protocol changes the attention too
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
    for warning in warnings:
        log.warning("%s", warning)


def _flag(name: str, value: Any) -> str:
    """The option as a user passes it: --amp / --no-amp, --lr 0.001, --lr (default) for None."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {value}" if value is not None else f"{flag} (default)"


def resume_differences(ckpt: dict[str, Any], cfg: TrainConfig, world: int, device_type: str = "cpu") -> list[str]:
    """What `--resume` with `cfg` on `world` processes of `device_type` changes against the run the checkpoint
    continues, one warning each for options that will not be used and for those that make the run differ
    from an uninterrupted one (with the values that continue it exactly). Another --protocol is refused: it builds
    another optimiser (its parameter groups), schedule and data pipeline."""
    stored = ckpt.get("train_config") or {}
    if stored.get("protocol", "ours") != cfg.protocol:
        raise AvdataError(f"{cfg.out}: the run was started with --protocol {stored.get('protocol', 'ours')}, not "
                          f"{cfg.protocol}; resume it with the same --protocol, or start another --out")
    out = []
    unused = [f"{_flag(k, getattr(cfg, k))} (the run's: {stored[k]})" for k in FROM_CHECKPOINT
              if k in stored and getattr(cfg, k) != stored[k]]
    if unused:
        out.append(f"not used on --resume: {', '.join(unused)}; a resumed run continues the optimiser and the "
                   "learning-rate schedule of its checkpoint (start another --out to train with new values)")
    # batch_size and workers None: the run keeps the checkpoint's (scmrl.train.loop)
    changed = [f"{_flag(k, getattr(cfg, k))} (the run's: {stored[k]})" for k in SHAPES_TRAINING
               if k in stored and getattr(cfg, k) != stored[k]
               and not (k in ("batch_size", "workers") and getattr(cfg, k) is None)]
    processes = ckpt.get("processes")
    if processes is not None and processes != world:
        changed.append(f"{world} process(es) (the run's: {processes})")
    if ckpt.get("device_type") not in (None, device_type):  # CUDA runs in bf16 by default, CPU in float32
        changed.append(f"a {device_type} device (the run's: {ckpt['device_type']})")
    if changed:
        out.append(f"resuming with {', '.join(changed)}: from here on the data order, batches or arithmetic differ "
                   "from those of the uninterrupted run; pass the run's values to continue it exactly")
    return out


def remove_killed_temporaries(out: Path) -> None:
    """Remove the `<name>.tmp` files of the run's own file names that a run killed while writing one (SIGKILL, the
    OOM killer, a lost node: no handler runs) left in `out`; they are never read, and nothing else is removed."""
    for name in (CHECKPOINT_NAME, BEST_NAME, METRICS_NAME, RESULTS_NAME, CURVES_NAME, CONFUSION_NAME):
        tmp = tmp_path(out / name)
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()


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
