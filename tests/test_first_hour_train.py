"""The first hour of training: the demo's printed command learns, the default learning rate does not
vanish on small batches (and a schedule that cannot train is named), and a run estimates its memory and
time before it starts, picks a CPU batch that fits and refuses one that does not with a message."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from scmrl.cli.train_app import train_app
from avdata.errors import AvdataError
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train import footprint
from scmrl.train.config import TrainConfig
from scmrl.train.footprint import Footprint, choose_batch
from scmrl.train.loop import train
from scmrl.train.schedule import LOW_LR, lr_warnings, make_schedule, scaled_lr

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def test_demo_printed_training_command_learns(tmp_path, monkeypatch):
    """`avdata demo`, then its printed `scmrl-train` line exactly as printed: well above chance (1/6)."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["demo", "--out", "demo"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "partial copy" not in out and "verify: all shards OK" in out and "6 clip(s) skipped" in out
    card = (tmp_path / "demo" / "shards" / "README.md").read_text()
    assert "--split standard" in card and "--test-fraction" not in card  # no option that has no effect
    line = next(ln.strip() for ln in res.output.splitlines() if ln.strip().startswith("scmrl-train "))
    argv = shlex.split(line)[1:]
    assert "--lr" in argv and "--warmup-epochs" in argv
    run = CliRunner().invoke(train_app, argv)
    assert run.exit_code == 0, run.output
    results = json.loads((tmp_path / "demo" / "run" / "results.json").read_text())
    assert results["test_acc_last_epoch"] >= 0.5, results
    assert results["model_config"]["num_classes"] == 6
    # a rerun with fewer clips holds those clips only (the earlier ones were mixed in before)
    again = CliRunner().invoke(app, ["demo", "--out", "demo", "--clips", "24", "--seed", "1"])
    assert again.exit_code == 0, again.output
    manifest = json.loads((tmp_path / "demo" / "shards" / "manifest.json").read_text())
    assert sum(s["num_samples"] for s in manifest["splits"].values()) + len(manifest["skipped"]) == 24 + 6
    assert len(list((tmp_path / "demo" / "raw" / "VideoFlash").iterdir())) == 24 + 6


