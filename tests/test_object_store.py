"""Shards in object storage, against a real S3-compatible server on 127.0.0.1 (moto's standalone server):
`avdata push` (verified first, manifest last, resumable), reading s3:// with verify, inspect, pull and the
trainer's stream, a deleted shard named, the manifest cap, and the errors for a missing extra or missing
credentials. hf:// is mapped onto the Hub's resolve URLs: unit-tested, and read from a local server that
answers like them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.errors import AvdataError
from avdata.fetch.hub import HubPath, hub_request, parse_hub_url, resolve_url
from avdata.shards.location import open_location, open_shards
from avdata.shards.reader import iter_shard
from avdata.verify import verify_shards
from scmrl.data.config import StreamConfig
from scmrl.data.failures import ShardReadError
from scmrl.data.stream import ShardStream
from scmrl.data.synthetic import make_synthetic_av_shards
from tests.httpserver import serve_dir
from tests.s3server import moto_s3, s3_env, skip_without_s3

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

N_TRAIN, N_VAL, N_TEST = 128, 32, 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = make_synthetic_av_shards(tmp_path_factory.mktemp("objs") / "s", N_TRAIN, N_VAL, N_TEST, per_shard=32,
                                   frame_shape=(32, 40))
    (out / "README.md").write_text("---\nlicense: mit\n---\n# synthetic\n")
    return out


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    skip_without_s3()
    with moto_s3(tmp_path_factory.mktemp("aws")) as server:
        server.client.create_bucket(Bucket="bkt")
        yield server


@pytest.fixture
def env(s3):
    with s3_env(s3):
        yield s3


def _keys(client, prefix: str) -> list[str]:
    found = client.list_objects_v2(Bucket="bkt", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"][len(prefix):] for o in found)


def _push(*args: str):
    return CliRunner().invoke(app, ["push", *args])


def test_push_verifies_first_writes_the_manifest_last_and_resumes(env, shards, tmp_path, monkeypatch):
    import s3fs

    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    data = bytearray((broken / "train-000002.tar").read_bytes())
    data[5000] ^= 0xFF
    (broken / "train-000002.tar").write_bytes(bytes(data))
    r = _push(str(broken), "s3://bkt/a")
    assert r.exit_code == 2 and "does not verify" in r.output and "train-000002.tar" in r.output
    assert _keys(env.client, "a/") == []  # nothing uploaded from a folder that does not verify

    real_put, calls = s3fs.S3FileSystem.put_file, []

    def dying_put(self, lpath, rpath, **kw):  # the connection dies after two uploads
        if len(calls) == 2:
            raise ConnectionError("connection reset")
        calls.append(rpath)
        return real_put(self, lpath, rpath, **kw)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", dying_put)
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec binds the sync methods when an instance is made
    from avdata.share.push import push

    with pytest.raises(ConnectionError):
        push(shards, "s3://bkt/a", jobs=1, progress=False)
    assert len(_keys(env.client, "a/")) == 2 and "manifest.json" not in _keys(env.client, "a/")
    with pytest.raises(AvdataError, match="not found"):  # a reader sees no dataset rather than a partial one
        open_location("s3://bkt/a")
    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", real_put)
    s3fs.S3FileSystem.clear_instance_cache()

    r = _push(str(shards), "s3://bkt/a/")
    assert r.exit_code == 0, r.output
    assert "6 uploaded" in r.output and "2 already there" in r.output  # 7 files + manifest, 2 were there
    local = sorted(p.name for p in shards.iterdir())
    assert _keys(env.client, "a/") == local
    for name in local:
        body = env.client.get_object(Bucket="bkt", Key=f"a/{name}")["Body"].read()
        assert body == (shards / name).read_bytes(), name
    r = _push(str(shards), "s3://bkt/a")
    assert r.exit_code == 0 and "0 uploaded" in r.output and "8 already there" in r.output

    other = make_synthetic_av_shards(tmp_path / "other", 32, 0, 0, per_shard=32)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["dataset"] = "another"
    (other / "manifest.json").write_text(json.dumps(manifest))
    r = _push(str(other), "s3://bkt/a")
    assert r.exit_code == 2 and "already holds the dataset" in r.output and "--overwrite" in r.output
    r = _push(str(shards), "http://127.0.0.1:1/x")
    assert r.exit_code == 2 and "avdata serve" in r.output


def test_a_folder_pulled_with_split_is_refused_whole(env, shards, tmp_path):
    """It verifies (the splits not pulled are not checked), then push died on the first absent shard with
    a bare FileNotFoundError; pushed as it is, its manifest would name shards that are nowhere."""
    from avdata.share.pull import pull

    pull(str(shards), tmp_path / "part", splits=["val"], progress=False)
    r = _push(str(tmp_path / "part"), "s3://bkt/part")
    assert r.exit_code == 2 and "lacks the split(s) test, train (it was pulled with --split)" in r.output, r.output
    assert _keys(env.client, "part/") == []


def test_push_and_a_prepare_or_pull_into_its_folder_exclude_each_other(env, shards, tmp_path, monkeypatch):
    """A prepare or pull replacing a shard between push's verify and its upload had the new bytes uploaded
    under the old sha256 (and the old manifest): push holds a reader's lock of its folder."""
    import s3fs

    from avdata.folder_lock import output_lock
    from avdata.share.push import push

    folder = tmp_path / "f"
    shutil.copytree(shards, folder)
    with output_lock(folder, None):
        with pytest.raises(AvdataError, match=r"another `avdata prepare` \(pid \d+ .*\) is writing into .*f; it "
                                              r"holds the lock"):
            push(folder, "s3://bkt/locked", progress=False)
    assert _keys(env.client, "locked/") == []

    real_put, refusals = s3fs.S3FileSystem.put_file, []

    def put_while_a_prepare_starts(self, lpath, rpath, **kw):
        try:
            with output_lock(folder, None):
                refusals.append(None)
        except AvdataError as exc:
            refusals.append(str(exc))
        return real_put(self, lpath, rpath, **kw)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", put_while_a_prepare_starts)
    s3fs.S3FileSystem.clear_instance_cache()
    push(folder, "s3://bkt/locked", jobs=1, progress=False)
    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", real_put)
    s3fs.S3FileSystem.clear_instance_cache()
    assert len(refusals) == 7 and all("an `avdata push` (pid" in r and "is uploading from" in r for r in refusals)
    assert _keys(env.client, "locked/") == sorted(p.name for p in shards.iterdir())
    assert list((folder / ".avdata").iterdir()) == []  # no lock left (the first writer made the state folder)


