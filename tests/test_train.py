"""scmrl-train end to end on synthetic shards in the real format: it learns a task that needs both
modalities, reports (metrics.jsonl, results.json, PNGs), resumes exactly, stops at --max-steps, streams
from http and names a shard that cannot be read."""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from avdata.errors import AvdataError
from scmrl.cli.train_app import eval_app, train_app
from scmrl.train.report import CURVES_SIZE, confusion_size, read_metrics
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train.config import TrainConfig
from scmrl.train.loop import train
from tests.httpserver import serve_dir

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

TINY = dict(batch_size=32, lr=5e-3, warmup_epochs=1, embed_dim=32, heads=4, time_steps=2, image_size=32,
            shuffle_buffer=128, workers=0)
N_TRAIN, N_VAL, N_TEST = 320, 64, 200
EPOCHS = 6


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_synthetic_av_shards(tmp_path_factory.mktemp("syn") / "s", N_TRAIN, N_VAL, N_TEST, per_shard=64)


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    return make_synthetic_av_shards(tmp_path_factory.mktemp("small") / "s", 128, 32, 32, per_shard=32, seed=1)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for m in ("scmrl", "audio-only", "visual-only"):
        t0 = time.perf_counter()
        res = train(TrainConfig(shards=str(shards), out=str(root / m), model=m, epochs=EPOCHS, **TINY))
        out[m] = (root / m, res, time.perf_counter() - t0)
    return out


def test_scmrl_needs_both_modalities_and_learns_them(runs):
    # class = 2 * visual bit + audio bit: one modality alone can reach 50% at most
    out, res, seconds = runs["scmrl"]
    assert res["test_acc_at_val_best_epoch"] >= 0.9, res
    assert res["model_config"]["sao_weight"] == 1.0
    for m in ("audio-only", "visual-only"):
        r = runs[m][1]
        assert r["test_acc_last_epoch"] <= 0.62, (m, r)
        assert r["test_acc_at_val_best_epoch"] <= 0.62, (m, r)


def test_reports_metrics_results_and_plots(runs):
    out, res, _ = runs["scmrl"]
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert saved["test_acc_at_val_best_epoch"] is not None and saved["best_test_acc_over_epochs"] is not None
    assert saved["best_test_acc_over_epochs"] >= saved["test_acc_at_val_best_epoch"]
    assert 1 <= saved["val_best_epoch"] <= EPOCHS and "validation" in saved["selection"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    for r in rows:
        assert r["train_samples"] == N_TRAIN // 32 * 32 and r["val_samples"] == N_VAL and r["test_samples"] == N_TEST
        assert {"lr", "train_loss", "train_ce", "train_sao", "train_acc", "val_acc", "test_acc", "samples_per_s",
                "seconds"} <= set(r)
        assert r["train_loss"] == pytest.approx(r["train_ce"] + r["train_sao"], rel=1e-5)
    assert rows[-1]["step"] == EPOCHS * (N_TRAIN // 32)
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < 5e-3 and lrs[1] > lrs[2] > lrs[-1] >= 1e-5  # warm-up, then cosine decay
    best = max(rows, key=lambda r: r["val_acc"])
    assert saved["test_acc_at_val_best_epoch"] == best["test_acc"]
    assert saved["best_test_acc_over_epochs"] == max(r["test_acc"] for r in rows)
    for name, size in (("curves.png", CURVES_SIZE), ("confusion.png", confusion_size(4))):
        assert (out / name).stat().st_size > 1000
        with Image.open(out / name) as im:
            assert im.size == size
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "schedule", "rng", "state", "epoch", "step", "model_config"} <= set(ckpt)
    assert ckpt["epoch"] == EPOCHS and len(ckpt["state"]["history"]) == EPOCHS
    assert not list(out.glob("*.tmp"))


def test_eval_cli_reproduces_the_selected_test_accuracy(runs, shards, tmp_path):
    out, res, _ = runs["scmrl"]
    png = tmp_path / "c.png"
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(out / "best.pt"), "--shards", str(shards), "--json",
                                      "--device", "cpu", "--workers", "0", "--confusion", str(png)])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["samples"] == N_TEST and got["accuracy"] == pytest.approx(res["test_acc_at_val_best_epoch"])
    assert len(got["per_class"]) == 4 and sum(got["class_samples"]) == N_TEST
    with Image.open(png) as im:
        assert im.size == confusion_size(4)
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(out / "best.pt"), "--shards", str(shards),
                                      "--split", "val", "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0 and "v1a1" in r.output and "accuracy" in r.output


