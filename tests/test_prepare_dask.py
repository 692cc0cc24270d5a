"""`prepare --executor dask` on a real Dask cluster of 2 worker processes on 127.0.0.1: the same bytes as a
local `--jobs 1` run, and the same again when a worker is killed in the middle of a shard."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5
from avdata.datasets.registry import get_recipe, register_recipe
from avdata.errors import AvdataError
from avdata.prepare.engine import PrepareSettings, build_plan_record, prepare
from tests.toy_recipe import ToyOptions, make_toy_raw

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

register_recipe("toy", "tests.toy_recipe:ToyRecipe")

NO_DASK = "Dask distributed is not installed (an optional extra): pip install -e \".[dask]\""


def folder_bytes(out: Path) -> dict[str, bytes]:
    """Every file of a shards folder (shards, manifest, card) and its shard records."""
    files = [p for p in sorted(out.iterdir()) if p.is_file()] + sorted((out / ".avdata" / "shards").iterdir())
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def leftovers(out: Path) -> list[str]:
    return [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("work-")]


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 2 worker processes (each restarted by its nanny when it dies), whose scheduler
    retries a task once after its worker died (the default is 3: fewer deaths to wait for here)."""
    distributed = pytest.importorskip("distributed", reason=NO_DASK)
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    client = distributed.Client(cluster)
    try:
        yield cluster, client
    finally:
        client.close()
        cluster.close()


def toy(raw: Path, out: Path, **settings) -> None:
    prepare(get_recipe("toy"), raw, out, ToyOptions(), PrepareSettings(samples_per_shard=4, progress=False, **settings))


def test_generated_dataset_on_the_cluster_matches_jobs_1(cluster, tmp_path):
    """MNIST-DVS zips (unpacked into --out by the client) and N-TIDIGITS HDF5, through the CLI."""
    _, client = cluster
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=2, scales=(16,), n_events=800)
    make_ntidigits_h5(raw, per_class=1)
    base = ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--bins", "4", "--per-class", "2",
            "--val-fraction", "0", "--samples-per-shard", "3"]
    runner = CliRunner()
    res = runner.invoke(app, base + ["--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, base + ["--out", str(tmp_path / "dask"), "--executor", "dask",
                                     "--scheduler", cluster[0].scheduler_address])
    assert res.exit_code == 0, res.output
    one, on_dask = folder_bytes(tmp_path / "one"), folder_bytes(tmp_path / "dask")
    assert one == on_dask
    assert sum(n.endswith(".tar") for n in one) == 8  # 10 train and 10 test samples, 3 per shard
    # the shards were made by the cluster's worker processes, which loaded the recipe there
    ready = client.run(lambda: "state" in sys.modules["avdata.prepare.dask_executor"]._READY
                       if "avdata.prepare.dask_executor" in sys.modules else False)
    assert len(ready) == 2 and any(ready.values())
    assert not leftovers(tmp_path / "dask")


def test_a_worker_killed_mid_shard_is_retried_and_changes_nothing(cluster, tmp_path):
    raw = make_toy_raw(tmp_path / "raw", bad=("s002",))
    recipe, opts = get_recipe("toy"), ToyOptions()
    shards = build_plan_record(recipe, recipe.plan(raw, opts), opts, 4)["shards"]
    victim = shards[1]["keys"][2]  # third clip of a shard: two samples are already in its .tmp file
    marker = tmp_path / "died"
    text = (raw / f"{victim}.txt").read_text()
    (raw / f"{victim}.txt").write_text(f"die-once {marker} {text}")
    marker.touch()  # the local run must not kill the test process
    toy(raw, tmp_path / "one")
    marker.unlink()
    toy(raw, tmp_path / "dask", executor="dask", scheduler=cluster[0].scheduler_address)
    assert marker.exists()  # a worker did die on the victim (it creates the marker, then kills itself)
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "dask")
    assert not leftovers(tmp_path / "dask")


