"""The training loop behind `scmrl-train`.

The reference recipe (docs/reference.md §2): AdamW (eps 1e-8, weight decay 1e-4), lr = 5e-3 * global
batch / 1024 unless given (below batch 128 the square-root rule, `--protocol reference` linear:
`scmrl.train.schedule.scaled_lr`),
5 warm-up epochs from 1e-6 then cosine to 1e-5 (per step), 100 epochs, batch 128 per process (drop-last
in training; on CPU by default the largest that fits the memory, from a probe that also
prints the estimated peak memory and epoch time: `scmrl.train.footprint`), seed 42, label-smoothed
cross-entropy + the semantic alignment loss (`scmrl.model.losses.compute_loss`). bf16 autocast on CUDA
only (float32 on CPU).

With the reference's defects fixed (docs/reference.md §6): augmentation drawn fresh every epoch (on the
device, batched), model selection on a validation split when the shards have one, and both test figures
reported (`scmrl.train.results`). Every epoch is checkpointed atomically in `--out`; `--resume` continues
exactly with the same options (same weights as an uninterrupted run, on CUDA up to the float rounding of
the kernels cuDNN's autotuning picks; `scmrl.train.start` names options that differ).

Single process, or DDP under torchrun (NCCL on GPU, gloo on CPU; one or many nodes): data is split over
ranks and workers so every sample is seen once per epoch; ranks whose share holds fewer batches join
early (`scmrl.train.epoch`) and are given the optimiser state of one that did not after the epoch
(`scmrl.train.distributed.sync_optimizer`); metrics are reduced by summing counts; only rank 0 writes.

The options and the per-dataset defaults are in `scmrl.train.config`; `protocol="reference"` trains as the
authors' code does where it differs from the above (`scmrl.train.protocol`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError
from avdata.fetch.urls import redact
from avdata.prepare.lifeline import interrupts_deferred
from avdata.folder_lock import lock_dir, output_lock
from avdata.owned import left_as_found
from avdata.pulled_splits import require_shards
from avdata.progress import make_progress

from avdata.shards.location import ShardsLocation, open_shards
from scmrl.data.failures import ShardReadError
from scmrl.model import lif_compiled
from scmrl.model.config import ModelConfig
from scmrl.model.models import build_model
from scmrl.train.checkpoint import BEST_KEYS, BEST_NAME, CHECKPOINT_NAME, capture_rng, restore_rng, save_checkpoint
from scmrl.train.config import TrainConfig, model_config, resolve_protocol
from scmrl.train.cpu_memory import keep_freed_memory
from scmrl.train.distributed import (DistContext, agree_to_start, barrier, broadcast_object, cleanup, init_distributed,
                                    peer_lost, sync_buffers, sync_optimizer, wrap_ddp)
from scmrl.train.epoch import loss_probe, train_epoch
from scmrl.train.evaluate import evaluate
from scmrl.train.loaders import machine_workers, make_run_data, share_warnings
from scmrl.train.optim import build_optimizer
from scmrl.train.protocol import Protocol
from scmrl.train.report import EpochTable, append_metrics, plot_confusion, plot_curves, print_run_results, write_metrics
from scmrl.train.results import (CONFUSION_NAME, CURVES_NAME, METRICS_NAME, RESULTS_NAME, fresh_state, run_results,
                                 update_best)
from scmrl.train.footprint import fit_batch
from scmrl.train.schedule import lr_warnings, make_schedule, scaled_lr
from scmrl.train.start import init_weights, read_resume_checkpoint, remove_killed_temporaries

log = logging.getLogger("scmrl.train.loop")

__all__ = ["train"]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate every `eval_every` epochs, checkpoint every epoch; return the results (also
    written to OUT/results.json by rank 0)."""
    ctx = init_distributed(cfg.device)
    try:
        with contextlib.ExitStack() as held:  # the --out lock, taken once the run is known to start
            return _train(cfg, ctx, held)
    except ShardReadError as exc:
        raise exc from None  # its message is already clean (ShardFailure): no worker traceback to chain
    except RuntimeError as exc:
        lost = peer_lost(exc, ctx)
        if lost is None:
            raise
        raise lost from None
    finally:
        cleanup(ctx)