def test_resume_continues_exactly(small_shards, tmp_path, caplog):
    # evaluated after epochs 2 and 3 (the last), not where the first invocation stops: a resumed run evaluates,
    # and so selects, as the uninterrupted one
    cfg = dict(shards=str(small_shards), model="scmrl", epochs=3, eval_every=2, **TINY)
    a = train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    train(TrainConfig(out=str(tmp_path / "b"), stop_after_epochs=1, **cfg))
    first, = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert "val_acc" not in first and "test_acc" not in first
    with pytest.raises(Exception, match="--resume"):  # an existing run is never overwritten silently
        train(TrainConfig(out=str(tmp_path / "b"), **cfg))
    with caplog.at_level("WARNING", logger="scmrl.train.start"):
        b = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **cfg))
    assert not [r for r in caplog.records if r.name == "scmrl.train.start"]  # the same options: nothing to say
    ca = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)  # shared checkpoints run no code
    cb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for k in ("test_acc_at_val_best_epoch", "best_test_acc_over_epochs", "val_best_epoch", "steps"):
        assert a[k] == b[k], k
    ra, rb = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and k != "samples_per_s"} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)
    assert [("val_acc" in r, "test_acc" in r) for r in ra] == [(False, False), (True, True), (True, True)]


def test_next_epoch_is_read_while_evaluating_in_the_same_order(small_shards, tmp_path, monkeypatch):
    """The next epoch's iterator is made before evaluation (its workers fill their first batches while the
    model evaluates); each epoch's samples, in order, are those of that epoch's loader asked in turn."""
    import scmrl.train.loop as loop
    from scmrl.train.loaders import RECORD_KEYS_ENV

    made, at_eval = [], []

    def capture(*args):
        made.append((args, loop_make(*args)))
        return made[-1][1]

    def evaluating(*args, **kwargs):
        at_eval.append(made[0][1].train_ds.epoch)
        return loop_evaluate(*args, **kwargs)

    loop_make, loop_evaluate = loop.make_run_data, loop.evaluate
    monkeypatch.setattr(loop, "make_run_data", capture)
    monkeypatch.setattr(loop, "evaluate", evaluating)
    monkeypatch.setenv(RECORD_KEYS_ENV, str(tmp_path / "keys"))
    train(TrainConfig(shards=str(small_shards), out=str(tmp_path / "r"), epochs=3, **{**TINY, "workers": 2,
                                                                                         "batch_size": 16}))
    # val and test after each epoch: the train stream is already on the next epoch, except after the last
    assert at_eval == [1, 1, 2, 2, 2, 2]
    fresh = loop_make(*made[0][0])  # the same loaders, asked one epoch at a time
    for epoch in range(3):
        fresh.train_ds.set_epoch(epoch)
        expected = [k for batch in fresh.train_loader for k in batch[3]]
        assert (tmp_path / "keys" / f"keys-epoch{epoch + 1}-rank0.txt").read_text().split() == expected


def test_max_steps_stops_a_smoke_run(small_shards, tmp_path, caplog):
    res = train(TrainConfig(shards=str(small_shards), out=str(tmp_path / "m"), epochs=5, max_steps=3, **TINY))
    assert res["steps"] == 3 and res["epochs"] == 1 and res["stopped_by_max_steps"]
    rows = read_metrics(tmp_path / "m" / "metrics.jsonl")
    assert len(rows) == 1 and rows[0]["train_samples"] == 3 * 32 and rows[0]["test_samples"] == 32
    assert (tmp_path / "m" / "results.json").exists() and (tmp_path / "m" / "curves.png").exists()
    # epoch 1 had 4 batches: resuming skips its last one, and says so
    with caplog.at_level("WARNING", logger="scmrl.train.loop"):
        res = train(TrainConfig(shards=str(small_shards), out=str(tmp_path / "m"), epochs=5, max_steps=4,
                                resume=True, **TINY))
    assert res["steps"] == 4 and res["epochs"] == 2
    assert "stopped at --max-steps 3 within epoch 1: it continues with epoch 2, the rest of epoch 1" in caplog.text