def test_a_clip_that_kills_every_worker_stops_the_run_naming_the_shard(cluster, tmp_path):
    raw = make_toy_raw(tmp_path / "raw", n_train=3, n_test=0)
    (raw / "s001.txt").write_text(f"die {os.getpid()}")  # kills any process but this one
    with pytest.raises(AvdataError, match=r"the workers preparing (train|val)-000000\.tar died on every try"):
        toy(raw, tmp_path / "out", executor="dask", scheduler=cluster[0].scheduler_address)
    assert not list((tmp_path / "out").glob("*.tar*")) and not (tmp_path / "out" / "manifest.json").exists()


def test_without_scheduler_a_local_cluster_of_jobs_workers_is_started(tmp_path):
    pytest.importorskip("distributed", reason=NO_DASK)
    raw = make_toy_raw(tmp_path / "raw", bad=("s004",))
    toy(raw, tmp_path / "one")
    toy(raw, tmp_path / "dask", executor="dask", jobs=2)
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "dask")
    assert not leftovers(tmp_path / "dask")


def test_an_unreachable_scheduler_is_named(tmp_path):
    pytest.importorskip("distributed", reason=NO_DASK)
    import dask

    raw = make_toy_raw(tmp_path / "raw")
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(AvdataError, match=f"--scheduler tcp://127.0.0.1:{port}: cannot reach a Dask scheduler"):
            toy(raw, tmp_path / "out", executor="dask", scheduler=f"tcp://127.0.0.1:{port}")


def test_a_cluster_left_with_no_worker_stops_the_run(tmp_path, monkeypatch):
    """The workers' jobs ended (a time limit, scancel) or were never started: the run waited for good, with
    no message. After NO_WORKERS_S with no worker it stops, naming the scheduler."""
    distributed = pytest.importorskip("distributed", reason=NO_DASK)
    from avdata.prepare import dask_executor

    monkeypatch.setattr(dask_executor, "NO_WORKERS_S", 0.5)
    monkeypatch.setattr(dask_executor, "WATCH_S", 0.2)
    raw = make_toy_raw(tmp_path / "raw")
    with distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as empty:
        address = empty.scheduler_address
        with pytest.raises(AvdataError, match=rf"the Dask cluster at {address} has had no worker for 0 s, with 8 "
                                              rf"shard\(s\) still to make; start workers \(`dask worker {address}`\)"):
            toy(raw, tmp_path / "out", executor="dask", scheduler=address)
    assert not list((tmp_path / "out").glob("*.tar"))


def test_a_worker_that_does_not_see_out_says_it_must_be_shared(tmp_path):
    pytest.importorskip("distributed", reason=NO_DASK)
    from avdata.prepare.dask_executor import _build_shard

    raw = make_toy_raw(tmp_path / "raw")
    with pytest.raises(AvdataError, match="must be a shared file system at the same path"):
        _build_shard(("toy", "tests.toy_recipe:ToyRecipe"), str(raw), str(tmp_path / "elsewhere"),
                     str(tmp_path / "run"), ToyOptions(), False, "f" * 64, {"file": "train-000000.tar"}, [])


def test_missing_extra_unknown_executor_and_stray_scheduler_are_clear_errors(tmp_path, monkeypatch):
    raw = make_toy_raw(tmp_path / "raw")
    with pytest.raises(AvdataError, match="choose one of local, dask"):
        toy(raw, tmp_path / "out", executor="ray")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(AvdataError, match=r"pip install -e \"\.\[dask\]\" in the avdata checkout"):
        toy(raw, tmp_path / "out", executor="dask")
    assert not (tmp_path / "out").exists()  # stopped before planning
    res = CliRunner().invoke(app, ["prepare", "toy", "--raw", str(raw), "--out", str(tmp_path / "out"),
                                   "--scheduler", "tcp://127.0.0.1:8786"])
    assert res.exit_code != 0 and "goes with --executor dask" in res.output
