"""avdata.share.serve (static files with HTTP Range) and avdata.share.pull (fetch a shards folder), and their CLI."""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.shards.manifest import Manifest, ShardEntry, SplitEntry
from avdata.share.pull import pull
from avdata.share.serve import make_server, parse_range
from avdata.cli.avdata_app import app
from tests.httpserver import serve_dir

runner = CliRunner()
FAST = dict(backoff=0.01, progress=False)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory) -> Path:
    """A tiny shards folder in the manifest schema: train (2 shards), test (1 shard), a dataset card."""
    root = tmp_path_factory.mktemp("shards")
    splits = {"train": [["a0", "a1", "a2"], ["a3", "a4"]], "test": [["b0", "b1"]]}
    manifest = Manifest("toy", ["0", "1"], {"cls": {"dtype": "int", "shape": [], "meaning": "class index"},
                                             "bin": {"dtype": "uint8", "shape": ["n"], "meaning": "random bytes"}},
                        options={"seed": 42})
    for split, shard_keys in splits.items():
        shards = []
        counts = {"0": 0, "1": 0}
        for i, keys in enumerate(shard_keys):
            members = {}
            for j, key in enumerate(keys):
                members[f"{key}.cls"] = str(j % 2).encode()
                members[f"{key}.bin"] = os.urandom(30_000)
                counts[str(j % 2)] += 1
            name = f"{split}-{i:06d}.tar"
            (root / name).write_bytes(_tar(members))
            shards.append(ShardEntry(name, (root / name).stat().st_size, sha256_file(root / name), len(keys)))
        manifest.splits[split] = SplitEntry.of_shards(shards, counts)
    manifest.save(root)
    (root / "README.md").write_text("---\nlicense: mit\n---\n# toy\n")
    return root


