"""The training loop behind `scmrl-train`.

The reference recipe (REFERENCE.md section 2): AdamW (eps 1e-8, weight decay 1e-4), lr = 5e-3 * global
batch / 1024 unless given, 5 warm-up epochs from 1e-6 then cosine to 1e-5 (per step), 100 epochs,
batch 128 per process (drop-last in training), seed 42, label-smoothed cross-entropy + the semantic
alignment loss (`scmrl.model.losses.compute_loss`). bf16 autocast on CUDA only (float32 on CPU).

With the reference's defects fixed: augmentation drawn fresh every epoch (on the device, batched),
model selection on a validation split when the shards have one, and both test figures reported, clearly
labelled: the test accuracy at the validation-best epoch and the best test accuracy over epochs (the
reference's figure, selected on the test set). Every epoch is checkpointed atomically in `--out`;
`--resume` continues exactly (same weights as an uninterrupted run).

Single process, or DDP under torchrun (NCCL on GPU, gloo on CPU; one or many nodes): data is split over
ranks and workers so every sample is seen once per epoch; ranks whose share holds fewer batches join
early (`torch.distributed.algorithms.Join`); metrics are reduced by summing counts; only rank 0 writes.

Dataset-dependent defaults come from the manifest (flags override): event data -> shallow embedding,
2 visual channels, 28 x 28 inputs, T = the stored bins, tau_s 0.1; CREMA-D tau_s 0.07, embedding 256;
UrbanSound8K-AV tau_s 0.08, embedding 64; the number of classes from the manifest.

`protocol="reference"` trains as the authors' code does where it differs from the above (no validation
split, float32, their weight-decay exclusions, per-epoch schedule, PIL spectrogram resize, their noise,
their temporal-attention layout, T = 16 for event data): `scmrl.train.protocol`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError
from avdata.progress import make_progress

from scmrl.train.checkpoint import BEST_NAME, CHECKPOINT_NAME, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from scmrl.model.config import ModelConfig
from scmrl.train.cpu_memory import keep_freed_memory
from scmrl.data.stream import ShardReadError, ShardSource, StreamConfig, data_kind, event_bins, make_loader, open_shards
from scmrl.train.distributed import DistContext, all_reduce_sum, barrier, cleanup, init_distributed, sync_buffers, wrap_ddp
from scmrl.train.evaluate import autocast_for, evaluate
from scmrl.model.losses import compute_loss
from scmrl.model.models import build_model
from scmrl.train.report import EpochTable, append_metrics, plot_confusion, plot_curves, print_summary, write_metrics
from scmrl.train.optim import build_optimizer
from scmrl.train.protocol import Protocol, get_protocol
from scmrl.train.schedule import BASE_LR, WarmupCosine, make_schedule, scaled_lr
from scmrl.data.transforms import BatchTransform, make_generator

log = logging.getLogger("scmrl.train.loop")

__all__ = ["TrainConfig", "train", "model_config", "resolve_protocol", "DATASET_DEFAULTS", "RESULTS_NAME",
           "METRICS_NAME"]

RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
CONFUSION_NAME = "confusion.png"

# per dataset (manifest "dataset"): the paper's settings
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cremad": {"tau_s": 0.07, "embed_dim": 256},
    "urbansound8k-av": {"tau_s": 0.08, "embed_dim": 64},
    "mnistdvs-ntidigits": {"tau_s": 0.1, "embed_dim": 256},
}
STATIC_DEFAULTS = {"tau_s": 0.07, "embed_dim": 256, "time_steps": 4}
EVENT_DEFAULTS = {"tau_s": 0.1, "embed_dim": 256}


@dataclass
class TrainConfig:
    shards: str  # shards folder, its http(s) URL, or .tar files (comma list or glob)
    out: str  # run folder
    model: str = "scmrl"
    attention: str | None = None  # default per protocol: spatiotemporal (ours), spatiotemporal-reference
    residual_proj: bool = True  # Linear + LIF on the cross-modal residual (off: the authors' ablation models)
    protocol: str = "ours"  # ours | reference (scmrl.train.protocol)
    epochs: int = 100
    batch_size: int = 128  # per process
    lr: float | None = None  # peak; default base_lr * global batch / 1024
    base_lr: float = BASE_LR
    weight_decay: float = 1e-4
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    embed_dim: int | None = None  # default per dataset
    heads: int = 16
    mlp_ratio: float = 4.0
    time_steps: int | None = None  # default 4 (static) or the stored bins (events)
    image_size: int = 128  # static data: side of the spectrogram and image inputs
    alpha: float = 1.5
    tau_s: float | None = None  # default per dataset
    sao_weight: float = 1.0
    label_smoothing: float = 0.1
    tau: float = 2.0
    threshold: float = 1.0
    attn_threshold: float = 1.0
    detach_membrane: bool = True
    surrogate_alpha: float = 4.0
    lif: str = "fused"
    frames_per_step: bool = False
    noise_snr: float | None = None  # dB, on the visual input
    noise_on: str = "eval"  # train | eval | both
    workers: int = 0  # DataLoader workers per process
    shuffle_buffer: int | None = None  # samples (scmrl.data.stream.make_loader); None: from the split's size
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 42
    resume: bool = False
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning, e.g. from scmrl-convert)
    max_steps: int | None = None  # stop after this many optimizer steps in total (smoke runs)
    stop_after_epochs: int | None = None  # end this invocation after N epochs (a job time limit); --resume later
    eval_every: int = 1
    classes: list[str] | None = None  # for .tar lists without a manifest beside them
    io_retries: int = 4
    io_backoff: float = 0.5

    def __post_init__(self) -> None:
        if self.noise_on not in ("train", "eval", "both"):
            raise ValueError(f"noise_on must be train, eval or both, got {self.noise_on!r}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        get_protocol(self.protocol)


def resolve_protocol(cfg: TrainConfig) -> tuple[TrainConfig, Protocol]:
    """The config with the protocol's fixed settings applied (precision, where noise goes), and the protocol."""
    proto = get_protocol(cfg.protocol)
    changes: dict[str, Any] = {}
    if not proto.amp:
        changes["amp"] = False
    if proto.noise_on is not None:
        changes["noise_on"] = proto.noise_on
    if cfg.attention is None:
        changes["attention"] = proto.attention
    return replace(cfg, **changes), proto


