"""`scmrl-train` and `scmrl-eval`: parse options and call `scmrl.train.loop.train` / `scmrl.train.evaluate`.

Multi-GPU / multi-node: `torchrun --nproc_per_node 8 -m avdata.cli.train_app --shards ... --out ...`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.errors import fail, run

train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                        help="Train S-CMRL (or a baseline) on shards made by `avdata prepare`.")
eval_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                       help="Evaluate a model saved by scmrl-train on a split of some shards.")


def _classes(text: Optional[str]) -> Optional[list[str]]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


@train_app.command()
def train_cmd(
    shards: str = typer.Option(..., "--shards", help="Shards made by `avdata prepare`: a local folder, its http(s) "
                               "URL, or .tar files (comma-separated or a glob; split read from <split>-NNNNNN.tar)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, best.pt, metrics.jsonl, results.json, "
                             "curves.png, confusion.png."),
    model: str = typer.Option("scmrl", "--model", help="scmrl | audio-only | visual-only | add | concat | "
                              "weight-attention | sca | cmci."),
    attention: Optional[str] = typer.Option(None, "--attention", help="S-CMRL attention ablation: spatial | temporal "
                                            "| spatiotemporal; temporal-reference | spatiotemporal-reference: the "
                                            "authors' temporal layout (heads and time mixed) [default: "
                                            "spatiotemporal; with --protocol reference spatiotemporal-reference]."),
    residual_proj: bool = typer.Option(True, "--residual-proj/--no-residual-proj", help="Linear + LIF on the "
                                       "cross-modal residual; off builds the authors' models without their "
                                       "alignment loss (the ablation rows; also pass --sao-weight 0 for those)."),
    protocol: str = typer.Option("ours", "--protocol", help="ours | reference: train as the authors' code does "
                                 "(no validation split, float32, no decay on biases/norms, per-epoch cosine, "
                                 "PIL spectrogram resize, noise on training inputs; README: protocol table)."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Training epochs."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Batch per process (drop-last in training)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate [default: 5e-3 * global batch / 1024]."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="AdamW weight decay."),
    warmup_epochs: float = typer.Option(5.0, "--warmup-epochs", min=0, help="Linear warm-up epochs (from 1e-6)."),
    min_lr: float = typer.Option(1e-5, "--min-lr", help="Learning rate at the end of the cosine decay."),
    embed_dim: Optional[int] = typer.Option(None, "--embed-dim", help="Embedding size C [default per dataset: "
                                            "CREMA-D 256, UrbanSound8K-AV 64, MNISTDVS-NTIDIGITS 256]."),
    heads: int = typer.Option(16, "--heads", min=1, help="Attention heads."),
    time_steps: Optional[int] = typer.Option(None, "--time-steps", min=1,
                                             help="Time steps T [default 4; event data: its stored bins]."),
    image_size: int = typer.Option(128, "--image-size", min=16, help="Side of the square spectrogram and image "
                                   "inputs (static data)."),
    alpha: float = typer.Option(1.5, "--alpha", help="Cross-modal residual weight."),
    tau_s: Optional[float] = typer.Option(None, "--tau-s", help="Alignment-loss temperature [default per dataset: "
                                          "0.07 CREMA-D, 0.08 UrbanSound8K-AV, 0.1 event data]."),
    sao_weight: float = typer.Option(1.0, "--sao-weight", help="Weight of the semantic-alignment loss."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", help="Label smoothing of the cross-entropy."),
    tau: float = typer.Option(2.0, "--tau", help="LIF membrane time constant."),
    threshold: float = typer.Option(1.0, "--threshold", help="LIF firing threshold."),
    attn_threshold: float = typer.Option(1.0, "--attn-threshold", help="Threshold of the attention neurons (the "
                                         "reference asks for 0.5 but fires at 1.0)."),
    detach_membrane: bool = typer.Option(True, "--detach-membrane/--no-detach-membrane",
                                         help="Detach the membrane between time steps (as the reference)."),
    lif: str = typer.Option("fused", "--lif", help="LIF implementation: fused (one autograd Function over T; on "
                            "CUDA Triton kernels, with the SPS max-pool fused in; SCMRL_LIF_TRITON=0 / "
                            "SCMRL_LIF_POOL_TRITON=0 switch those off) | loop (the plain reference loop). "
                            "Same values and gradients."),
    frames_per_step: bool = typer.Option(False, "--frames-per-step", help="One stored frame per time step instead "
                                         "of one random frame repeated over T."),
    noise_snr: Optional[float] = typer.Option(None, "--noise-snr", help="Add Gaussian noise at this SNR (dB) to "
                                              "the visual input."),
    noise_on: str = typer.Option("eval", "--noise-on", help="Where --noise-snr applies: train | eval | both "
                                 "(--protocol reference: train)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader worker processes per process "
                                          "and split (0: read in the training process; default: 4, or the "
                                          "number of CPUs when fewer)."),
    shuffle_buffer: Optional[int] = typer.Option(None, "--shuffle-buffer", min=1, help="Training shuffle buffer "
                                                 "in samples: for shards written in random order (avdata prepare) "
                                                 "each DataLoader worker's own, of this size; for other shards one "
                                                 "per process over all its workers, every batch drawn from it. "
                                                 "Default: a quarter of the samples the "
                                                 "process reads an epoch, at least 1,000 (or all of them) and at "
                                                 "most 4,096. 1 turns it off."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16 autocast on CUDA (CPU always runs float32; "
                             "--protocol reference: float32)."),
    seed: int = typer.Option(42, "--seed", help="Seed of initialisation, data order, frame choice and augmentation."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from the weights of this checkpoint "
                                             "(fine-tuning; e.g. one written by scmrl-convert); the architecture "
                                             "options must match it."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimizer steps "
                                            "in total (smoke runs); the run is evaluated and checkpointed."),
    stop_after_epochs: Optional[int] = typer.Option(None, "--stop-after-epochs", min=1, help="End this invocation "
                                                    "after N epochs (a job time limit); continue with --resume."),
    eval_every: int = typer.Option(1, "--eval-every", min=1, help="Evaluate val/test every N epochs (and at the end)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names, for .tar files "
                                          "without a manifest.json beside them."),
    io_retries: int = typer.Option(4, "--io-retries", min=0, help="Retries of a shard that cannot be opened or "
                                   "breaks off (remote shards), before the run stops."),
    io_backoff: float = typer.Option(0.5, "--io-backoff", min=0.0, help="Seconds before the first retry, doubled "
                                     "for each further one (at most 8 s)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Train on prepared shards; one process, or DDP under torchrun (NCCL on GPU, gloo on CPU)."""
    from scmrl.train.loop import TrainConfig, train

    setup_logging(verbose)
    try:
        cfg = TrainConfig(shards=shards, out=str(out), model=model, attention=attention,
                          residual_proj=residual_proj, protocol=protocol, epochs=epochs,
                          batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                          min_lr=min_lr, embed_dim=embed_dim, heads=heads, time_steps=time_steps,
                          image_size=image_size, alpha=alpha, tau_s=tau_s, sao_weight=sao_weight,
                          label_smoothing=label_smoothing, tau=tau, threshold=threshold,
                          attn_threshold=attn_threshold, detach_membrane=detach_membrane, lif=lif,
                          frames_per_step=frames_per_step, noise_snr=noise_snr, noise_on=noise_on, workers=_default_workers(workers),
                          shuffle_buffer=shuffle_buffer, device=device, amp=amp, seed=seed, resume=resume,
                          init_from=str(init_from) if init_from else None,
                          max_steps=max_steps, stop_after_epochs=stop_after_epochs, eval_every=eval_every,
                          classes=_classes(classes), io_retries=io_retries, io_backoff=io_backoff)
        train(cfg)
    except (AvdataError, ValueError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        from scmrl.train.checkpoint import CHECKPOINT_NAME

        if (Path(out) / CHECKPOINT_NAME).exists():
            console.print(f"interrupted: {out} holds the checkpoint of the last finished epoch; add --resume to "
                          "the same command to continue from it")
        else:
            console.print("interrupted before the first epoch finished: there is no checkpoint to resume from")
        raise typer.Exit(130)


def _default_workers(workers: int | None) -> int:
    if workers is not None:
        return workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cpus)


