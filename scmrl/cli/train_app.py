"""`scmrl-train` and `scmrl-eval`: parse options and call `scmrl.train.loop.train` / `scmrl.train.evaluate`.

Their options are generated from `scmrl.train.config.TrainConfig` and `EvalConfig` (help, flags, bounds
in the fields' metadata); only the CLI's own options (--verbose, eval's outputs) are declared here.

Multi-GPU / multi-node: `torchrun --nproc_per_node 8 -m scmrl.cli.train_app --shards ... --out ...`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path
from typing import NoReturn, Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.dataclass_options import options_command
from avdata.cli.errors import fail
from avdata.cli.stopping import interrupted, start
from avdata.prepare.lifeline import Terminated
from avdata.cli.help_format import typer_app, version_option
from scmrl.cli.torch_check import require_torch
from scmrl.train.config import LIBRARY_ONLY, EvalConfig, TrainConfig

train_app = typer_app(help="Train S-CMRL (or a baseline) on shards made by `avdata prepare`.")
eval_app = typer_app(help="Evaluate a model saved by scmrl-train on a split of some shards.")


@train_app.command()
@options_command(TrainConfig, exclude=LIBRARY_ONLY, overrides={"workers": {
    "default": None, "help": "DataLoader worker processes per process and split (0: read in the training "
    "process). Default: with --resume the run's own (its data order depends on it); else from the CPUs (per "
    "process under torchrun): on CPU 4, or one per CPU when fewer; on CUDA one per CPU but one, at most 8."}})
def train_cmd(cfg: TrainConfig,
              verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
              version: bool = version_option()) -> None:
    """Train on prepared shards; one process, or DDP under torchrun (NCCL on GPU, gloo on CPU)."""
    require_torch("scmrl-train")
    from avdata.prepare.lifeline import sigterm_as_interrupt
    from scmrl.train.loop import train

    setup_logging(verbose)
    try:
        with sigterm_as_interrupt():  # `kill`, a batch system's time limit: stop as on Ctrl-C, files whole
            train(cfg)
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank runs this; rank 0 wrote --out
            _print_where_the_run_is(cfg)
    except AvdataError as exc:
        _quiet_loader_workers()
        _end_with_own_status()
        fail(exc)
    except KeyboardInterrupt as exc:
        _stopped(cfg, 143 if isinstance(exc, Terminated) else 130)
    except RuntimeError as exc:
        _quiet_loader_workers()
        if not _worker_died(exc):
            raise
        stop = _stop_signal_of_worker(exc)
        if stop is not None:
            _stopped(cfg, stop)
        fail(AvdataError(f"{_worker_died_message(exc)}; {_resume_hint(cfg.out)}"))


def _quiet_loader_workers() -> None:
    """The run is ending: its DataLoader workers die with it (a kill or torchrun signals the whole process
    group), and torch's SIGCHLD handler would raise "DataLoader worker ... killed" into the message being
    printed (a traceback instead of the line). Nothing reads from them any more."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _end_with_own_status() -> None:
    """Under torchrun, ignore SIGTERM from here on: the error line is said and this process is ending with status
    2, but torchrun sends SIGTERM to the others when the first one ends, often while they print the same error
    (every rank refuses a locked --out), and their status became -15."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_signal_of_worker(exc: RuntimeError) -> int | None:
    """143 or 130 when a loader worker was ended by SIGTERM or SIGINT: the stop was sent to the process
    group (`kill` of the group, a batch system, torchrun stopping its processes), not a crash; None else."""
    text = str(exc)
    if "signal: Terminated" in text:
        return 143
    if "signal: Interrupt" in text:
        return 130
    return None


def _stopped(cfg: TrainConfig, status: int) -> NoReturn:
    _quiet_loader_workers()
    why = ""
    if status == 143 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        why = (" (SIGTERM: a `kill`, a batch system's time limit, or torchrun stopping the run's processes when one "
               "of them failed: its summary names that one)")
    interrupted(f"{_resume_hint(cfg.out)}{why}", status=status)


def _print_where_the_run_is(cfg: TrainConfig) -> None:
    """After the results table: the run folder's files and the command that evaluates its best model (one
    line each, never wrapped, so each can be copied)."""
    out = Path(cfg.out)
    console.print(f"run folder {out}: results.json, metrics.jsonl, curves.png, confusion.png, best.pt (the "
                  "validation-best epoch), checkpoint.pt (the last)", markup=False, highlight=False, soft_wrap=True)
    classes = f" --classes {shlex.quote(','.join(cfg.classes))}" if cfg.classes else ""
    console.print(f"  scmrl-eval --checkpoint {shlex.quote(str(out / 'best.pt'))} --shards {shlex.quote(cfg.shards)}"
                  f"{classes} --split test", markup=False, highlight=False, soft_wrap=True)


def _resume_hint(out: str) -> str:
    from scmrl.train.checkpoint import CHECKPOINT_NAME

    if (Path(out) / CHECKPOINT_NAME).exists():
        return (f"{out} holds the checkpoint of the last finished epoch; add --resume to the same command to "
                "continue from it")
    return "the first epoch had not finished: there is no checkpoint to resume from"


def _worker_died(exc: RuntimeError) -> bool:
    """torch's DataLoader raises "DataLoader worker (pid N) is killed by signal: Killed." (or "... exited
    unexpectedly") wherever the main process is when a worker dies: a message, not a traceback."""
    return str(exc).startswith("DataLoader worker")


def _worker_died_message(exc: RuntimeError) -> str:
    return (f"a data-loading worker process died ({str(exc).strip()}): the system kills one when memory runs out, "
            "or a decoder crashed; run again with fewer --workers (0 reads in the main process) or a smaller "
            "--batch-size")


@eval_app.command()
@options_command(EvalConfig)
def eval_cmd(cfg: EvalConfig,
             confusion: Optional[Path] = typer.Option(None, "--confusion", help="Also draw the confusion matrix to "
                                                      "this PNG."),
             as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON line on stdout."),
             verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
             version: bool = version_option()) -> None:
    """Accuracy and per-class accuracy of a saved model (its configuration is stored in the checkpoint)."""
    require_torch("scmrl-eval")
    from scmrl.train.evaluate import evaluate_checkpoint
    from scmrl.train.report import plot_confusion, print_eval

    setup_logging(verbose)
    try:
        res = evaluate_checkpoint(str(cfg.checkpoint), cfg.shards, cfg.split, cfg.device, cfg.batch_size, cfg.workers,
                                  cfg.noise_snr, cfg.classes)
    except AvdataError as exc:
        fail(exc)
        return
    except RuntimeError as exc:
        if not _worker_died(exc):
            raise
        fail(AvdataError(_worker_died_message(exc)))
        return
    if confusion is not None:
        plot_confusion(res["confusion"], res["classes"], confusion,
                       f"{cfg.split} confusion, {cfg.checkpoint.name}")
    if as_json:
        print(json.dumps(res))
        return
    print_eval(res, cfg.split)


def main_train() -> None:
    """`python -m scmrl.cli.train_app`, `torchrun -m scmrl.cli.train_app` (the console scripts: scmrl.cli.entry)."""
    start(lambda: train_app)


def main_eval() -> None:
    start(lambda: eval_app)


if __name__ == "__main__":
    main_train()
