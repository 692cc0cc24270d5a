"""Training runs stopped as users' runs are (Ctrl-C, `kill` from a batch system's time limit, a stop between
two files of one epoch): one line and the resume hint, whole files only, and `--resume` ending where the
uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import scmrl.train.loop
from avdata.prepare.lifeline import interrupts_deferred
from scmrl.cli.train_app import train_app
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train.config import TrainConfig
from scmrl.train.loop import train
from scmrl.train.report import plot_curves, read_metrics

TINY = dict(batch_size=32, lr=5e-3, warmup_epochs=1, embed_dim=32, heads=4, time_steps=2, image_size=32,
            shuffle_buffer=128, workers=0)
TINY_ARGS = ["--batch-size", "32", "--lr", "5e-3", "--warmup-epochs", "1", "--embed-dim", "32", "--heads", "4",
             "--time-steps", "2", "--image-size", "32", "--shuffle-buffer", "128", "--workers", "0", "--device", "cpu"]
RUN_FILES = {"checkpoint.pt", "best.pt", "metrics.jsonl", "results.json", "curves.png", "confusion.png"}


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    return make_synthetic_av_shards(tmp_path_factory.mktemp("small") / "s", 128, 32, 32, per_shard=32, seed=1)


class _Unhandled(Exception):
    pass


def test_sigterm_stops_the_run_as_ctrl_c_does(tmp_path, monkeypatch):
    """A batch system's time limit (Slurm, Kubernetes) sends SIGTERM: the run died there with no word of
    how to go on (exit -15, a checkpoint.pt.tmp of an epoch being saved left behind)."""
    def killed(_cfg):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    def unhandled(*_):
        raise _Unhandled("SIGTERM reached the test's own handler: scmrl-train installed none")

    monkeypatch.setattr(scmrl.train.loop, "train", killed)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        res = CliRunner().invoke(train_app, ["--shards", str(tmp_path), "--out", str(tmp_path / "r"), "--device",
                                             "cpu"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not isinstance(res.exception, _Unhandled), res.exception
    assert res.exit_code == 143, res.output
    assert "interrupted:" in res.output and "no checkpoint to resume from" in " ".join(res.output.split())
    assert signal.getsignal(signal.SIGTERM) is previous  # given back


@pytest.mark.parametrize("signame,status", [("Terminated", 143), ("Interrupt", 130)])
def test_a_loader_worker_stopped_with_the_run_is_an_interruption(tmp_path, monkeypatch, signame, status):
    """`kill` of the process group, a batch system or torchrun (which signals each rank's process group) stops the
    DataLoader workers too, and torch reports that as "DataLoader worker ... killed by signal: Terminated", often
    before the run's own SIGTERM: it was called a worker killed for memory (status 2), or torch's SIGCHLD handler
    raised it into the "interrupted" line (a traceback)."""
    def stopped(_cfg):
        signal.signal(signal.SIGCHLD, lambda *_: None)  # as torch's DataLoader installs one
        raise RuntimeError(f"DataLoader worker (pid 12345) is killed by signal: {signame}. ")

    previous = signal.getsignal(signal.SIGCHLD)
    monkeypatch.setattr(scmrl.train.loop, "train", stopped)
    try:
        res = CliRunner().invoke(train_app, ["--shards", str(tmp_path), "--out", str(tmp_path / "r"), "--device",
                                             "cpu"])
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL  # nothing raises from the dying workers
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert res.exit_code == status, res.output
    assert res.output.startswith("interrupted: ") and "no checkpoint to resume from" in " ".join(res.output.split())
    assert "worker" not in res.output


def test_a_plot_interrupted_while_drawn_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """curves.png and confusion.png were drawn in place: Ctrl-C or kill while matplotlib wrote them left a
    truncated PNG in the run folder."""
    from matplotlib.figure import Figure

    rows = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.5}, {"epoch": 2, "train_loss": 1.5, "train_acc": 0.7}]
    path = tmp_path / "curves.png"
    plot_curves(rows, path)
    before = path.read_bytes()

    def stopped(self, fname, *args, **kwargs):  # matplotlib has written the first 100 bytes
        fname.write(before[:100]) if hasattr(fname, "write") else Path(fname).write_bytes(before[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped)
    with pytest.raises(KeyboardInterrupt):
        plot_curves(rows[:1], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.slow
def test_a_run_stopped_between_checkpoint_and_best_resumes_to_the_same_best(small_shards, tmp_path, monkeypatch):
    """checkpoint.pt is written before best.pt: a run stopped in between (Ctrl-C, kill, the OOM killer) and
    resumed ended with best.pt missing, or holding an earlier epoch than results.json's validation-best one,
    as nothing rewrote it (these shards' validation accuracy peaks at epoch 1 over 3 epochs)."""
    cfg = dict(shards=str(small_shards), model="scmrl", epochs=3, **TINY)
    a = train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    assert a["val_best_epoch"] == 1
    real = scmrl.train.loop.save_checkpoint

    def stop_at_best(path, payload):
        if Path(path).name == "best.pt":
            raise KeyboardInterrupt
        return real(path, payload)

    monkeypatch.setattr(scmrl.train.loop, "save_checkpoint", stop_at_best)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(tmp_path / "b"), **cfg))
    monkeypatch.setattr(scmrl.train.loop, "save_checkpoint", real)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint.pt", "metrics.jsonl"]
    b = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **cfg))
    assert a == b
    assert _same(_weights(tmp_path / "a" / "best.pt"), _weights(tmp_path / "b" / "best.pt"))
    assert torch.load(tmp_path / "b" / "best.pt", weights_only=True)["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_cli_interrupted_mid_run_resumes_to_the_uninterrupted_result(small_shards, tmp_path, sig, status):
    """Through the real CLI: stopped after its first checkpoint, one line, only whole files, and --resume ends
    with the weights, best.pt and metrics of the run that was never stopped."""
    base = ["--shards", str(small_shards), "--epochs", "3", *TINY_ARGS]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "scmrl.cli.train_app", *base, "--out"]
    p = subprocess.Popen([*cmd, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while p.poll() is None and not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(sig)
    output, _ = p.communicate(timeout=60)
    assert p.returncode == status, output
    assert "Traceback" not in output and "add --resume to the same command" in " ".join(output.split())
    assert {f.name for f in out.iterdir()} <= RUN_FILES and "checkpoint.pt" in {f.name for f in out.iterdir()}
    done = read_metrics(out / "metrics.jsonl")  # whole lines only
    assert 1 <= len(done) <= 3
    r = subprocess.run([*cmd, str(out), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*cmd, str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("checkpoint.pt", "best.pt"):
        assert _same(_weights(tmp_path / "a" / name), _weights(out / name)), name
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and k != "samples_per_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "a" / "metrics.jsonl")) == strip(read_metrics(out / "metrics.jsonl"))
    assert (tmp_path / "a" / "results.json").read_text() == (out / "results.json").read_text()
    assert {f.name for f in out.iterdir()} == RUN_FILES


@pytest.mark.slow
def test_temporaries_of_a_killed_run_are_never_read_and_a_rerun_removes_only_its_own(tmp_path):
    """SIGKILL while a file was written leaves `<name>.tmp` (no handler runs); one no later write replaced (a
    best.pt.tmp when no later epoch improved, or, as here, no validation split) stayed in --out for good. A run
    now removes its own names' temporaries, and no other file."""
    no_val = make_synthetic_av_shards(tmp_path / "s", 64, 0, 32, per_shard=32, seed=1)
    out = tmp_path / "r"
    out.mkdir()
    for name in ("checkpoint.pt.tmp", "best.pt.tmp", "results.json.tmp", "curves.png.tmp", "notes.tmp", "a.pt.tmp"):
        (out / name).write_bytes(b"half a file")
    train(TrainConfig(shards=str(no_val), out=str(out), model="scmrl", epochs=1, max_steps=1, **TINY))
    assert {f.name for f in out.iterdir()} == RUN_FILES - {"best.pt"} | {"notes.tmp", "a.pt.tmp"}
    assert (out / "notes.tmp").read_bytes() == (out / "a.pt.tmp").read_bytes() == b"half a file"


def test_a_stop_during_a_checkpoint_write_waits_for_it():
    """Ctrl-C or SIGTERM inside torch.save's write came out as torch's RuntimeError ('unexpected pos'): a
    traceback, status 1 instead of 130/143. Held back while the pair is written, then delivered."""
    import signal

    from avdata.prepare.lifeline import Terminated, interrupts_deferred, sigterm_as_interrupt

    written = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # delivered to the handler by now
            written.append("checkpoint.pt")
    with sigterm_as_interrupt(), pytest.raises(Terminated):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            written.append("best.pt")
    assert written == ["checkpoint.pt", "best.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_loader_worker_ending_during_the_save_is_reported_after_it(tmp_path):
    """torchrun's SIGTERM (or `kill` of the process group) ends the DataLoader workers too, and torch's SIGCHLD
    handler raised their death inside torch.save, cutting the checkpoint and best.pt pair short as the signal
    itself no longer could."""
    class WorkerDied(RuntimeError):
        pass

    def torch_like(*_):
        raise WorkerDied("DataLoader worker (pid 1) is killed by signal: Terminated.")

    previous = signal.signal(signal.SIGCHLD, torch_like)
    written = []
    try:
        with pytest.raises(WorkerDied):
            with interrupts_deferred():
                subprocess.run([sys.executable, "-c", "pass"], check=True)  # its end sends SIGCHLD
                time.sleep(0.05)
                written.append("checkpoint.pt")
        assert signal.getsignal(signal.SIGCHLD) is torch_like
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert written == ["checkpoint.pt"]