def _stop_if_diverged(row: dict[str, Any], last: Path | None, out: Path, peak: float) -> None:
    """Stop, before this epoch's checkpoint, when its training loss is not finite: the weights are then
    NaN too and every later epoch would be wasted. The loss is read once an epoch (no per-step sync), so a
    diverged run costs at most that epoch; every rank holds the same summed loss and stops together."""
    bad = [k for k, v in row.items() if k.startswith("train_") and isinstance(v, float) and not math.isfinite(v)]
    if bad:
        kept = (f"{last} keeps epoch {row['epoch'] - 1}, the last with a finite loss" if last is not None
                else "no checkpoint was written")
        start = next((f" (or from its weights: --init-from {p})" for p in (out / BEST_NAME, last)
                      if p is not None and p.exists()), "")
        raise AvdataError(f"epoch {row['epoch']}: the training loss is {row.get('train_loss')} ({', '.join(bad)} not "
                          f"finite): the run diverged at peak learning rate {peak:.3g}; {kept}. Train again in a new "
                          f"--out with a lower --lr, e.g. {peak / 4:.2g}{start}")


def _lock_out(out: Path, ctx: DistContext, held: contextlib.ExitStack) -> None:
    """Rank 0 holds the lock of --out for the run (`avdata.folder_lock`): two runs there would remove each
    other's temporary files and replace each other's checkpoints. Every rank stops when it is held."""
    refused = None
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        held.enter_context(left_as_found(lock_dir(out)))  # made for the lock alone: removed after it, when empty
        try:
            held.enter_context(output_lock(out, None, command="scmrl-train"))
        except AvdataError as exc:
            refused = str(exc)
    refused = broadcast_object(refused, ctx)
    if refused is not None:
        raise AvdataError(refused)


def _open_data(cfg: TrainConfig) -> tuple[TrainConfig, Protocol, ShardsLocation, ModelConfig, list[str]]:
    """The shards, checked for this run: the protocol, the model configuration and the splits evaluated."""
    source = open_shards(cfg.shards, cfg.classes)
    if "train" not in source.splits:
        raise AvdataError(f"{cfg.shards}: no train split (it has {', '.join(source.splits)})")
    cfg, proto = resolve_protocol(cfg)
    if not proto.val_split and "val" in source.splits and source.num_samples("val") > 0:
        raise AvdataError(f"{cfg.shards}: --protocol {proto.name} trains on the whole train split, but these shards "
                          "hold a validation split; prepare them with `avdata prepare ... --protocol reference` "
                          "(or --val-fraction 0)")
    mcfg = model_config(cfg, source)
    # a split whose clips were all skipped while preparing has an (empty) shard but nothing to evaluate on
    eval_splits: list[str] = [s for s in ("val", "test") if s in source.splits and source.num_samples(s) > 0]
    require_shards(source, ["train", *eval_splits])
    source.pin(["train", *eval_splits])  # a shard replaced later, at the same size too, is refused, not read
    return cfg, proto, source, mcfg, eval_splits