@eval_app.command()
def eval_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="best.pt or checkpoint.pt from a scmrl-train run."),
    shards: str = typer.Option(..., "--shards", help="Shards folder, URL or .tar files to evaluate on."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train | val | test."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Evaluation batch size."),
    workers: int = typer.Option(2, "--workers", min=0, help="DataLoader worker processes."),
    noise_snr: Optional[float] = typer.Option(None, "--noise-snr", help="Add Gaussian noise at this SNR (dB) "
                                              "to the visual input."),
    confusion: Optional[Path] = typer.Option(None, "--confusion", help="Also draw the confusion matrix to this PNG."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Class names for .tar files without a manifest."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON line on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Accuracy and per-class accuracy of a saved model (its configuration is stored in the checkpoint)."""
    from scmrl.train.evaluate import evaluate_checkpoint
    from scmrl.train.report import plot_confusion, print_eval

    setup_logging(verbose)
    try:
        res = evaluate_checkpoint(str(checkpoint), shards, split, device, batch_size, workers, noise_snr,
                                  _classes(classes))
    except (AvdataError, ValueError) as exc:
        fail(exc)
        return
    if confusion is not None:
        plot_confusion(res["confusion"], res["classes"], confusion, f"{split} confusion, {checkpoint.name}")
    if as_json:
        print(json.dumps(res))
        return
    print_eval(res, split)


def main_train() -> None:
    run(train_app)


def main_eval() -> None:
    run(eval_app)


if __name__ == "__main__":
    main_train()
