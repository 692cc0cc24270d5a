"""The data side of a run: the training loader (shuffled, a fresh order each epoch), one loader per
evaluation split, and the batched on-device transform (augmentation, noise) they feed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from avdata.shards.location import ShardsLocation
from scmrl.data.batching import make_loader
from scmrl.data.config import StreamConfig
from scmrl.data.transforms import BatchTransform
from scmrl.model.config import ModelConfig
from scmrl.train.config import TrainConfig
from scmrl.train.distributed import DistContext
from scmrl.train.protocol import Protocol
from scmrl.train.schedule import REFERENCE_BATCH

__all__ = ["RunData", "make_run_data", "default_workers", "machine_workers", "share_warnings", "RECORD_KEYS_ENV"]

#: A folder where every rank writes the keys of the training samples it used, one file per epoch and rank
#: (`keys-epoch{E}-rank{R}.txt`): to check that ranks and nodes split the data as documented (tests).
RECORD_KEYS_ENV = "SCMRL_RECORD_KEYS"


def default_workers(cpus: int, processes: int = 1, cuda: bool = False) -> int:
    """DataLoader workers per process when the user sets none, from the `cpus` this machine gives the run
    (`os.sched_getaffinity`) shared by `processes` local processes (torchrun's LOCAL_WORLD_SIZE).

    CPU training: at most 4, no more than the process's cores (the model's threads run on the same ones).
    CUDA: every core but the one the process feeds the GPU from, at most 8 (each worker holds a shuffle
    buffer of its own, about 1 GB of CREMA-D samples at the default size); about 1 ms of one core per
    CREMA-D sample (BENCHMARKS.md), so 3 workers feed some 3,000 samples/s."""
    per = max(1, cpus // max(1, processes))
    return min(8, max(1, per - 1)) if cuda else min(4, per)


def machine_workers(device_type: str) -> int:
    """`default_workers` for this process: the CPUs it may use, shared with torchrun's other local processes."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return default_workers(cpus, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), device_type == "cuda")


@dataclass
class RunData:
    train_loader: Any
    train_ds: Any  # its dataset: set_epoch, batches_per_rank
    eval_loaders: dict[str, Any]  # split -> loader
    transform: BatchTransform


def make_run_data(source: ShardsLocation, eval_splits: list[str], cfg: TrainConfig, mcfg: ModelConfig,
                  proto: Protocol, ctx: DistContext) -> RunData:
    """Loaders of this rank's share of each split, as `cfg` and the protocol ask."""
    assert cfg.batch_size is not None  # the run chose it (scmrl.train.footprint.fit_batch) before any loader
    assert cfg.workers is not None  # and its workers (scmrl.train.loop: a resumed run's own, or from the CPUs)
    pin = ctx.device.type == "cuda"
    stream: dict[str, Any] = dict(kind=source.kind, image_size=cfg.image_size, time_steps=mcfg.time_steps,
                  frames_per_step=cfg.frames_per_step, seed=cfg.seed, retries=cfg.io_retries, backoff=cfg.io_backoff,
                  spec_resize=proto.spec_resize, train_frame=proto.train_frame)
    train_loader, train_ds = make_loader(source, "train", StreamConfig(**stream, train=True,
                                                                       shuffle_buffer=cfg.shuffle_buffer,
                                                                       with_keys=bool(os.environ.get(RECORD_KEYS_ENV))),
                                         cfg.batch_size, cfg.workers, ctx.rank, ctx.world, pin)
    eval_loaders = {s: make_loader(source, s, StreamConfig(**stream, train=False), cfg.batch_size, cfg.workers,
                                   ctx.rank, ctx.world, pin)[0] for s in eval_splits}
    transform = BatchTransform(source.kind, mcfg.time_steps, cfg.image_size, cfg.noise_snr, cfg.noise_on,
                               noise=proto.noise)
    return RunData(train_loader, train_ds, eval_loaders, transform)


#: Shares of an epoch beyond which `share_warnings` speaks: steps in which some processes have no batch,
#: and training samples dropped as the processes' last partial batches.
UNEVEN_STEPS, DROPPED_SAMPLES = 0.1, 0.05


def share_warnings(rank_samples: list[int], batch: int, batch_given: bool) -> list[str]:
    """What dealing the train split to the processes (`rank_samples`: the samples each reads this epoch)
    changes in the recipe (docs/reference.md §2, one process at batch 128), each with its fix: processes
    with fewer batches join early (`scmrl.train.epoch`), so the last steps train on a smaller global batch;
    each process drops its last partial batch (one process drops one, as the recipe does); and --batch-size
    is per process. Nothing to say for one process."""
    world, total = len(rank_samples), sum(rank_samples)
    per_rank = [n // batch for n in rank_samples]
    steps = max(per_rank, default=0)
    out = []
    if world > 1 and steps and steps - min(per_rank) > UNEVEN_STEPS * steps:
        out.append(f"the {world} processes read unequal shares of the train split ({min(rank_samples):,} to "
                   f"{max(rank_samples):,} samples: whole shards are dealt to each): in {steps - min(per_rank)} of the "
                   f"{steps} steps of this epoch only some processes have a batch, so the global batch there is "
                   f"smaller than {batch * world}; prepare the shards with a smaller --samples-per-shard, so that "
                   "the split has many shards per process")
    dropped = total - batch * sum(per_rank)
    # one process drops its last partial batch as the recipe does; each of several drops its own
    if world > 1 and total and dropped > DROPPED_SAMPLES * total:
        out.append(f"each epoch trains on {total - dropped:,} of the {total:,} training samples: each of the {world} "
                   f"processes drops its last partial batch of {batch} ({dropped / total:.0%} of the split); a "
                   "smaller --batch-size or fewer processes uses more of it")
    if world > 1 and not batch_given:
        fix = (f"; pass --batch-size {REFERENCE_BATCH // world} to train with the recipe's"
               if REFERENCE_BATCH % world == 0 else "")
        out.append(f"global batch {batch * world}: --batch-size is per process ({batch} x {world} processes), the "
                   f"learning rate scaled to it; the recipe's batch is {REFERENCE_BATCH} (docs/reference.md §2){fix}")
    return out