def test_demo_trains_on_more_clips_than_it_tests(tmp_path):
    """Three of the demo's good clips in four come from the published train split, every emotion in each."""
    from avdata.datasets.cremad.recipe import all_clips
    from avdata.demo import DEMO_CLIPS, demo_clips

    clips = demo_clips(DEMO_CLIPS, 0)
    standard = all_clips()
    good = clips[:DEMO_CLIPS]
    assert len(clips) == DEMO_CLIPS + 6 == len(set(clips))
    assert sum(standard[c] == "train" for c in good) == 54 and sum(standard[c] == "test" for c in good) == 18
    for split in ("train", "test"):
        assert {c.split("_")[2] for c in good if standard[c] == split} == {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"}


def test_options_without_effect_are_not_recorded():
    """--test-fraction only acts with --split actor: the manifest (and the card's command) record it only then."""
    from avdata.datasets.cremad.recipe import CremadOptions
    from avdata.datasets.recipe import options_dict

    assert "test_fraction" not in options_dict(CremadOptions())
    assert options_dict(CremadOptions(split="actor", test_fraction=0.2))["test_fraction"] == 0.2
    assert options_dict(CremadOptions())["val_fraction"] == 0.1  # the others stay


def test_default_lr_does_not_vanish_on_small_batches():
    assert scaled_lr(128) == pytest.approx(6.25e-4)  # the recipe's numbers at its batch
    assert scaled_lr(256) == pytest.approx(1.25e-3) and scaled_lr(1024) == pytest.approx(5e-3)
    assert scaled_lr(4) == pytest.approx(6.25e-4 * (4 / 128) ** 0.5)  # 1.1e-4, not the linear 1.95e-5
    assert scaled_lr(4) > 5 * (5e-3 * 4 / 1024)
    assert scaled_lr(1) >= 5e-5
    values = [scaled_lr(b) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    assert values == sorted(values)


def test_schedule_that_cannot_train_is_named():
    # the run: batch 4, 2 epochs inside a 5-epoch warm-up, the per-epoch (reference) schedule
    sched = make_schedule("per-epoch", 5e-3 * 4 / 1024, epochs=2, warmup_epochs=5.0)
    warnings = lr_warnings(sched, 4, given=False)
    assert len(warnings) == 2
    assert "--warmup-epochs 5 is not shorter than --epochs 2" in warnings[0] and "never decays" in warnings[0]
    reached = 1e-6 + (5e-3 * 4 / 1024 - 1e-6) / 5  # epoch 1 of the warm-up, the highest trained
    assert f"peaks at {reached:.3g}" in warnings[1] and "global batch 4" in warnings[1] and "--lr" in warnings[1]
    assert reached < LOW_LR
    # the demo's schedule and the recipe's say nothing
    assert lr_warnings(make_schedule("per-step", 5e-3, 10, 1.0), 4, given=True) == []
    assert lr_warnings(make_schedule("per-step", scaled_lr(128), 100, 5.0), 128, given=False) == []


def _fp(per_sample_mib: float, device: str = "cpu") -> Footprint:
    return Footprint(device=device, probe_batch=2, now_bytes=500 * MIB, state_bytes=10 * MIB,
                     per_sample_bytes=int(per_sample_mib * MIB), buffer_bytes=40 * MIB, seconds_per_sample=0.5)


def test_cpu_batch_chosen_to_fit_and_refused_when_it_does_not():
    fp = _fp(90)  # the C 256 model: ~90 MiB a sample
    # 8 GiB free: 128 would take 11.3 GiB more; 64 takes 5.7 GiB (under 80% of 8), so 64
    assert choose_batch(fp, None, 8 << 30) == 64
    assert choose_batch(fp, None, 64 << 30) == 128
    assert choose_batch(fp, 32, 8 << 30) == 32
    with pytest.raises(AvdataError) as exc:
        choose_batch(fp, 128, 8 << 30)
    msg = str(exc.value)
    assert "batch 128 on cpu" in msg and "--batch-size 64" in msg and "8.0 GiB are available" in msg
    assert "90 MiB per sample" in msg and "or train on a GPU" in msg
    with pytest.raises(AvdataError, match="even batch 1 does not fit"):
        choose_batch(fp, None, 60 * MIB)
    # two CPU processes (DDP) share the memory
    assert choose_batch(fp, None, 8 << 30, processes=2) == 32
    assert choose_batch(fp, 128, None) == 128  # nothing known: as asked
    assert choose_batch(_fp(90, "cuda"), None, 80 << 30) == 128
    # never above what a process trains on an epoch (64 for a 12-sample split left no batch to train)
    assert choose_batch(fp, None, 8 << 30, samples=12) == 8
    assert choose_batch(_fp(90, "cuda"), None, 80 << 30, samples=100) == 64
    assert choose_batch(_fp(90, "cuda"), None, None, samples=100) == 64
    assert choose_batch(fp, 32, 8 << 30, samples=12) == 32  # as asked: the run names the fix if it is too large


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_synthetic_av_shards(tmp_path_factory.mktemp("syn") / "s", 64, 16, 16, per_shard=32)


TINY = dict(epochs=1, embed_dim=32, heads=4, time_steps=2, image_size=32, workers=0, max_steps=1)


def test_impossible_batch_gives_the_message_not_a_crash(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(footprint, "available_bytes", lambda device: 1 * MIB)
    res = CliRunner().invoke(train_app, ["--shards", str(shards), "--out", str(tmp_path / "r"), "--batch-size", "16",
                                         "--epochs", "1", "--embed-dim", "32", "--heads", "4", "--time-steps", "2",
                                         "--image-size", "32", "--workers", "0"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "training at batch 16 on cpu would take about" in out and "1.0 MiB" not in out
    assert "even batch 1 does not fit" in out and "Traceback" not in out
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_batch_larger_than_the_train_split_names_one_that_fits(shards, tmp_path):
    """The CPU's automatic batch (or the recipe's 128) on a small split, e.g. the demo's: the message names
    the batch that fits (it said "lower --batch-size or --workers", and fewer workers do not help)."""
    with pytest.raises(AvdataError, match=r"\(64 samples, 1 process\(es\), 1 worker\(s\) each\); pass --batch-size "
                                          r"64 or less$"):
        train(TrainConfig(shards=str(shards), out=str(tmp_path / "r"), batch_size=128, **TINY))


def test_run_prints_its_estimate_and_fits_its_cpu_batch(shards, tmp_path, monkeypatch, caplog):
    real = footprint.probe_footprint
    seen = {}

    def probe(*args, **kwargs):  # the real probe, with a per-sample size that tells batch 8 from 16 for sure
        seen["fp"] = fp = dataclasses.replace(real(*args, **kwargs), per_sample_bytes=50 * MIB)
        return fp

    monkeypatch.setattr(footprint, "probe_footprint", probe)
    # room for the growth at batch 8 (under 80%), not at 16
    monkeypatch.setattr(footprint, "available_bytes",
                        lambda device: int(seen["fp"].growth_bytes(8) / 0.8) + 1)
    with caplog.at_level(logging.INFO, logger="scmrl.train.loop"):
        res = train(TrainConfig(shards=str(shards), out=str(tmp_path / "r"), lr=5e-3, **TINY))
    text = " ".join(caplog.text.split())
    assert re.search(r"estimate from a probe \(forward and backward passes up to batch 2 on cpu\): peak memory about "
                     r"[0-9.]+ GiB at batch 8",
                     text), text
    assert "--batch-size 8: the largest that fits" in text and "per epoch of 64 training samples" in text
    # the run's own schedule is checked too: 1 epoch inside the default 5-epoch warm-up
    assert "--warmup-epochs 5 is not shorter than --epochs 1" in text
    assert json.loads((tmp_path / "r" / "results.json").read_text())["steps"] == res["steps"] == 1
    import torch

    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["train_config"]["batch_size"] == 8


_MEASURE = textwrap.dedent("""
    import json, sys, torch
    from scmrl.model.config import ModelConfig
    from scmrl.model.models import build_model
    from scmrl.model.losses import compute_loss
    from scmrl.train.cpu_memory import keep_freed_memory
    from scmrl.train.footprint import probe_footprint, _inputs
    from scmrl.train.optim import build_optimizer
    keep_freed_memory()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    batch = int(sys.argv[1])
    mcfg = ModelConfig(num_classes=4, embed_dim=32, heads=4, time_steps=4, audio_size=64, visual_size=64)
    model = build_model(mcfg)
    fp = probe_footprint(model, mcfg, torch.device("cpu"), False, batch, 0)
    opt = build_optimizer(model, 1e-3, 1e-4, False)
    for _ in range(2):
        a, v, labels = _inputs(mcfg, batch, torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        loss = compute_loss(mcfg, model(a, v), labels)[0]
        loss.backward()
        opt.step()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would count the test process forked
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"estimate": fp.peak_bytes(batch), "before": fp.now_bytes, "peak": hwm * 1024}))
""")


def test_estimate_is_within_a_factor_of_the_measured_peak():
    """A fresh process: the estimate of its peak against its measured peak RSS, at a batch where the
    activations (not torch itself) are most of the growth."""
    got = json.loads(subprocess.run([sys.executable, "-c", _MEASURE, "24"], cwd=ROOT, capture_output=True,
                                    text=True, check=True).stdout.strip().splitlines()[-1])
    growth_est, growth = got["estimate"] - got["before"], got["peak"] - got["before"]
    assert growth > 100 * MIB, got  # the activations dominate: the comparison means something
    assert 0.5 <= growth_est / growth <= 2.0, got
    assert 0.67 <= got["estimate"] / got["peak"] <= 1.5, got
