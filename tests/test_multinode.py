"""Two training nodes simulated on one machine, reading their shards from an S3-compatible server on
127.0.0.1: two `torchrun --nnodes 2 --rdzv-backend c10d` launchers (one process each, gloo, CPU) meet at a
c10d rendezvous on loopback; every training sample is used exactly once per epoch across the nodes (the
keys each rank trained on, recorded through SCMRL_RECORD_KEYS), every val/test sample counted once, and
`scmrl-eval` reads the same bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scmrl.cli.train_app import eval_app
from avdata.shards.reader import iter_shard
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train.report import read_metrics
from tests.childserver import free_port as _free_port
from tests.s3server import moto_s3, s3_env, skip_without_s3

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# 4 training shards of 32: each node's rank reads 2 of them, one per loader worker (64 samples, 4 batches)
ARGS = dict(epochs=1, batch_size=16, embed_dim=16, heads=2, time_steps=1, image_size=32, workers=2,
            shuffle_buffer=64, lr=1e-3, io_retries=1)


def _cli(args: dict) -> list[str]:
    return [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_two_nodes_read_s3_and_see_every_sample_once(tmp_path):
    skip_without_s3()
    shards = make_synthetic_av_shards(tmp_path / "s", 128, 32, 32, per_shard=32, frame_shape=(32, 40))
    train_keys = [k for p in sorted(shards.glob("train-*.tar")) for k, _ in iter_shard(p)]
    with moto_s3(tmp_path) as s3, s3_env(s3):
        s3.client.create_bucket(Bucket="bkt")
        from avdata.share.push import push

        push(shards, "s3://bkt/syn", progress=False)
        port = _free_port()
        env = {**os.environ, **s3.env, "OMP_NUM_THREADS": "1", "AVDATA_NO_PROGRESS": "1", "GLOO_SOCKET_IFNAME": "lo",
               "SCMRL_RECORD_KEYS": str(tmp_path / "keys"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        procs = []
        for node in range(2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                   "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   "--rdzv-id", "s3-test", "--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1",
                   "-m", "scmrl.cli.train_app", "--shards", "s3://bkt/syn", "--out", str(tmp_path / "run"),
                   "--device", "cpu", *_cli(ARGS)]
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
        outputs = []
        try:
            for proc in procs:
                outputs.append(proc.communicate(timeout=180)[0])
        except subprocess.TimeoutExpired:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("torchrun timed out:\n" + "\n".join(p.communicate()[0][-3000:] for p in procs))
        for proc, out in zip(procs, outputs):
            assert proc.returncode == 0, out[-4000:]

        rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
        assert len(rows) == 1
        assert rows[0]["train_samples"] == 128 and rows[0]["val_samples"] == 32 and rows[0]["test_samples"] == 32
        per_rank = [(tmp_path / "keys" / f"keys-epoch1-rank{r}.txt").read_text().split() for r in range(2)]
        assert [len(k) for k in per_rank] == [64, 64]
        assert sorted(per_rank[0] + per_rank[1]) == sorted(train_keys)  # each sample once, on one node

        r = CliRunner().invoke(eval_app, ["--checkpoint", str(tmp_path / "run" / "best.pt"), "--shards",
                                          "s3://bkt/syn", "--json", "--device", "cpu", "--workers", "0"])
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout.strip().splitlines()[-1])
        res = json.loads((tmp_path / "run" / "results.json").read_text())
        assert got["samples"] == 32 and got["accuracy"] == pytest.approx(res["test_acc_at_val_best_epoch"])