def test_a_diverged_run_stops_before_its_checkpoint(small_shards, tmp_path, monkeypatch):
    """A NaN loss (the weights then NaN too) stopped nothing: every later epoch was trained and NaN written
    to metrics.jsonl, which strict JSON readers refuse. Now the epoch whose loss is not finite stops the run
    before its checkpoint, naming the checkpoint that keeps the last finite epoch."""
    import scmrl.train.epoch as epoch_mod

    real, calls = epoch_mod.compute_loss, [0]

    def diverging(*args, **kwargs):  # finite for epoch 1's 4 steps, NaN from then on
        total, parts = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] > 4:
            total = total * float("nan")
            parts = {**parts, "loss": parts["loss"] * float("nan")}
        return total, parts

    monkeypatch.setattr(epoch_mod, "compute_loss", diverging)
    out = tmp_path / "d"
    with pytest.raises(AvdataError, match=rf"epoch 2: the training loss is nan \(train_.* not finite\): the run "
                                          rf"diverged .*{out / 'checkpoint.pt'} keeps epoch 1, .*--init-from "
                                          rf"{out / 'best.pt'}"):
        train(TrainConfig(shards=str(small_shards), out=str(out), epochs=5, **TINY))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1] and math.isfinite(rows[0]["train_loss"])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_a_folder_lacking_shards_is_refused_before_the_first_epoch(small_shards, tmp_path):
    """A folder pulled with `--split train` trained a whole epoch, then retried the absent val shard for 15 s
    and stopped, saying to check the server or disk; a shard gone missing did the same."""
    from avdata.share.pull import pull

    folder = tmp_path / "pulled"
    pull(str(small_shards), folder, splits=["train"], progress=False)
    with pytest.raises(AvdataError, match=rf"{folder}: split\(s\) test, val were not pulled .*`avdata pull URL --to "):
        train(TrainConfig(shards=str(folder), out=str(tmp_path / "r"), epochs=1, **TINY))
    pull(str(small_shards), folder, progress=False)
    (folder / "test-000000.tar").unlink()
    with pytest.raises(AvdataError, match=r"1 shard\(s\) of split\(s\) train, val, test are missing, e.g. "
                                          r"test-000000.tar; `avdata verify "):
        train(TrainConfig(shards=str(folder), out=str(tmp_path / "r"), epochs=1, **TINY))
    assert not (tmp_path / "r").exists()


def test_an_empty_validation_split_is_not_used_for_model_selection(small_shards, tmp_path):
    from avdata.shards.manifest import Manifest, SplitEntry
    from avdata.shards.tar import write_shard

    folder = tmp_path / "noval"
    shutil.copytree(small_shards, folder)
    m = Manifest.load(folder)
    for shard in m.splits.pop("val").shards:
        (folder / shard.file).unlink()
    # as prepare leaves it when every validation clip was skipped: one empty shard
    m.splits["val"] = SplitEntry.of_shards([write_shard(folder / "val-000000.tar", [])], {c: 0 for c in m.classes})
    m.save(folder)
    res = train(TrainConfig(shards=str(folder), out=str(tmp_path / "r"), epochs=1, max_steps=2, **TINY))
    assert res["val_best_epoch"] is None and res["test_acc_at_val_best_epoch"] is None
    assert res["selection"].startswith("no validation split") and res["best_test_acc_over_epochs"] is not None
    assert "no best.pt is written" in res["selection"] and not (tmp_path / "r" / "best.pt").exists()
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert rows[0].get("val_acc") is None and rows[0]["test_samples"] == 32
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(tmp_path / "r" / "checkpoint.pt"), "--shards", str(folder),
                                      "--split", "val", "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 2 and "the val split holds no samples" in r.output


def test_streams_from_http(small_shards, tmp_path):
    with serve_dir(small_shards) as url:  # with credentials in the URL, which no file of the run may keep
        secret = url.replace("http://", "http://lab:pa55word@") + "/?token=t0ken-s3cret"
        res = train(TrainConfig(shards=secret, out=str(tmp_path / "h"), epochs=1, **{**TINY, "workers": 1}))
        paths = {r["path"].split("?")[0] for r in url.requests}
    assert "/manifest.json" in paths and {"/train-000000.tar", "/val-000000.tar", "/test-000000.tar"} <= paths
    rows = read_metrics(tmp_path / "h" / "metrics.jsonl")
    assert rows[0]["train_samples"] == 128 and rows[0]["test_samples"] == 32 and res["epochs"] == 1
    kept = [p for p in (tmp_path / "h").rglob("*") if p.is_file()]  # checkpoint.pt, best.pt (shared with models)
    assert any(p.name == "checkpoint.pt" for p in kept)
    assert not [p.name for p in kept if b"pa55word" in p.read_bytes() or b"t0ken-s3cret" in p.read_bytes()]


def test_a_server_that_disappears_names_the_shard(small_shards, tmp_path):
    # --workers 0: a forked DataLoader worker would inherit this in-process server's listening socket
    with serve_dir(small_shards) as url:
        def vanish() -> None:  # once the first training shard is asked for, the server goes away
            while not any(r["path"].startswith("/train-") for r in list(url.requests)):
                time.sleep(0.002)
            url.server.shutdown()
            url.server.server_close()

        threading.Thread(target=vanish, daemon=True).start()
        r = CliRunner().invoke(train_app, ["--shards", str(url), "--out", str(tmp_path / "x"), "--epochs", "1",
                                           "--embed-dim", "32", "--heads", "4", "--image-size", "32", "--time-steps",
                                           "2", "--batch-size", "32", "--workers", "0", "--device", "cpu",
                                           "--io-retries", "2", "--io-backoff", "0.05"])
    assert r.exit_code == 2, r.output
    assert re.search(r"shard http://127\.0\.0\.1:\d+/train-\d{6}\.tar could not be read after 3 attempts", r.output)
    assert "--resume" in r.output and "Traceback" not in r.output