@pytest.fixture
def pushed(env, shards):
    from avdata.share.push import push

    push(shards, "s3://bkt/ds", progress=False)
    return "s3://bkt/ds"


def test_read_verify_inspect_and_pull_from_s3(env, pushed, shards, tmp_path):
    loc = open_location(pushed)
    assert loc.remote and loc.num_samples("train") == N_TRAIN and sorted(loc.splits) == ["test", "train", "val"]
    for quick in (False, True):
        report = verify_shards(pushed, quick=quick, progress=False)
        assert report.ok and report.checked == 6, report.problems
    r = CliRunner().invoke(app, ["inspect", pushed, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert {k: v["num_samples"] for k, v in summary["splits"].items()} == \
        {"train": N_TRAIN, "val": N_VAL, "test": N_TEST}

    r = CliRunner().invoke(app, ["pull", pushed, "--to", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    for p in shards.iterdir():
        assert (tmp_path / "p" / p.name).read_bytes() == p.read_bytes()
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "p")])
    assert r.exit_code == 0 and "6 shards OK" in r.output

    # the trainer's stream reads s3 the way it reads a folder: the same samples in the same order
    cfg = StreamConfig(kind="static", image_size=32, time_steps=1, with_keys=True)
    remote = [s[-1] for s in ShardStream(open_shards(pushed), "val", cfg).iter_slot()]
    local = [s[-1] for s in ShardStream(open_shards(shards), "val", cfg).iter_slot()]
    assert remote == local and len(remote) == N_VAL
    listed = open_shards(f"{pushed}/val-000000.tar")  # shards given one by one: the manifest beside them
    assert listed.num_samples("val") == N_VAL and listed.address("val-000000.tar") == f"{pushed}/val-000000.tar"


def _read_in_child(url: str, queue) -> None:
    from avdata.fetch.objstore import open_object

    queue.put(open_object(url).read(512)[257:262])  # a tar member's "ustar" magic


def test_a_forked_loader_worker_reads_s3_on_its_own_event_loop(env, pushed, monkeypatch):
    """fsspec runs s3 calls on one loop thread, which a fork does not copy; before fsspec 2025.3.1 a DataLoader
    worker's first read waited forever. `filesystem` registers fsspec's reset for forked children itself."""
    import multiprocessing
    import os

    import fsspec.asyn

    from avdata.fetch import objstore

    hooks = []
    monkeypatch.setattr(objstore, "_FORK_HOOKED", False)
    monkeypatch.setattr(os, "register_at_fork", lambda **kw: hooks.append(kw))
    objstore.object_size(f"{pushed}/val-000000.tar")
    assert hooks == [{"after_in_child": fsspec.asyn.reset_lock}] and objstore._FORK_HOOKED
    monkeypatch.undo()
    objstore.object_size(f"{pushed}/val-000000.tar")  # the real hook, before the fork

    ctx = multiprocessing.get_context("fork")  # as the trainer's DataLoader workers start
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(f"{pushed}/val-000000.tar", queue))
    child.start()
    child.join(60)
    alive = child.is_alive()
    child.kill()
    assert not alive and queue.get(timeout=5) == b"ustar"