def model_config(cfg: TrainConfig, source: ShardSource | dict[str, Any]) -> ModelConfig:
    """The network for these shards (a ShardSource or a manifest): dataset defaults from the manifest,
    overridden by the flags."""
    manifest = source if isinstance(source, dict) else source.manifest
    kind = data_kind(manifest)
    if kind == "events":
        d = {**EVENT_DEFAULTS, **DATASET_DEFAULTS.get(manifest["dataset"], {})}
    else:
        d = {**STATIC_DEFAULTS, **DATASET_DEFAULTS.get(manifest["dataset"], {})}
    proto = get_protocol(cfg.protocol)
    common = dict(num_classes=len(manifest["classes"]), model=cfg.model, attention=cfg.attention or proto.attention,
                  residual_proj=cfg.residual_proj,
                  embed_dim=cfg.embed_dim or d["embed_dim"], heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
                  alpha=cfg.alpha, tau=cfg.tau, v_threshold=cfg.threshold, attn_threshold=cfg.attn_threshold,
                  detach_membrane=cfg.detach_membrane, surrogate_alpha=cfg.surrogate_alpha,
                  tau_s=cfg.tau_s if cfg.tau_s is not None else d["tau_s"], sao_weight=cfg.sao_weight,
                  label_smoothing=cfg.label_smoothing, lif_impl=cfg.lif)
    if kind == "events":
        steps = cfg.time_steps or proto.event_time_steps or event_bins(manifest)
        return ModelConfig(**common, time_steps=steps, audio_channels=1,
                           visual_channels=2, audio_size=28, visual_size=28, embedding="shallow")
    return ModelConfig(**common, time_steps=cfg.time_steps or d.get("time_steps", 4), audio_channels=1,
                       visual_channels=3, audio_size=cfg.image_size, visual_size=cfg.image_size, embedding="sps")


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "history": [], "best_val_acc": None, "best_val_epoch": None,
            "test_acc_at_best_val": None, "best_test_acc": None, "best_test_epoch": None,
            "confusion_at_best_val": None, "confusion_last": None, "stopped_by_max_steps": False}