def test_a_cut_shard_read_by_a_worker_is_named(small_shards, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(small_shards, copy)
    shard = copy / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    r = CliRunner().invoke(train_app, ["--shards", str(copy), "--out", str(tmp_path / "x"), "--epochs", "1",
                                       "--embed-dim", "32", "--heads", "4", "--image-size", "32", "--time-steps",
                                       "2", "--batch-size", "32", "--workers", "2", "--device", "cpu",
                                       "--io-retries", "1", "--io-backoff", "0.01"])
    assert r.exit_code == 2, r.output
    # its size is not the manifest's: named at once, not retried (the same bytes would come again)
    assert f"shard {shard} holds {shard.stat().st_size:,} bytes, not the" in r.output and "cut short" in r.output
    assert "--resume" in r.output and "Traceback" not in r.output and "worker" not in r.output


def test_bad_shards_give_a_clear_error(tmp_path):
    r = CliRunner().invoke(train_app, ["--shards", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "error" in r.output and "nowhere" in r.output


def test_default_workers_follow_the_cpus(monkeypatch):
    import os

    from scmrl.train.loaders import machine_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert machine_workers("cpu") == 2  # 2 CPUs: no more loader workers than CPUs
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert machine_workers("cpu") == 4 and machine_workers("cuda") == 8


def test_a_resumed_run_keeps_its_workers_unless_told(small_shards, tmp_path, caplog, monkeypatch):
    """The data order depends on the worker count, and the CLI's default follows the machine's CPUs: a job
    resubmitted with --resume on another node changed its data order. Left unset, a resumed run now keeps
    its own count; set, another count is named in the resume warning."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)  # would give 4
    out = str(tmp_path / "w")
    train(TrainConfig(shards=str(small_shards), out=out, epochs=2, stop_after_epochs=1, **TINY))  # workers 0
    with caplog.at_level("WARNING", logger="scmrl.train.start"):
        train(TrainConfig(shards=str(small_shards), out=out, epochs=2, resume=True, **{**TINY, "workers": None}))
    assert "--workers" not in caplog.text
    ckpt = torch.load(tmp_path / "w" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["train_config"]["workers"] == 0
    caplog.clear()
    with caplog.at_level("WARNING", logger="scmrl.train.start"):
        train(TrainConfig(shards=str(small_shards), out=out, epochs=3, resume=True, **{**TINY, "workers": 1}))
    assert "--workers 1 (the run's: 0)" in caplog.text


def test_two_runs_on_one_out_do_not_both_run(small_shards, tmp_path):
    """A second run on the same --out (a job submitted twice, --resume started while the run still goes on)
    removed the first's temporary files at start and replaced its checkpoints: a run holds its --out's
    lock, and another is refused before it touches anything there."""
    import socket
    import subprocess
    import sys

    from avdata.folder_lock import output_lock

    out = tmp_path / "r"
    code = ("import sys; from pathlib import Path; from avdata.folder_lock import output_lock\n"
            "with output_lock(Path(sys.argv[1]), None, command='scmrl-train'):\n"
            "    print('held', flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline() == "held\n"
        (out / "checkpoint.pt.tmp").write_bytes(b"the other run's epoch, being written")
        with pytest.raises(AvdataError, match=rf"another `scmrl-train` \(pid {other.pid} on {socket.gethostname()}\) "
                                              rf"is writing into {out}; it holds the lock"):
            train(TrainConfig(shards=str(small_shards), out=str(out), epochs=1, **TINY))
        assert (out / "checkpoint.pt.tmp").read_bytes() == b"the other run's epoch, being written"
        assert not (out / "checkpoint.pt").exists()
    finally:
        other.communicate("")
    (out / "checkpoint.pt.tmp").unlink()
    train(TrainConfig(shards=str(small_shards), out=str(out), epochs=1, **TINY))
    assert (out / "checkpoint.pt").is_file() and (out / ".avdata").is_dir()  # the other run's, kept
    assert list((out / ".avdata").iterdir()) == []
    with output_lock(out, None) as lock:  # the run's lock went with it
        assert lock.exists()


def test_cli_interrupted_says_whether_it_can_resume(small_shards, tmp_path, monkeypatch):
    import scmrl.train.loop

    def interrupted(_cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(scmrl.train.loop, "train", interrupted)
    args = ["--shards", str(small_shards), "--out", str(tmp_path / "r"), "--device", "cpu"]
    res = CliRunner().invoke(train_app, args)
    assert res.exit_code == 130 and "no checkpoint to resume from" in " ".join(res.output.split())
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"x")
    res = CliRunner().invoke(train_app, args)
    assert res.exit_code == 130 and "add --resume to the same command" in " ".join(res.output.split())
