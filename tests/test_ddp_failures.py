"""torchrun runs (two CPU processes, gloo) stopped as clusters stop them: a second run on the same --out, SIGTERM to
torchrun mid-epoch (a batch system's time limit), one process killed (the out-of-memory killer), a node whose own
copy of the shards lacks a file. Every process ends promptly with one line saying what happened, no traceback,
no orphan process, no half-written file, and `--resume` ends where the uninterrupted run ends."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from scmrl.data.synthetic import make_synthetic_av_shards
from tests.childserver import free_port

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--device", "cpu", "--batch-size", "16", "--embed-dim", "16", "--heads", "2", "--time-steps", "1",
        "--image-size", "32", "--workers", "2", "--shuffle-buffer", "64", "--lr", "1e-3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "AVDATA_NO_PROGRESS": "1", "GLOO_SOCKET_IFNAME": "lo",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TRAIN = ["-m", "scmrl.cli.train_app"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    # 5 training shards of 32: the two ranks get 3 and 2 shards (6 and 4 batches of 16)
    return make_synthetic_av_shards(tmp_path_factory.mktemp("ddpfail") / "s", 160, 40, 50, per_shard=32,
                                    frame_shape=(64, 70))


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _one_node(shards: Path, out: Path, *extra: str) -> subprocess.Popen:
    return _start([*TORCHRUN, "--standalone", "--nproc_per_node", "2", *TRAIN, "--shards", str(shards), "--out",
                   str(out), *ARGS, *extra])


def _two_nodes(shards: tuple[Path, Path], out: Path, *extra: str) -> list[subprocess.Popen]:
    """Two torchrun launchers of one process each, meeting at a c10d rendezvous on loopback (two nodes)."""
    port = free_port()
    return [_start([*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"t{port}", "--rdzv-conf",
                    f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1", *TRAIN, "--shards", str(shards[node]),
                    "--out", str(out), *ARGS, *extra]) for node in (0, 1)]


def _finish(procs: list[subprocess.Popen], timeout: float = 60) -> list[str]:
    """Each launcher's output, once all have ended; the test fails if one is still running after `timeout`."""
    deadline = time.monotonic() + timeout
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            pytest.fail("torchrun hung:\n" + "\n".join(p.communicate()[0][-3000:] for p in procs))
    return outputs


