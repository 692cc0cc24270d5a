"""DDP on two CPU processes (torchrun, gloo): the same training samples per epoch as one process, every
val/test sample counted exactly once, uneven shares per rank handled (no hang), only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scmrl.train.report import read_metrics
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train.config import TrainConfig
from scmrl.train.loop import train

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(epochs=2, batch_size=16, embed_dim=16, heads=2, time_steps=1, image_size=32, workers=2,
            shuffle_buffer=64, lr=1e-3)


def _cli(args: dict) -> list[str]:
    out = []
    for k, v in args.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    # 5 training shards of 32: the two ranks get 3 and 2 shards (6 and 4 batches of 16)
    return make_synthetic_av_shards(tmp_path_factory.mktemp("ddp") / "s", 160, 40, 50, per_shard=32,
                                    frame_shape=(64, 70))


def _torchrun(shards: Path, out: Path, *extra: str) -> str:
    """scmrl-train on two CPU processes (torchrun, gloo); its output (the test fails on a non-zero exit)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVDATA_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scmrl.cli.train_app", "--shards", str(shards), "--out", str(out), "--device", "cpu",
           *_cli(ARGS), *extra]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-4000:]
    return output


def test_two_cpu_processes_see_what_one_process_sees(shards, tmp_path):
    single = train(TrainConfig(shards=str(shards), out=str(tmp_path / "one"), device="cpu", **ARGS))
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")

    output = _torchrun(shards, tmp_path / "two")
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")  # one file, written by rank 0 only
    assert len(two) == len(one) == 2
    for a, b in zip(one, two):
        assert a["train_samples"] == b["train_samples"] == 160
        assert a["val_samples"] == b["val_samples"] == 40 and a["test_samples"] == b["test_samples"] == 50
    assert two[-1]["step"] == 2 * 6  # every rank runs the longest rank's 6 steps per epoch (Join)
    # ... and the run says so, with the fix (scmrl.train.loaders.share_warnings)
    assert "in 2 of the 6 steps of this epoch only some processes" in " ".join(output.split())
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["epochs"] == 2 and 0.0 <= res["test_acc_at_val_best_epoch"] <= 1.0
    assert single["epochs"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

    # stopped after epoch 1 and resumed: the same weights as the uninterrupted run. The rank that ran out of
    # batches after 4 steps used to keep an optimiser 2 steps behind (Join syncs weights, not AdamW's state),
    # so the replicas stepped differently in epoch 2, and a resume (both loading rank 0's state) differed
    _torchrun(shards, tmp_path / "three", "--stop-after-epochs", "1")
    _torchrun(shards, tmp_path / "three", "--resume")
    a = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "three" / "checkpoint.pt", weights_only=True)
    assert [k for k, v in a["model"].items() if not torch.equal(v, b["model"][k])] == []
    assert [r["train_loss"] for r in a["state"]["history"]] == [r["train_loss"] for r in b["state"]["history"]]


def _sync_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from scmrl.train.distributed import DistContext, sync_optimizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    for _ in range(3 if rank == 0 else 0):  # rank 1 ran out of batches before its first step
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    sync_optimizer(opt, DistContext(rank, 2, rank, torch.device("cpu")), src=0)
    torch.save({n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in net.named_parameters()},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_a_rank_that_never_stepped_gets_the_optimizer_state(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sync_worker, args=(port, str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(a) == set(b) == {"weight", "bias"}
    for name in a:
        assert list(a[name]) == list(b[name]) == ["step", "exp_avg", "exp_avg_sq"]
        assert float(b[name]["step"]) == 3.0
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