def test_a_deleted_shard_is_named(env, pushed, tmp_path):
    env.client.delete_object(Bucket="bkt", Key="ds/train-000001.tar")
    report = verify_shards(pushed, progress=False)
    assert report.problems == [("train-000001.tar", "missing (HTTP 404)")]
    assert verify_shards(pushed, quick=True, progress=False).problems == [("train-000001.tar", "missing (HTTP 404)")]

    r = CliRunner().invoke(app, ["pull", pushed, "--to", str(tmp_path / "p"), "--retries", "0"])
    assert r.exit_code == 1 and "train-000001.tar" in r.output
    assert not (tmp_path / "p" / "manifest.json").exists()

    stream = ShardStream(open_shards(pushed), "train", StreamConfig(kind="static", image_size=32, time_steps=1,
                                                                    retries=0))
    with pytest.raises(ShardReadError, match="s3://bkt/ds/train-000001.tar"):
        for _ in stream.iter_slot():
            pass


def test_bounds_hold_for_object_storage(env, pushed, shards, monkeypatch):
    monkeypatch.setattr("avdata.shards.location.MAX_MANIFEST_SIZE", 1000)
    with pytest.raises(AvdataError, match="more than the 1,000 allowed for a manifest"):
        open_location(pushed)
    monkeypatch.undo()
    # an object longer than the manifest says is cut off there and reported, never read on
    env.client.put_object(Bucket="bkt", Key="ds/val-000000.tar",
                          Body=(shards / "val-000000.tar").read_bytes() + b"\0" * 4096)
    report = verify_shards(pushed, splits=["val"], progress=False)
    assert [p[1] for p in report.problems] == [f"size differs: more than the expected "
                                               f"{(shards / 'val-000000.tar').stat().st_size} bytes "
                                               "(stopped reading there)"]

    # a member header claiming more than the shard holds stops the trainer's reader before it reads on
    data = bytearray((shards / "test-000000.tar").read_bytes())
    data[124:136] = b"77777777777\0"  # 8 GiB
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    env.client.put_object(Bucket="bkt", Key="ds/test-000000.tar", Body=bytes(data))
    stream = ShardStream(open_shards(pushed), "test", StreamConfig(kind="static", image_size=32, time_steps=1))
    with pytest.raises(ShardReadError, match=r"s3://bkt/ds/test-000000.tar is damaged or tampered with.*8,589,934,591"):
        next(iter(stream.iter_slot()))


