"""The training loop of `scmrl-train`: the reference recipe (AdamW, scaled lr, warm-up + cosine,
label-smoothed CE + alignment loss), with the reference's defects fixed: model selection on a
validation split, augmentation drawn fresh every epoch, exact resume from per-epoch checkpoints, and
single process or DDP through torchrun (NCCL on GPU, gloo on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from avdata.errors import AvdataError

from .config import ModelConfig
from .data import StreamConfig, data_kind, event_bins, make_loader, open_shards, slot_batches
from .evaluate import evaluate
from .losses import compute_loss
from .models import build_model
from .schedule import lr_at, scaled_lr
from .transforms import event_batch, static_batch

log = logging.getLogger("scmrl.train")

DATASET_DEFAULTS = {"cremad": {"tau_s": 0.07, "embed_dim": 256}, "urbansound8k-av": {"tau_s": 0.08, "embed_dim": 64},
                    "mnistdvs-ntidigits": {"tau_s": 0.1, "embed_dim": 256}}


@dataclass
class TrainConfig:
    shards: str
    out: str
    model: str = "scmrl"
    attention: str = "spatiotemporal"
    epochs: int = 100
    batch_size: int = 128
    lr: float | None = None  # default: 5e-3 * global batch / 1024
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    embed_dim: int | None = None  # default per dataset (CREMA-D 256, UrbanSound8K-AV 64)
    heads: int = 16
    time_steps: int | None = None  # default 4; event data: its number of bins
    image_size: int = 128
    alpha: float = 1.5
    tau_s: float | None = None  # default per dataset
    sao_weight: float = 1.0
    label_smoothing: float = 0.1
    tau: float = 2.0
    threshold: float = 1.0
    attn_threshold: float = 1.0
    detach_membrane: bool = True
    lif: str = "fused"
    frames_per_step: bool = False
    noise_snr: float | None = None
    noise_on: str = "eval"  # train | eval | both
    workers: int = 0
    shuffle_buffer: int = 1000
    device: str = "auto"
    seed: int = 42
    resume: bool = False
    max_steps: int | None = None
    eval_every: int = 1
    stop_after_epochs: int | None = None  # end this invocation after N epochs (e.g. a job time limit); --resume later


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """From torchrun's environment; NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise AvdataError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def model_config(cfg: TrainConfig, manifest: dict[str, Any]) -> ModelConfig:
    kind = data_kind(manifest)
    defaults = DATASET_DEFAULTS.get(manifest["dataset"], {"tau_s": 0.07, "embed_dim": 256})
    common = dict(num_classes=len(manifest["classes"]), model=cfg.model, attention=cfg.attention,
                  embed_dim=cfg.embed_dim or defaults["embed_dim"], heads=cfg.heads, alpha=cfg.alpha, tau=cfg.tau,
                  v_threshold=cfg.threshold, attn_threshold=cfg.attn_threshold, detach_membrane=cfg.detach_membrane,
                  tau_s=cfg.tau_s if cfg.tau_s is not None else (0.1 if kind == "events" else defaults["tau_s"]),
                  sao_weight=cfg.sao_weight, label_smoothing=cfg.label_smoothing, lif_impl=cfg.lif)
    if kind == "events":
        return ModelConfig(**common, time_steps=cfg.time_steps or event_bins(manifest), audio_channels=1,
                           visual_channels=2, audio_size=28, visual_size=28, embedding="shallow")
    return ModelConfig(**common, time_steps=cfg.time_steps or 4, audio_size=cfg.image_size,
                       visual_size=cfg.image_size, embedding="sps")


