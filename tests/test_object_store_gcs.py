"""Shards in Google Cloud Storage (gs://), against a real GCS emulator on 127.0.0.1: `avdata push`, then
verify, inspect, pull and the trainer's stream reading gs:// as they read a folder, and a deleted shard
named by verify and by the stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.shards.location import open_location, open_shards
from avdata.verify import verify_shards
from scmrl.data.config import StreamConfig
from scmrl.data.failures import ShardReadError
from scmrl.data.stream import ShardStream
from scmrl.data.synthetic import make_synthetic_av_shards
from tests.gcsserver import gcs_emulator, make_bucket, skip_without_gcs

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

N_TRAIN, N_VAL, N_TEST = 64, 16, 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_synthetic_av_shards(tmp_path_factory.mktemp("gcs") / "s", N_TRAIN, N_VAL, N_TEST, per_shard=16,
                                    frame_shape=(32, 40))


@pytest.fixture(scope="module")
def gcs():
    skip_without_gcs()
    with gcs_emulator() as url:
        make_bucket(url, "bkt")
        yield url


def test_push_read_verify_inspect_pull_and_stream_gs(gcs, shards, tmp_path):
    r = CliRunner().invoke(app, ["push", str(shards), "gs://bkt/ds"])
    assert r.exit_code == 0, r.output
    assert f"{len(list(shards.iterdir()))} uploaded" in r.output
    r = CliRunner().invoke(app, ["push", str(shards), "gs://bkt/ds"])  # a rerun uploads nothing
    assert r.exit_code == 0 and "0 uploaded" in r.output, r.output

    loc = open_location("gs://bkt/ds")
    assert loc.remote and loc.num_samples("train") == N_TRAIN
    report = verify_shards("gs://bkt/ds", progress=False)
    assert report.ok and report.checked == 6, report.problems
    r = CliRunner().invoke(app, ["inspect", "gs://bkt/ds", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"]["val"]["num_samples"] == N_VAL

    r = CliRunner().invoke(app, ["pull", "gs://bkt/ds", "--to", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    for p in shards.iterdir():
        assert (tmp_path / "p" / p.name).read_bytes() == p.read_bytes(), p.name

    cfg = StreamConfig(kind="static", image_size=32, time_steps=1, with_keys=True)
    remote = [s[-1] for s in ShardStream(open_shards("gs://bkt/ds"), "train", cfg).iter_slot()]
    local = [s[-1] for s in ShardStream(open_shards(shards), "train", cfg).iter_slot()]
    assert remote == local and len(remote) == N_TRAIN


def test_a_deleted_gs_shard_is_named(gcs, shards):
    import gcsfs

    from avdata.share.push import push

    push(shards, "gs://bkt/gone", progress=False)
    gcsfs.GCSFileSystem().rm("bkt/gone/train-000001.tar")
    report = verify_shards("gs://bkt/gone", progress=False)
    assert not report.ok and any("train-000001.tar" in p for p in report.problems)
    cfg = StreamConfig(kind="static", image_size=32, time_steps=1, retries=0)
    with pytest.raises(ShardReadError, match="train-000001.tar"):
        list(ShardStream(open_shards("gs://bkt/gone"), "train", cfg).iter_slot())


def test_a_repush_replaces_gs_shards_of_the_same_size_with_other_content(gcs, tmp_path):
    a = make_synthetic_av_shards(tmp_path / "a", 64, 16, 16, per_shard=16, frame_shape=(32, 40))
    b = make_synthetic_av_shards(tmp_path / "b", 64, 16, 16, per_shard=16, frame_shape=(32, 40), seed=9)
    assert any(p.stat().st_size == (b / p.name).stat().st_size for p in a.glob("*.tar"))
    assert CliRunner().invoke(app, ["push", str(a), "gs://bkt/again"]).exit_code == 0
    r = CliRunner().invoke(app, ["push", str(b), "gs://bkt/again"])  # another seed: refused without --overwrite
    assert r.exit_code == 2 and "seed differs" in r.output, r.output
    r = CliRunner().invoke(app, ["push", str(b), "gs://bkt/again", "--overwrite"])
    assert r.exit_code == 0 and "0 already there" in r.output, r.output
    assert verify_shards("gs://bkt/again", progress=False).ok
    r = CliRunner().invoke(app, ["push", str(b), "gs://bkt/again"])  # and a rerun keeps them all
    assert r.exit_code == 0 and "0 uploaded" in r.output, r.output


@pytest.mark.parametrize("status", [401, 403])
def test_refused_gcs_credentials_are_named_for_push_pull_and_verify(shards, tmp_path, monkeypatch, status):
    """A token that is expired (401) or lacks the permission (403): gcsfs raises its HttpError (401) or a
    plain OSError("Forbidden: ...") (403), neither a PermissionError. push, pull and verify ended with a
    traceback (401), or with an error naming no credentials after three tries (403)."""
    gcsfs = pytest.importorskip("gcsfs")
    import json

    from tests.httpserver import send_whole, serve_script

    def refuse(handler):
        body = {"error": {"code": status, "message": "caller lacks storage.objects.get"}}
        send_whole(handler, status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    with serve_script(refuse) as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        gcsfs.GCSFileSystem.clear_instance_cache()  # not one made for the emulator
        try:
            for args in (["push", str(shards), "gs://bkt/x"], ["pull", "gs://bkt/x", "--to", str(tmp_path / "p")],
                         ["verify", "gs://bkt/x"]):
                r = CliRunner().invoke(app, args)
                assert r.exit_code == 2 and "Traceback" not in r.output, r.output
                assert "access denied" in r.output and "GOOGLE_APPLICATION_CREDENTIALS" in r.output, r.output
                assert "tries" not in r.output, r.output
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()
    assert not (tmp_path / "p").exists()
