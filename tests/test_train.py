"""scmrl-train on synthetic shards in the real format: learning, reporting, resume, streaming, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.train_app import eval_app, train_app
from scmrl.synthetic import make_synthetic_av_shards
from scmrl.train import TrainConfig, train
from tests.httpserver import serve_dir

SMALL = dict(batch_size=32, lr=5e-3, warmup_epochs=1, embed_dim=32, heads=4, time_steps=2, image_size=32,
             shuffle_buffer=128)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_synthetic_av_shards(tmp_path_factory.mktemp("syn") / "s", 320, 64, 96, side=32)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    return {m: (root / m, train(TrainConfig(shards=str(shards), out=str(root / m), model=m, epochs=8, **SMALL)))
            for m in ("scmrl", "audio-only", "visual-only")}


def test_scmrl_needs_both_modalities_and_learns(runs):
    # class = 2 * visual bit + audio bit: one modality alone can reach only 50%
    assert runs["scmrl"][1]["test_acc_at_val_best_epoch"] >= 0.9
    assert runs["audio-only"][1]["best_test_acc_over_epochs"] <= 0.65
    assert runs["visual-only"][1]["best_test_acc_over_epochs"] <= 0.65


def test_reports_metrics_and_plots(runs):
    out, res = runs["scmrl"]
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert {"test_acc_at_val_best_epoch", "best_test_acc_over_epochs", "val_best_epoch"} <= set(saved)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert all(r["train_samples"] == 320 // 32 * 32 and r["test_samples"] == 96 and r["val_samples"] == 64 for r in rows)
    assert rows[0]["lr"] < rows[1]["lr"] > rows[-1]["lr"]  # warm-up then cosine decay
    for name, size in (("curves.png", (1000, 400)), ("confusion.png", (340, 340))):
        with Image.open(out / name) as im:
            assert im.size == size


def test_eval_cli_reproduces_the_test_accuracy(runs, shards):
    out, res = runs["scmrl"]
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(out / "best.pt"), "--shards", str(shards), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    assert got["samples"] == 96 and got["accuracy"] == pytest.approx(res["test_acc_at_val_best_epoch"])


def test_resume_continues_exactly(shards, tmp_path):
    cfg = dict(shards=str(shards), model="scmrl", epochs=2, max_steps=3, **SMALL)
    train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    train(TrainConfig(out=str(tmp_path / "b"), stop_after_epochs=1, **cfg))
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    train(TrainConfig(out=str(tmp_path / "b"), resume=True, **cfg))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["state"]["history"][-1]["test_acc"] == b["state"]["history"][-1]["test_acc"]


def test_streams_from_http_and_names_a_broken_shard(shards, tmp_path):
    with serve_dir(shards) as url:
        res = train(TrainConfig(shards=str(url), out=str(tmp_path / "h"), epochs=1, max_steps=2, **SMALL))
        assert res["epochs"] == 1
        assert url.requests_for("/manifest.json") and any(r["path"].startswith("/train-") for r in url.requests)
        assert url.requests_for("/test-000000.tar")
    with serve_dir(shards, status_for={"train-000001.tar": 500}) as url:
        r = CliRunner().invoke(train_app, ["--shards", str(url), "--out", str(tmp_path / "x"), "--epochs", "1",
                                           "--embed-dim", "32", "--heads", "4", "--image-size", "32",
                                           "--time-steps", "2", "--batch-size", "32"])
        assert r.exit_code == 2
        assert "train-000001.tar" in r.output and "--resume" in r.output


def test_ddp_two_cpu_processes_see_every_sample_once(shards, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVDATA_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "cli.train_app_module", "--shards", str(shards), "--out", str(tmp_path / "ddp"), "--epochs", "1",
           "--embed-dim", "16", "--heads", "2", "--image-size", "32", "--time-steps", "1", "--batch-size", "16",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1], start_new_session=True)
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too
        raise
    assert proc.returncode == 0, err[-3000:]
    row = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[0])
    # 320 training samples, global batch 2 x 16: 10 steps see 320 samples; eval counts each sample once
    assert row["train_samples"] == 320 and row["test_samples"] == 96 and row["val_samples"] == 64