def _probe(mcfg: ModelConfig, device: torch.device):
    """A tiny forward/backward for DDP's unused-parameter check."""
    def run(model):
        g = torch.Generator().manual_seed(0)
        t = mcfg.time_steps
        a = torch.randn(t, 2, mcfg.audio_channels, mcfg.audio_size, mcfg.audio_size, generator=g).to(device)
        v = torch.randn(t, 2, mcfg.visual_channels, mcfg.visual_size, mcfg.visual_size, generator=g).to(device)
        labels = torch.tensor([0, min(1, mcfg.num_classes - 1)], device=device)
        return compute_loss(mcfg, model(a, v), labels)[0]
    return run


def _broadcast_object(obj: Any, ctx: DistContext) -> Any:
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def _gather_sums(sums: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Sum dicts of floats over ranks (a rank with no batch has an empty dict)."""
    if not ctx.distributed:
        return dict(sums)
    parts: list[dict[str, float]] = [{} for _ in range(ctx.world)]
    dist.all_gather_object(parts, sums)
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _check_compatible(ckpt: dict[str, Any], mcfg: ModelConfig, cfg: TrainConfig, source: ShardSource) -> None:
    stored = ckpt.get("model_config", {})
    now = asdict(mcfg)
    diff = [f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in now if stored.get(k) != now[k]]
    if diff:
        raise AvdataError(f"{cfg.out}: the checkpoint was made with another model configuration ({'; '.join(diff)}); "
                          "use the same options to --resume, or another --out")
    if ckpt.get("classes") != source.classes:
        raise AvdataError(f"{cfg.out}: the checkpoint's classes differ from these shards' classes")
    if ckpt.get("shards_fingerprint") != source.fingerprint():
        log.warning("the shard lists differ from the ones this run started with; continuing anyway")


# what must agree between a run and the checkpoint it starts from (the rest may change when fine-tuning)
_ARCHITECTURE = ("model", "attention", "residual_proj", "embedding", "embed_dim", "heads", "mlp_ratio",
                 "num_classes", "audio_channels", "visual_channels")


def _init_weights(model: torch.nn.Module, mcfg: ModelConfig, path: str) -> None:
    """Load the weights of the checkpoint at ``path`` (any scmrl checkpoint, or one from scmrl-convert)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    if "model" not in ckpt or "model_config" not in ckpt:
        raise AvdataError(f"{path}: not a scmrl checkpoint (no model weights and configuration)")
    stored, now = ckpt["model_config"], asdict(mcfg)
    keys = [k for k in _ARCHITECTURE if mcfg.model == "scmrl" or k not in ("attention", "residual_proj")]
    diff = [f"{k}: {stored.get(k)!r} (checkpoint) vs {now[k]!r}" for k in keys if stored.get(k) != now[k]]
    if diff:
        raise AvdataError(f"{path}: another architecture ({'; '.join(diff)}); pass the matching options")
    model.load_state_dict(ckpt["model"])
    log.info("initialised from %s", path)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate every `eval_every` epochs, checkpoint every epoch; return the results (also
    written to OUT/results.json by rank 0)."""
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx)
    except ShardReadError as exc:
        raise exc.clean() from None
    finally:
        cleanup(ctx)


def _train(cfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    device = ctx.device
    if device.type == "cpu":
        keep_freed_memory()  # about 20% faster steps on CPU (scmrl/cpu_memory.py)
    out = Path(cfg.out)
    source = open_shards(cfg.shards, cfg.classes)
    manifest = source.manifest
    kind = source.kind
    if "train" not in source.splits:
        raise AvdataError(f"{cfg.shards}: no train split (it has {', '.join(source.splits)})")
    cfg, proto = resolve_protocol(cfg)
    if not proto.val_split and "val" in source.splits and source.num_samples("val") > 0:
        raise AvdataError(f"{cfg.shards}: --protocol {proto.name} trains on the whole train split, but these shards "
                          "hold a validation split; prepare them with `avdata prepare ... --protocol reference` "
                          "(or --val-fraction 0)")
    mcfg = model_config(cfg, source)
    # a split whose clips were all skipped while preparing has an (empty) shard but nothing to evaluate on
    eval_splits = [s for s in ("val", "test") if s in source.splits and source.num_samples(s) > 0]
    ckpt_path = out / CHECKPOINT_NAME

    # ---- resume or start (rank 0 decides and reads; the others receive its checkpoint)
    ckpt = None
    if ctx.main:
        if ckpt_path.exists() and not cfg.resume:
            ckpt = AvdataError(f"{out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it "
                               "or choose another --out")
        elif cfg.resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path, map_location="cpu")
        elif cfg.resume:
            log.warning("--resume: no %s in %s yet; starting from scratch", CHECKPOINT_NAME, out)
    ckpt = _broadcast_object(ckpt, ctx)
    if isinstance(ckpt, AvdataError):
        raise ckpt
    if ckpt is not None:
        _check_compatible(ckpt, mcfg, cfg, source)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)

    # ---- model, optimizer, schedule
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg).to(device)
    peak = cfg.lr if cfg.lr is not None else scaled_lr(cfg.batch_size * ctx.world, cfg.base_lr)
    opt = build_optimizer(model, peak, cfg.weight_decay, proto.exclude_1d_decay)
    sched = make_schedule(proto.schedule, peak, cfg.epochs, cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr)
    state = _fresh_state()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict({**ckpt["schedule"], "epochs": cfg.epochs})  # --epochs may be extended
        state = ckpt["state"]
        restore_rng(ckpt["rng"])
        if ctx.main:
            log.info("resumed from %s after epoch %d (step %d)", ckpt_path, state["epoch"], state["step"])
    elif cfg.init_from is not None:
        _init_weights(model, mcfg, cfg.init_from)
    ddp_model = wrap_ddp(model, ctx, _probe(mcfg, device))

    # ---- data
    pin = device.type == "cuda"
    stream = dict(kind=kind, image_size=cfg.image_size, time_steps=mcfg.time_steps,
                  frames_per_step=cfg.frames_per_step, seed=cfg.seed, retries=cfg.io_retries, backoff=cfg.io_backoff,
                  spec_resize=proto.spec_resize)
    train_loader, train_ds = make_loader(source, "train", StreamConfig(**stream, train=True,
                                                                       shuffle_buffer=cfg.shuffle_buffer),
                                         cfg.batch_size, cfg.workers, ctx.rank, ctx.world, pin)
    eval_loaders = {s: make_loader(source, s, StreamConfig(**stream, train=False), cfg.batch_size, cfg.workers,
                                   ctx.rank, ctx.world, pin)[0] for s in eval_splits}
    transform = BatchTransform(kind, mcfg.time_steps, cfg.image_size, cfg.noise_snr, cfg.noise_on, noise=proto.noise)

    # ---- reporting (rank 0)
    metrics_path = out / METRICS_NAME
    loss_keys = ["ce"] + (["sao"] if mcfg.model == "scmrl" and mcfg.sao_weight != 0 else []) + (
        ["ce_audio", "ce_visual"] if mcfg.model == "cmci" else [])
    table = EpochTable(loss_keys, "val" in eval_splits, "test" in eval_splits)
    if ctx.main:
        write_metrics(metrics_path, state["history"])
        log.info("%s on %s (%s): %d train samples, %s; %d classes; T=%d; embed %d; peak lr %.3g; %d process(es) on %s",
                 mcfg.model, manifest["dataset"], kind, source.num_samples("train"),
                 ", ".join(f"{s} {source.num_samples(s)}" for s in eval_splits) or "no val/test split",
                 mcfg.num_classes, mcfg.time_steps, mcfg.embed_dim, peak, ctx.world, device)

    last_epoch = cfg.epochs if cfg.stop_after_epochs is None else min(cfg.epochs, state["epoch"] + cfg.stop_after_epochs)
    progress = make_progress("batch", disable=None if ctx.main else True)
    with progress:
        for epoch in range(state["epoch"], last_epoch):
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                break
            train_ds.set_epoch(epoch)
            per_rank = train_ds.batches_per_rank(cfg.batch_size, cfg.workers)
            steps = max(per_rank)
            if steps == 0:
                raise AvdataError(f"the train split holds too few samples for one batch of {cfg.batch_size} per "
                                  f"process ({source.num_samples('train')} samples, {ctx.world} process(es), "
                                  f"{max(1, cfg.workers)} worker(s) each); lower --batch-size or --workers")
            cap = steps if cfg.max_steps is None else min(steps, cfg.max_steps - state["step"])
            row = _train_epoch(ddp_model, model, opt, sched, train_loader, transform, mcfg, cfg, ctx, epoch, steps,
                               cap, progress)
            state["step"] += cap
            row["step"] = state["step"]
            stop = cfg.max_steps is not None and state["step"] >= cfg.max_steps
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == last_epoch or stop:
                sync_buffers(model, ctx)
                t0 = time.perf_counter()
                for split, loader in eval_loaders.items():
                    res = evaluate(ddp_model, loader, transform, source.classes, ctx, cfg.seed, cfg.amp,
                                   tag=f"eval-{split}")
                    row[f"{split}_acc"], row[f"{split}_samples"] = res["accuracy"], res["samples"]
                    if split == "test":
                        state["confusion_last"] = res["confusion"]
                row["eval_seconds"] = time.perf_counter() - t0
            improved = _update_best(state, row)
            state["history"].append(row)
            state["epoch"] = epoch + 1
            state["stopped_by_max_steps"] = stop
            if ctx.main:
                append_metrics(metrics_path, row)
                table.row(row)
                payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                           "state": state, "epoch": state["epoch"], "step": state["step"], "rng": capture_rng(),
                           "model_config": asdict(mcfg), "train_config": asdict(cfg), "classes": source.classes,
                           "dataset": manifest["dataset"], "shards_fingerprint": source.fingerprint()}
                save_checkpoint(ckpt_path, payload)
                if improved:
                    save_checkpoint(out / BEST_NAME, {k: payload[k] for k in (
                        "model", "epoch", "step", "model_config", "train_config", "classes", "dataset")})
            if stop:
                break

    results = _results(state, mcfg, manifest, eval_splits)
    if ctx.main:
        atomic_write_text(out / RESULTS_NAME, json.dumps(results, indent=2) + "\n")
        if state["history"]:
            plot_curves(state["history"], out / CURVES_NAME, f"{mcfg.model} on {manifest['dataset']}")
        conf = state["confusion_at_best_val"] if "val" in eval_splits else state["confusion_last"]
        if conf is not None:
            which = (f"epoch {state['best_val_epoch']} (validation-best)" if "val" in eval_splits
                     else f"epoch {state['epoch']} (last)")
            plot_confusion(conf, source.classes, out / CONFUSION_NAME, f"test confusion, {which}")
        print_summary(results)
    barrier(ctx)
    return results


def _train_epoch(ddp_model, model, opt, sched: WarmupCosine, loader, transform: BatchTransform, mcfg: ModelConfig,
                 cfg: TrainConfig, ctx: DistContext, epoch: int, steps: int, cap: int, progress) -> dict[str, Any]:
    device = ctx.device
    ddp_model.train()
    gen = make_generator(device, cfg.seed, "train", epoch, ctx.rank)
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # samples, correct
    sums: dict[str, float] = {}
    lr = sched.lr_at_step(epoch, 0, steps)
    task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=cap)
    join = contextlib.nullcontext()
    if ctx.distributed:
        from torch.distributed.algorithms.join import Join

        join = Join([ddp_model])  # ranks whose share has fewer batches stop early without hanging the others
    t0 = time.perf_counter()
    try:
        with join:
            for i, batch in enumerate(loader):
                if i >= cap:
                    break
                lr = sched.lr_at_step(epoch, i, steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                audio, visual, labels = (t.to(device, non_blocking=True) for t in batch[:3])
                a, v = transform(audio, visual, True, gen)
                opt.zero_grad(set_to_none=True)
                with autocast_for(device, cfg.amp):
                    outp = ddp_model(a, v)
                loss, parts = compute_loss(mcfg, outp, labels)
                loss.backward()
                opt.step()
                n = labels.numel()
                counts[0] += n
                counts[1] += (outp.logits.detach().argmax(1) == labels).sum()
                for k, val in parts.items():
                    sums[k] = sums.get(k, 0.0) + val * n
                progress.advance(task)
    except ShardReadError as exc:
        raise exc.clean() from None
    seconds = time.perf_counter() - t0
    progress.remove_task(task)
    all_reduce_sum(counts, ctx)
    sums = _gather_sums(sums, ctx)
    seen, correct = int(counts[0]), int(counts[1])
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    for k in sorted(sums):
        row[f"train_{k}"] = sums[k] / max(1, seen)
    row.update(train_acc=correct / max(1, seen), train_samples=seen, samples_per_s=seen / max(seconds, 1e-9),
               seconds=seconds)
    return row


def _update_best(state: dict[str, Any], row: dict[str, Any]) -> bool:
    """Track the validation-best epoch and the best test epoch; True when validation improved."""
    improved = False
    if row.get("val_acc") is not None and (state["best_val_acc"] is None or row["val_acc"] > state["best_val_acc"]):
        state["best_val_acc"], state["best_val_epoch"] = row["val_acc"], row["epoch"]
        state["test_acc_at_best_val"] = row.get("test_acc")
        state["confusion_at_best_val"] = state["confusion_last"] if row.get("test_acc") is not None else None
        improved = True
    if row.get("test_acc") is not None and (state["best_test_acc"] is None or row["test_acc"] > state["best_test_acc"]):
        state["best_test_acc"], state["best_test_epoch"] = row["test_acc"], row["epoch"]
    return improved


def _results(state: dict[str, Any], mcfg: ModelConfig, manifest: dict[str, Any], eval_splits: list[str]) -> dict:
    last_test = next((r["test_acc"] for r in reversed(state["history"]) if r.get("test_acc") is not None), None)
    return {
        "dataset": manifest["dataset"],
        "model": mcfg.model,
        "attention": mcfg.attention,
        "epochs": state["epoch"],
        "steps": state["step"],
        "stopped_by_max_steps": state["stopped_by_max_steps"],
        "test_acc_at_val_best_epoch": state["test_acc_at_best_val"],
        "val_best_acc": state["best_val_acc"],
        "val_best_epoch": state["best_val_epoch"],
        "best_test_acc_over_epochs": state["best_test_acc"],
        "best_test_epoch": state["best_test_epoch"],
        "test_acc_last_epoch": last_test,
        "selection": ("test_acc_at_val_best_epoch: the model chosen on the validation split (the honest figure); "
                      "best_test_acc_over_epochs: the best test accuracy over all epochs, selected on the test set "
                      "(the figure the reference reports)") if "val" in eval_splits else
                     ("no validation split: test_acc_at_val_best_epoch is not available; best_test_acc_over_epochs "
                      "is selected on the test set (the reference's figure)"),
        "model_config": asdict(mcfg),
    }