def _read_until_epoch(proc: subprocess.Popen, epoch: int) -> str:
    """The output up to the table row of `epoch` (the run is then in the epoch after it)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.split()[:1] == [str(epoch)]:
            return "".join(seen)
    pytest.fail("the run ended before epoch %d:\n%s" % (epoch, "".join(seen)[-3000:]))


def _errors(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines() if line.startswith("error:")]


def test_a_second_run_on_the_same_out_is_refused_on_every_rank(shards, tmp_path):
    first = _one_node(shards, tmp_path / "run", "--epochs", "100")
    try:
        _read_until_epoch(first, 1)
        t0 = time.monotonic()
        [second] = _finish([_one_node(shards, tmp_path / "run", "--epochs", "100", "--resume")])
        refusal = f"another `scmrl-train` (pid {psutil.Process(first.pid).children()[0].pid}"
        errors = _errors(second)
        assert len(errors) == 2 and all(refusal in e and "is writing into" in e for e in errors), second[-3000:]
        assert "[rank" not in second  # no traceback from a rank
        # each rank ends with status 2 (torchrun's SIGTERM to the rest, once one ended, made one of them -15)
        assert sorted(re.findall(r"exitcode  : (-?\d+)", second)) == ["2", "2"], second[-3000:]
        single = subprocess.run([sys.executable, *TRAIN, "--shards", str(shards), "--out", str(tmp_path / "run"),
                                 *ARGS, "--epochs", "100", "--resume"], env=ENV, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert single.returncode == 2 and refusal in single.stderr + single.stdout, single.stderr[-3000:]
        assert time.monotonic() - t0 < 40
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        _finish([first])


def test_sigterm_to_torchrun_stops_every_rank_and_resume_ends_as_the_uninterrupted_run(shards, tmp_path):
    whole = _finish([_one_node(shards, tmp_path / "whole", "--epochs", "2")])

    run = _one_node(shards, tmp_path / "run", "--epochs", "2")
    _read_until_epoch(run, 1)
    while not (tmp_path / "run" / "checkpoint.pt").exists():  # written after the row
        time.sleep(0.05)
    time.sleep(0.2)  # now in epoch 2, its loader workers reading
    family = psutil.Process(run.pid).children(recursive=True)
    assert len(family) > 2  # the two ranks and their loader workers
    run.send_signal(signal.SIGTERM)
    [stopped] = _finish([run], timeout=40)
    # the loader workers die with their rank (torchrun signals each rank's process group): that was reported as
    # "a data-loading worker process died ... memory runs out", or a traceback from inside the "interrupted" line
    assert "data-loading worker" not in stopped and "[rank" not in stopped, stopped[-4000:]
    assert stopped.count("interrupted: ") == 2, stopped[-4000:]
    assert "add --resume to the same command" in " ".join(stopped.split())
    time.sleep(1)
    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "checkpoint.pt", "metrics.jsonl"]

    _finish([_one_node(shards, tmp_path / "run", "--epochs", "2", "--resume")])
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2, whole[-2000:]
    assert [k for k, v in a["model"].items() if not torch.equal(v, b["model"][k])] == []
    assert [r["train_loss"] for r in a["state"]["history"]] == [r["train_loss"] for r in b["state"]["history"]]


def test_a_killed_process_ends_the_other_node_with_a_message(shards, tmp_path):
    nodes = _two_nodes((shards, shards), tmp_path / "run", "--epochs", "100")
    _read_until_epoch(nodes[0], 1)
    psutil.Process(nodes[1].pid).children()[0].kill()  # the out-of-memory killer: SIGKILL to node 1's rank
    t0 = time.monotonic()
    outputs = _finish(nodes, timeout=40)
    assert time.monotonic() - t0 < 30
    # it was gloo's RuntimeError and a traceback from rank 0
    assert "[rank0]" not in outputs[0], outputs[0][-4000:]
    [error] = _errors(outputs[0])
    assert "process 0 of 2 lost the others" in error and "Connection" in error, error
    assert "with --resume once --out holds checkpoint.pt" in error
    assert "exitcode  : 2" in outputs[0] and "exitcode  : -9" in outputs[1]  # each launcher's summary


def test_a_killed_process_ends_the_others_on_its_node_as_stopped_by_torchrun(shards, tmp_path):
    run = _one_node(shards, tmp_path / "run", "--epochs", "100")
    _read_until_epoch(run, 1)
    ranks = psutil.Process(run.pid).children()
    family = psutil.Process(run.pid).children(recursive=True)
    max(ranks, key=lambda p: p.pid).kill()
    [output] = _finish([run], timeout=40)
    # rank 0 said its data-loading worker had died for lack of memory (torchrun's SIGTERM reached them first)
    assert "data-loading worker" not in output and "[rank" not in output, output[-4000:]
    assert "torchrun stopping the run's processes when one of them failed" in " ".join(output.split())
    assert "exitcode  : 143" in output and "exitcode  : -9" in output
    time.sleep(1)
    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_a_node_whose_shards_lack_a_file_stops_every_node_naming_it(shards, tmp_path):
    local = tmp_path / "node1"
    local.mkdir()
    for f in shards.iterdir():
        if f.name != "train-000003.tar":
            shutil.copy(f, local / f.name)
    outputs = _finish(_two_nodes((shards, local), tmp_path / "run", "--epochs", "1"))
    # node 0 printed gloo's "Connection reset by peer" in a traceback, not what node 1 lacked
    for output in outputs:
        [error] = _errors(output)
        assert "shard(s) of split(s) train, val, test are missing, e.g. train-000003.tar" in error, output[-3000:]
        assert "[rank" not in output and "exitcode  : 2" in output
    assert _errors(outputs[0])[0].startswith(f"error: process 1 of 2 cannot start, on {os.uname().nodename}: {local}")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