def to_inputs(batch, kind: str, mcfg: ModelConfig, cfg: TrainConfig, device: torch.device, train: bool,
              gen: torch.Generator):
    audio, visual, labels = (t.to(device, non_blocking=True) for t in batch)
    noisy = cfg.noise_snr is not None and (cfg.noise_on == "both" or cfg.noise_on == ("train" if train else "eval"))
    snr = cfg.noise_snr if noisy else None
    if kind == "events":
        a, v = event_batch(audio, visual, train, gen, snr)
    else:
        a, v = static_batch(audio, visual, mcfg.time_steps, cfg.image_size, train, gen, snr)
    return a, v, labels


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate each epoch, checkpoint, and return the final results (also in out/results.json)."""
    from .report import plot_confusion, plot_curves, print_epoch

    device0 = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dinfo = init_distributed(device0)
    device = resolve_device(cfg.device, dinfo.local_rank)
    out = Path(cfg.out)
    if dinfo.main:
        out.mkdir(parents=True, exist_ok=True)
    loc = open_shards(cfg.shards)
    manifest = loc.manifest
    kind = data_kind(manifest)
    if "train" not in manifest["splits"]:
        raise AvdataError(f"{cfg.shards}: no train split")
    mcfg = model_config(cfg, manifest)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg).to(device)
    if dinfo.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    peak = cfg.lr if cfg.lr is not None else scaled_lr(cfg.batch_size, dinfo.world)
    opt = torch.optim.AdamW(model.parameters(), lr=peak, eps=1e-8, weight_decay=cfg.weight_decay)
    n_train = manifest["splits"]["train"]["num_samples"]
    if dinfo.world > 1:  # the same number of steps on every rank, or DDP waits forever
        steps_per_epoch = min(slot_batches(n_train, r, dinfo.world, cfg.workers, cfg.batch_size) for r in range(dinfo.world))
    else:
        steps_per_epoch = max(1, n_train // cfg.batch_size)
    if steps_per_epoch < 1:
        raise AvdataError(f"{n_train} training samples make no full batch of {cfg.batch_size} per rank; lower --batch-size")
    if cfg.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    stream = dict(kind=kind, image_size=cfg.image_size, time_steps=mcfg.time_steps, frames_per_step=cfg.frames_per_step,
                  seed=cfg.seed)
    pin = device.type == "cuda"
    train_loader, train_ds = make_loader(loc, "train", StreamConfig(**stream, shuffle_buffer=cfg.shuffle_buffer),
                                         cfg.batch_size, cfg.workers, True, dinfo.rank, dinfo.world, pin)
    eval_loaders = {s: make_loader(loc, s, StreamConfig(**stream), cfg.batch_size, cfg.workers, False,
                                   dinfo.rank, dinfo.world, pin)[0]
                    for s in ("val", "test") if s in manifest["splits"]}
    state = {"epoch": 0, "step": 0, "history": [], "best_val": -1.0, "best_val_epoch": None,
             "test_at_best_val": None, "best_test": -1.0, "best_test_epoch": None}
    ckpt_path = out / "checkpoint.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        (model.module if dinfo.world > 1 else model).load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log.info("resumed from %s at epoch %d", ckpt_path, state["epoch"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    metrics_path = out / "metrics.jsonl"
    last = cfg.epochs if cfg.stop_after_epochs is None else min(cfg.epochs, state["epoch"] + cfg.stop_after_epochs)
    for epoch in range(state["epoch"], last):
        model.train()
        train_ds.set_epoch(epoch)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 100003 + epoch)
        t0, seen, correct, sums = time.perf_counter(), 0, 0, {}
        for i, batch in enumerate(train_loader):
            if i >= steps_per_epoch:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], steps_per_epoch, cfg.epochs, peak, cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr)
            a, v, labels = to_inputs(batch, kind, mcfg, cfg, device, True, gen)
            with autocast:
                outp = model(a, v)
            loss, parts = compute_loss(mcfg, outp, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            seen += labels.numel()
            correct += int((outp.logits.argmax(1) == labels).sum())
            for k, val in parts.items():
                sums[k] = sums.get(k, 0.0) + val * labels.numel()
        seconds = time.perf_counter() - t0
        counts = torch.tensor([seen, correct], dtype=torch.float64, device=device)
        if dinfo.world > 1:
            dist.all_reduce(counts)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_samples": int(counts[0]),
               "train_acc": float(counts[1] / max(1, counts[0])), **{f"train_{k}": v / max(1, seen) for k, v in sums.items()},
               "samples_per_s": float(counts[0]) / max(seconds, 1e-9), "seconds": seconds}
        confusion_epoch = None
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            for split, loader in eval_loaders.items():
                res = evaluate(model, loader, kind, mcfg, cfg, device, dinfo.world)
                row[f"{split}_acc"], row[f"{split}_samples"] = res["accuracy"], res["samples"]
                if split == "test":
                    confusion_epoch = res["confusion"]
            if "test_acc" in row and row["test_acc"] > state["best_test"]:
                state["best_test"], state["best_test_epoch"] = row["test_acc"], epoch + 1
            sel = row.get("val_acc", None)
            if sel is not None and sel > state["best_val"]:
                state["best_val"], state["best_val_epoch"] = sel, epoch + 1
                state["test_at_best_val"] = row.get("test_acc")
                state["confusion"] = confusion_epoch
            elif sel is None and confusion_epoch is not None:
                state["confusion"] = confusion_epoch
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if dinfo.main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print_epoch(row)
            _atomic_save({"model": (model.module if dinfo.world > 1 else model).state_dict(), "optimizer": opt.state_dict(),
                          "state": state, "model_config": asdict(mcfg), "train_config": asdict(cfg),
                          "classes": manifest["classes"], "dataset": manifest["dataset"]}, ckpt_path)
            if sel is not None and state["best_val_epoch"] == epoch + 1:
                _atomic_save({"model": (model.module if dinfo.world > 1 else model).state_dict(),
                              "model_config": asdict(mcfg), "train_config": asdict(cfg), "classes": manifest["classes"],
                              "dataset": manifest["dataset"], "epoch": epoch + 1}, out / "best.pt")
    results = {"dataset": manifest["dataset"], "model": cfg.model, "epochs": state["epoch"],
               "val_best_acc": state["best_val"] if state["best_val_epoch"] else None,
               "val_best_epoch": state["best_val_epoch"],
               "test_acc_at_val_best_epoch": state["test_at_best_val"],
               "best_test_acc_over_epochs": state["best_test"] if state["best_test_epoch"] else None,
               "best_test_epoch": state["best_test_epoch"],
               "note": "best_test_acc_over_epochs is the reference's figure (selected on the test set); "
                       "test_acc_at_val_best_epoch is the honest one (selected on the validation split)."}
    if dinfo.main:
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plot_curves(state["history"], out / "curves.png")
        if state.get("confusion") is not None:
            plot_confusion(state["confusion"], manifest["classes"], out / "confusion.png")
    if dinfo.world > 1:
        dist.barrier()
    return results
