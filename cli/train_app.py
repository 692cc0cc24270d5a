"""`scmrl-train` and `scmrl-eval`: parse options, call scmrl.train / scmrl.evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging

train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
eval_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@train_app.command()
def train_cmd(
    shards: str = typer.Option(..., "--shards", help="Shards folder made by `avdata prepare`: a local path or an "
                               "http(s) URL (its manifest.json lists shards, classes and shapes)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, best.pt, metrics.jsonl, results.json, PNGs."),
    model: str = typer.Option("scmrl", "--model", help="scmrl | audio-only | visual-only | add | concat | "
                              "weight-attention | sca | cmci."),
    attention: str = typer.Option("spatiotemporal", "--attention", help="S-CMRL ablation: spatial | temporal | spatiotemporal."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Training epochs."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Batch per process (drop-last in training)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 5e-3 * global batch / 1024)."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="AdamW weight decay."),
    warmup_epochs: int = typer.Option(5, "--warmup-epochs", min=0, help="Linear warm-up epochs from 1e-6."),
    embed_dim: Optional[int] = typer.Option(None, "--embed-dim", help="Embedding size C (default: CREMA-D 256, UrbanSound8K-AV 64)."),
    heads: int = typer.Option(16, "--heads", help="Attention heads."),
    time_steps: Optional[int] = typer.Option(None, "--time-steps", help="T (default 4; event data: its bins)."),
    image_size: int = typer.Option(128, "--image-size", help="Side of the square audio and visual inputs (static data)."),
    alpha: float = typer.Option(1.5, "--alpha", help="Cross-modal residual weight."),
    tau_s: Optional[float] = typer.Option(None, "--tau-s", help="Alignment temperature (default per dataset: 0.07, 0.08, 0.1)."),
    sao_weight: float = typer.Option(1.0, "--sao-weight", help="Weight of the semantic-alignment loss."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", help="Label smoothing of the cross-entropy."),
    tau: float = typer.Option(2.0, "--tau", help="LIF membrane time constant."),
    threshold: float = typer.Option(1.0, "--threshold", help="LIF firing threshold."),
    attn_threshold: float = typer.Option(1.0, "--attn-threshold", help="Threshold of the attention neurons "
                                         "(the reference asks for 0.5 but fires at 1.0)."),
    detach_membrane: bool = typer.Option(True, "--detach-membrane/--no-detach-membrane",
                                         help="Detach the membrane between time steps (the reference does)."),
    lif: str = typer.Option("fused", "--lif", help="LIF implementation: fused (one autograd op over T) or loop."),
    frames_per_step: bool = typer.Option(False, "--frames-per-step", help="One stored frame per time step "
                                         "instead of one random frame repeated over T."),
    noise_snr: Optional[float] = typer.Option(None, "--noise-snr", help="Add Gaussian noise at this SNR (dB) to the visual input."),
    noise_on: str = typer.Option("eval", "--noise-on", help="Where the noise goes: train | eval | both."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes per rank."),
    shuffle_buffer: int = typer.Option(1000, "--shuffle-buffer", min=1, help="Samples in the training shuffle buffer."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    seed: int = typer.Option(42, "--seed", help="Seed of initialisation, data order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt exactly where it stopped."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap the steps per epoch (smoke runs)."),
    eval_every: int = typer.Option(1, "--eval-every", min=1, help="Evaluate val/test every N epochs (and at the end)."),
    stop_after_epochs: Optional[int] = typer.Option(None, "--stop-after-epochs", help="End this run after N epochs "
                                                    "(e.g. to fit a job time limit); continue later with --resume."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More logging."),
) -> None:
    """Train S-CMRL (or a baseline) on prepared shards; single process, or DDP under torchrun."""
    from scmrl.train import TrainConfig, train

    setup_logging(verbose)
    cfg = TrainConfig(shards=shards, out=str(out), model=model, attention=attention, epochs=epochs, batch_size=batch_size,
                      lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, embed_dim=embed_dim, heads=heads,
                      time_steps=time_steps, image_size=image_size, alpha=alpha, tau_s=tau_s, sao_weight=sao_weight,
                      label_smoothing=label_smoothing, tau=tau, threshold=threshold, attn_threshold=attn_threshold,
                      detach_membrane=detach_membrane, lif=lif, frames_per_step=frames_per_step, noise_snr=noise_snr,
                      noise_on=noise_on, workers=workers, shuffle_buffer=shuffle_buffer, device=device, seed=seed,
                      resume=resume, max_steps=max_steps, eval_every=eval_every,
                      stop_after_epochs=stop_after_epochs)
    try:
        res = train(cfg)
    except (AvdataError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2)
    console.print(f"test accuracy at the validation-best epoch: {res['test_acc_at_val_best_epoch']}  "
                  f"(epoch {res['val_best_epoch']})", highlight=False)
    console.print(f"best test accuracy over epochs (the reference's figure): {res['best_test_acc_over_epochs']}  "
                  f"(epoch {res['best_test_epoch']})", highlight=False)


@eval_app.command()
def eval_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt or best.pt from a run folder."),
    shards: str = typer.Option(..., "--shards", help="Shards folder or URL to evaluate on."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(128, "--batch-size", help="Evaluation batch size."),
    confusion_png: Optional[Path] = typer.Option(None, "--confusion-png", help="Also draw the confusion matrix here."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Evaluate a saved model on any split: accuracy and per-class accuracy."""
    from scmrl.evaluate import evaluate_checkpoint
    from scmrl.report import plot_confusion

    try:
        res = evaluate_checkpoint(str(checkpoint), shards, split, device, batch_size)
    except (AvdataError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2)
    if confusion_png:
        plot_confusion(res["confusion"], res["classes"], confusion_png)
    if as_json:
        print(json.dumps(res))
        return
    console.print(f"{split}: accuracy {res['accuracy']:.4f} over {res['samples']} samples", highlight=False)
    for name, acc in zip(res["classes"], res["per_class"]):
        console.print(f"  {name}: {acc:.4f}", highlight=False)


def main_train() -> None:
    train_app()


def main_eval() -> None:
    eval_app()