@contextmanager
def avdata_server(directory: Path):
    server = make_server(directory, "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_pull_gives_identical_folder(shards_dir, tmp_path):
    with avdata_server(shards_dir) as (url, _):
        rep = pull(url, tmp_path / "copy", jobs=3, **FAST)
        assert rep.ok and len(rep.fetched) == 4  # 3 shards + the card
        assert _files(tmp_path / "copy") == _files(shards_dir)
        again = pull(url + "/manifest.json", tmp_path / "copy", **FAST)
        assert not again.fetched and len(again.already_present) == 4


def test_pull_one_split(shards_dir, tmp_path):
    with avdata_server(shards_dir) as (url, _):
        res = runner.invoke(app, ["pull", url, "--to", str(tmp_path / "t"), "--split", "test"])
    assert res.exit_code == 0, res.output
    got = _files(tmp_path / "t")
    assert sorted(got) == ["README.md", "manifest.json", "test-000000.tar"]
    # verify then checks only test
    assert json.loads((tmp_path / "t" / ".avdata" / "pulled-splits.json").read_text()) == ["test"]
    assert got["manifest.json"] == (shards_dir / "manifest.json").read_bytes()
    assert "train" in res.output and "absent" in res.output
    with avdata_server(shards_dir) as (url, _), pytest.raises(AvdataError, match="no split 'nope'"):
        pull(url, tmp_path / "n", splits=["nope"], **FAST)
    from avdata.summary import summarize  # inspect: the pulled split read, the others named (a bare OSError)

    summary = summarize(tmp_path / "t", progress=False)
    assert list(summary["splits"]) == ["test"] and summary["not_pulled"] == ["train"]
    assert summary["splits"]["test"]["read"]["matches_manifest"]
    with pytest.raises(AvdataError, match=r"split\(s\) train were not pulled"):
        summarize(tmp_path / "t", splits=["train"], progress=False)
    from avdata.contact_sheet import contact_sheet

    with pytest.raises(AvdataError, match=r"split\(s\) train were not pulled"):
        contact_sheet(tmp_path / "t", tmp_path / "sheet.png", split="train")
    with avdata_server(shards_dir) as (url, _):  # the rest, then test alone again: nothing is absent now
        assert not pull(url, tmp_path / "t", **FAST).notes
        assert not pull(url, tmp_path / "t", splits=["test"], **FAST).notes


def test_pulling_another_split_of_a_changed_dataset_replaces_the_stale_shards_pulled_before(shards_dir, tmp_path):
    """train pulled, then the served folder prepared again (one train shard now other bytes of the same
    size), then `pull --split test`: the new manifest was written over the old train shard, the pull
    said it succeeded, and the trainer read the stale shard (only `verify` noticed)."""
    served = tmp_path / "served"
    served.mkdir()
    for name, data in _files(shards_dir).items():
        (served / name).write_bytes(data)
    to = tmp_path / "t"
    assert pull(str(served), to, splits=["train"], **FAST).ok
    changed = bytearray((served / "train-000001.tar").read_bytes())
    changed[-2000] ^= 1  # inside the tar's zero padding: still a valid shard
    (served / "train-000001.tar").write_bytes(bytes(changed))
    manifest = Manifest.load(served / "manifest.json")
    manifest.splits["train"].shards[1].sha256 = sha256_file(served / "train-000001.tar")
    manifest.save(served)
    keep = (to / "train-000000.tar").stat().st_mtime_ns
    report = pull(str(served), to, splits=["test"], **FAST)
    assert report.ok and sorted(r.path for r in report.fetched) == ["README.md", "test-000000.tar",
                                                                            "train-000001.tar"]
    assert _files(to) == _files(served) and (to / "train-000000.tar").stat().st_mtime_ns == keep
    assert not (to / ".avdata" / "pulled-splits.json").exists()  # every split is here, all of this version


def test_pull_damaged_shard_never_kept(shards_dir, tmp_path):
    # byte 600 lies in the first member's data of every shard: each shard is served damaged
    with serve_dir(shards_dir, corrupt_byte_at=600, only="*.tar") as url:
        rep = pull(url, tmp_path / "d", retries=1, **FAST)
        assert not rep.ok and {r.path for r in rep.failed} == {"train-000000.tar", "train-000001.tar",
                                                                "test-000000.tar"}
        assert all(r.kind == "checksum" and r.expected_sha256 for r in rep.failed)
        res = runner.invoke(app, ["pull", url, "--to", str(tmp_path / "d"), "--retries", "0"])
        assert res.exit_code == 1
    left = _files(tmp_path / "d")
    assert "manifest.json" not in left and not any(n.endswith(".tar") for n in left)
    assert not any(n.endswith(".part") for n in left)
    # the same pull against a good server completes the folder
    with serve_dir(shards_dir) as url:
        assert pull(url, tmp_path / "d", **FAST).ok
    assert _files(tmp_path / "d") == _files(shards_dir)


def test_pull_resumes_after_drops_and_from_local_path(shards_dir, tmp_path):
    with serve_dir(shards_dir, drop_after=20_000, only="*.tar") as url:
        rep = pull(url, tmp_path / "r", **FAST)
        assert rep.ok
        assert any(r["headers"].get("Range") == "bytes=20000-" for r in url.requests)
    assert _files(tmp_path / "r") == _files(shards_dir)
    rep = pull(str(shards_dir), tmp_path / "local", **FAST)
    assert rep.ok and _files(tmp_path / "local") == _files(shards_dir)


def test_pull_without_card_and_bad_url(shards_dir, tmp_path, caplog):
    no_card = tmp_path / "src"
    no_card.mkdir()
    for name, data in _files(shards_dir).items():
        if name != "README.md":
            (no_card / name).write_bytes(data)
    with avdata_server(no_card) as (url, _):
        with caplog.at_level("INFO"):
            rep = pull(url, tmp_path / "c", **FAST)
        assert rep.ok and not (tmp_path / "c" / "README.md").exists()
        # the card is optional: its absence is no error (an ERROR line in a pull that succeeded)
        assert not [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        with pytest.raises(AvdataError, match="404"):
            pull(url + "/elsewhere", tmp_path / "x", **FAST)


def _get(port: int, path: str, method: str = "GET", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_serve_ranges(shards_dir):
    data = (shards_dir / "train-000000.tar").read_bytes()
    size = len(data)
    with avdata_server(shards_dir) as (_, port):
        resp, body = _get(port, "/train-000000.tar")
        assert resp.status == 200 and body == data and resp.getheader("Content-Length") == str(size)
        assert resp.getheader("Accept-Ranges") == "bytes" and resp.getheader("Content-Type") == "application/x-tar"
        resp, body = _get(port, "/train-000000.tar", headers={"Range": "bytes=100-199"})
        assert resp.status == 206 and body == data[100:200]
        assert resp.getheader("Content-Range") == f"bytes 100-199/{size}"
        assert resp.getheader("Content-Length") == "100"
        resp, body = _get(port, "/train-000000.tar", headers={"Range": "bytes=1000-"})
        assert resp.status == 206 and body == data[1000:]
        resp, body = _get(port, "/train-000000.tar", headers={"Range": "bytes=-10"})
        assert resp.status == 206 and body == data[-10:]
        resp, body = _get(port, "/train-000000.tar", headers={"Range": f"bytes={size - 5}-{size + 100}"})
        assert resp.status == 206 and body == data[-5:]
        resp, body = _get(port, "/train-000000.tar", headers={"Range": f"bytes={size}-"})
        assert resp.status == 416 and resp.getheader("Content-Range") == f"bytes */{size}"
        resp, body = _get(port, "/train-000000.tar", method="HEAD")
        assert resp.status == 200 and body == b"" and resp.getheader("Content-Length") == str(size)
        resp, body = _get(port, "/train-000000.tar", headers={"Range": "bytes=0-1,5-6"})
        assert resp.status == 200 and body == data  # several ranges: whole file
        for bad in ("/nope.tar", "/../etc/passwd", "/%2e%2e/etc/passwd", "/"):
            assert _get(port, bad)[0].status == 404


def test_parse_range():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("bytes=2-", 10) == (2, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) == "unsatisfiable"
    assert parse_range("bytes=5-2", 10) == "unsatisfiable"
    assert parse_range("items=1-2", 10) is None
    with pytest.raises(AvdataError, match="no such folder"):
        make_server("/nonexistent/folder", "127.0.0.1", 0)


def test_serve_and_pull_help_mention_static_servers():
    res = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "nginx" in res.output and "Hugging Face" in res.output
    res = runner.invoke(app, ["pull", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--split" in res.output


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_manifest_is_named_at_once_with_the_credentials_to_check(tmp_path, monkeypatch, status):
    """A refused manifest was asked for three times, then reported as 'could not be read after 3 tries'
    naming nothing to set; an hf:// one names HF_TOKEN."""
    from tests.httpserver import send_whole, serve_script

    seen = []

    def refuse(handler):
        seen.append(handler.path)
        send_whole(handler, status, b"no\n")

    with serve_script(refuse) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        for where, hint in ((url, "the user:password in the URL"), ("hf://datasets/lab/x", "HF_TOKEN")):
            seen.clear()
            with pytest.raises(AvdataError, match=rf"manifest.json: access denied \(HTTP {status} "
                                                  rf"(Unauthorized|Forbidden)\); check the credentials: {hint}"):
                pull(where, tmp_path / "t", **FAST)
            assert len(seen) == 1


def test_a_second_pull_into_the_same_folder_waits_its_turn(shards_dir, tmp_path):
    """Two pulls into one --to (the nodes of a job each pulling into shared storage) renamed and resumed each
    other's .part files: the pulls failed with FileNotFoundError, and a writer still appending to a .part
    the other had just renamed would change a verified shard. One holds the folder's lock at a time."""
    from avdata.folder_lock import output_lock

    to = tmp_path / "t"
    to.mkdir()
    with output_lock(to, None, command="avdata pull") as held:
        with pytest.raises(AvdataError, match=rf"another `avdata pull` \(pid {os.getpid()} .*"
                                              rf"holds the lock {held}"):
            pull(str(shards_dir), to, **FAST)
    assert not list(to.glob("*.tar*"))
    assert pull(str(shards_dir), to, **FAST).ok and not (to / ".avdata" / "prepare.lock").exists()