def test_a_repush_replaces_shards_of_the_same_size_with_other_content(env, tmp_path):
    """Prepared again with another seed: some shards keep their name and size (tar pads to 10 KiB) but not
    their bytes. Only a content hash may let a push keep an object, never its size."""
    a = make_synthetic_av_shards(tmp_path / "a", 64, 16, 16, per_shard=16, frame_shape=(32, 40))
    b = make_synthetic_av_shards(tmp_path / "b", 64, 16, 16, per_shard=16, frame_shape=(32, 40), seed=9)
    same_size = [p.name for p in a.glob("*.tar") if p.stat().st_size == (b / p.name).stat().st_size]
    assert same_size and all((a / n).read_bytes() != (b / n).read_bytes() for n in same_size)
    assert _push(str(a), "s3://bkt/again").exit_code == 0
    r = _push(str(b), "s3://bkt/again")  # another seed: the same dataset prepared another way
    assert r.exit_code == 2 and "prepared with other options (seed differs)" in r.output, r.output
    r = _push(str(b), "s3://bkt/again", "--overwrite")
    assert r.exit_code == 0 and "0 already there" in r.output, r.output
    for p in b.iterdir():
        assert env.client.get_object(Bucket="bkt", Key=f"again/{p.name}")["Body"].read() == p.read_bytes(), p.name
    assert verify_shards("s3://bkt/again", progress=False).ok
    assert env.client.head_object(Bucket="bkt", Key="again/train-000000.tar")["Metadata"] == {
        "sha256": json.loads((b / "manifest.json").read_text())["splits"]["train"]["shards"][0]["sha256"]}


def test_missing_extra_or_credentials_are_named(env, pushed, shards, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(AvdataError, match=r'needs the s3fs package: pip install -e "\.\[s3\]" in the avdata checkout '
                                          r'\(or pip install s3fs\)'):
        open_location(pushed)
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(AvdataError, match=r'pip install -e "\.\[gcs\]"'):
        open_location("gs://bucket/shards")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    r = _push(str(shards), "hf://datasets/lab/syn")
    assert r.exit_code == 2 and 'pip install -e ".[hf]" in the avdata checkout' in r.output
    monkeypatch.undo()

    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AvdataError, match="no usable credentials.*AWS_ACCESS_KEY_ID"):
        open_location(pushed)
    r = CliRunner().invoke(app, ["verify", pushed])
    assert r.exit_code == 2 and "AWS_ACCESS_KEY_ID" in r.output


def test_hub_urls_map_onto_resolve_urls(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert parse_hub_url("hf://datasets/lab/cremad") == HubPath("lab/cremad", "main", "")
    assert parse_hub_url("hf://datasets/lab/cremad@v1.0/shards/manifest.json") == HubPath(
        "lab/cremad", "v1.0", "shards/manifest.json")
    assert parse_hub_url("hf://datasets/lab/cremad@refs%2Fpr%2F3/x.tar").revision == "refs/pr/3"
    assert (resolve_url("hf://datasets/lab/cremad@refs%2Fpr%2F3/s/train-000000.tar")
            == "https://huggingface.co/datasets/lab/cremad/resolve/refs%2Fpr%2F3/s/train-000000.tar")
    assert resolve_url("hf://datasets/lab/cremad/a b.tar").endswith("/resolve/main/a%20b.tar")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert resolve_url("hf://datasets/o/n/manifest.json") == "http://127.0.0.1:9/datasets/o/n/resolve/main/manifest.json"
    for bad, why in (("hf://lab/model", "dataset repository"), ("hf://spaces/a/b", "dataset repository"),
                     ("hf://datasets/onlyname", "OWNER/NAME"), ("hf://datasets/o/n@/x", "empty"),
                     ("hf://datasets/o/n/../x", r"'\.\.'")):
        with pytest.raises(AvdataError, match=why):
            parse_hub_url(bad)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert hub_request("hf://datasets/o/n/x", {})[1] == {"Authorization": "Bearer hf_secret"}
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert hub_request("hf://datasets/o/n/x", {})[1] == {}


def test_hf_url_reads_from_a_server_that_answers_like_the_hub(shards, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "datasets" / "lab" / "syn" / "resolve" / "v1"
    shutil.copytree(shards, repo / "shards")
    with serve_dir(tmp_path / "hub") as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        report = verify_shards("hf://datasets/lab/syn@v1/shards", progress=False)
        assert report.ok and report.checked == 6
        assert all(r["headers"].get("Authorization") == "Bearer hf_secret" for r in base.requests)
        assert open_location("hf://datasets/lab/syn@v1/shards/manifest.json").num_samples("test") == N_TEST
        r = CliRunner().invoke(app, ["pull", "hf://datasets/lab/syn@v1/shards", "--to", str(tmp_path / "p")])
        assert r.exit_code == 0, r.output
    assert [k for k, _ in iter_shard(tmp_path / "p" / "test-000000.tar")] == \
        [k for k, _ in iter_shard(shards / "test-000000.tar")]