def _train(cfg: TrainConfig, ctx: DistContext, held: contextlib.ExitStack) -> dict[str, Any]:
    device = ctx.device
    if device.type == "cpu":
        keep_freed_memory()  # faster steps on CPU (scmrl.train.cpu_memory)
        lif_compiled.enable(cfg.compile)
    out = Path(cfg.out)
    try:  # each node may read its own copy of the shards: every process stops when one cannot read its own
        cfg, proto, source, mcfg, eval_splits = _open_data(cfg)
        error = None
    except AvdataError as exc:
        error = exc
    agree_to_start(error, ctx)
    manifest = source.manifest
    kind = source.kind
    ckpt_path = out / CHECKPOINT_NAME

    ckpt = read_resume_checkpoint(cfg, mcfg, source, ctx)
    _lock_out(out, ctx, held)
    if ctx.main:
        remove_killed_temporaries(out)

    # ---- model, optimizer, schedule
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg).to(device)
    batch_given = cfg.batch_size is not None
    if cfg.batch_size is None and ckpt is not None:
        cfg = replace(cfg, batch_size=ckpt["train_config"]["batch_size"])  # a resumed run keeps its batch
    workers = cfg.workers  # None: a resumed run keeps its count too (its data order depends on it), else the CPUs'
    if workers is None:
        kept = ckpt["train_config"].get("workers") if ckpt is not None else None
        workers = kept if type(kept) is int and kept >= 0 else machine_workers(device.type)
        cfg = replace(cfg, workers=workers)
    # before the first step: the memory and time it will take, and a batch that fits (scmrl.train.footprint)
    batch, estimate = fit_batch(model, mcfg, device, cfg.amp, cfg.batch_size, source.num_samples("train"),
                                ctx.world, workers, cfg.shuffle_buffer)
    batch = broadcast_object(batch, ctx)  # every rank trains at rank 0's choice
    cfg = replace(cfg, batch_size=batch)
    peak = cfg.lr if cfg.lr is not None else scaled_lr(batch * ctx.world, cfg.base_lr, proto.lr_rule)
    opt = build_optimizer(model, peak, cfg.weight_decay, proto.exclude_1d_decay)
    sched = make_schedule(proto.schedule, peak, cfg.epochs, cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr)
    if ctx.main:
        log.info("%s", estimate)
        for warning in lr_warnings(sched, batch * ctx.world, cfg.lr is not None):
            log.warning("%s", warning)
    state = fresh_state()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict({**ckpt["schedule"], "epochs": cfg.epochs})  # --epochs may be extended
        state = ckpt["state"]
        restore_rng(ckpt["rng"])
        if ctx.main and state["epoch"] > 0 and state.get("best_val_epoch") == state["epoch"]:
            # the checkpoint's epoch is the validation-best one: the run may have stopped (Ctrl-C, kill, a lost
            # node) after writing checkpoint.pt and before best.pt, which then still holds an earlier epoch
            with interrupts_deferred():
                save_checkpoint(out / BEST_NAME, {k: ckpt[k] for k in BEST_KEYS if k in ckpt})
        if ctx.main:
            log.info("resumed from %s after epoch %d (step %d)", ckpt_path, state["epoch"], state["step"])
            if state.get("stopped_mid_epoch"):
                log.warning("the run stopped at --max-steps %d within epoch %d: it continues with epoch %d, the rest "
                            "of epoch %d untrained (--stop-after-epochs stops between epochs, to continue exactly)",
                            state["step"], state["epoch"], state["epoch"] + 1, state["epoch"])
    elif cfg.init_from is not None:
        init_weights(model, mcfg, cfg.init_from)
    ddp_model = wrap_ddp(model, ctx, loss_probe(mcfg, device))

    data = make_run_data(source, eval_splits, cfg, mcfg, proto, ctx)
    if ctx.main:
        data.train_ds.set_epoch(state["epoch"])
        for warning in share_warnings([data.train_ds.rank_samples(r, workers) for r in range(ctx.world)],
                                      batch, batch_given):
            log.warning("%s", warning)

    # ---- reporting (rank 0)
    metrics_path = out / METRICS_NAME
    loss_keys = ["ce"] + (["sao"] if mcfg.model == "scmrl" and mcfg.sao_weight != 0 else []) + (
        ["ce_audio", "ce_visual"] if mcfg.model == "cmci" else [])
    table = EpochTable(loss_keys, "val" in eval_splits, "test" in eval_splits)
    if ctx.main:
        write_metrics(metrics_path, state["history"])
        log.info("%s on %s (%s): %d train samples, %s; %d classes; T=%d; embed %d; peak lr %.3g; %d process(es) on %s",
                 mcfg.model, manifest.dataset, kind, source.num_samples("train"),
                 ", ".join(f"{s} {source.num_samples(s)}" for s in eval_splits) or "no val/test split",
                 mcfg.num_classes, mcfg.time_steps, mcfg.embed_dim, peak, ctx.world, device)

    last_epoch = (cfg.epochs if cfg.stop_after_epochs is None
                  else min(cfg.epochs, state["epoch"] + cfg.stop_after_epochs))
    progress = make_progress("batch", disable=None if ctx.main else True)
    # The next epoch's batches are asked for before evaluating, so the loader's workers read and decode its
    # first batches while the model evaluates (the order is the same: it depends on seed and epoch only).
    upcoming = None
    with progress:
        for epoch in range(state["epoch"], last_epoch):
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                break
            if upcoming is None:
                data.train_ds.set_epoch(epoch)
            per_rank = data.train_ds.batches_per_rank(cfg.batch_size, workers)
            steps = max(per_rank)
            if steps == 0:
                most = max(data.train_ds.rank_samples(r, workers) for r in range(ctx.world))
                raise AvdataError(f"the train split holds too few samples for one batch of {cfg.batch_size} per "
                                  f"process ({source.num_samples('train')} samples, {ctx.world} process(es), "
                                  f"{max(1, workers)} worker(s) each); "
                                  + (f"pass --batch-size {most} or less" if most else "lower --workers"))
            batches = upcoming if upcoming is not None else iter(data.train_loader)
            upcoming = None
            cap = steps if cfg.max_steps is None else min(steps, cfg.max_steps - state["step"])
            row = train_epoch(ddp_model, opt, sched, batches, data.transform, mcfg, cfg, ctx, epoch, steps,
                              cap, progress)
            del batches
            _stop_if_diverged(row, ckpt_path if state["epoch"] > 0 else None, out, peak)
            if min(per_rank) < cap:  # some ranks joined early: give them the optimiser state of one that did not
                sync_optimizer(opt, ctx, src=per_rank.index(max(per_rank)))
            state["step"] += cap
            row["step"] = state["step"]
            stop = cfg.max_steps is not None and state["step"] >= cfg.max_steps
            if epoch + 1 < last_epoch and not stop:
                data.train_ds.set_epoch(epoch + 1)
                upcoming = iter(data.train_loader)
            # not at the end of a --stop-after-epochs invocation: a resumed run evaluates the epochs an
            # uninterrupted one does, so both select the same validation-best epoch
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs or stop:
                sync_buffers(model, ctx)
                t0 = time.perf_counter()
                for split, loader in data.eval_loaders.items():
                    res = evaluate(ddp_model, loader, data.transform, source.classes, ctx, cfg.seed, cfg.amp,
                                   tag=f"eval-{split}")
                    row[f"{split}_acc"], row[f"{split}_samples"] = res["accuracy"], res["samples"]
                    if split == "test":
                        state["confusion_last"] = res["confusion"]
                row["eval_seconds"] = time.perf_counter() - t0
            improved = update_best(state, row)
            state["history"].append(row)
            state["epoch"] = epoch + 1
            state["stopped_by_max_steps"] = stop
            state["stopped_mid_epoch"] = stop and cap < steps  # its remaining batches are not trained
            if ctx.main:
                append_metrics(metrics_path, row)
                table.row(row)
                payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                           "state": state, "epoch": state["epoch"], "step": state["step"], "rng": capture_rng(),
                           "model_config": asdict(mcfg), "classes": source.classes,
                           # no user:password or token of a --shards URL in a file that is shared with models
                           "train_config": {**asdict(cfg), "shards": redact(cfg.shards)},
                           "dataset": manifest.dataset, "shards_fingerprint": source.fingerprint(),
                           "processes": ctx.world, "device_type": device.type}
                with interrupts_deferred():  # a stop waits for the pair to be written whole
                    save_checkpoint(ckpt_path, payload)
                    if improved:  # after checkpoint.pt: a run killed in between rewrites it on --resume
                        save_checkpoint(out / BEST_NAME, {k: payload[k] for k in BEST_KEYS})
            if stop:
                break

    results = run_results(state, mcfg, manifest.dataset, eval_splits)
    if ctx.main:
        atomic_write_text(out / RESULTS_NAME, json.dumps(results, indent=2) + "\n")
        if state["history"]:
            plot_curves(state["history"], out / CURVES_NAME, f"{mcfg.model} on {manifest.dataset}")
        conf = state["confusion_at_best_val"] if "val" in eval_splits else state["confusion_last"]
        if conf is not None:
            which = (f"epoch {state['best_val_epoch']} (validation-best)" if "val" in eval_splits
                     else f"epoch {state['epoch']} (last)")
            plot_confusion(conf, source.classes, out / CONFUSION_NAME, f"test confusion, {which}")
        print_run_results(results)
    barrier(ctx)
    return results
