"""Files and servers other people control: checkpoints, manifests, shards and mirrors must not run code,
fill the disk, exhaust memory, hang, or write outside the target folder.

Hostile servers are tiny http servers on 127.0.0.1 (tests/httpserver.py) with bounded loops and
timeouts; hostile files are made here."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avdata.errors import AvdataError
from scmrl.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


# ------------------------------------------------------------------------------------------ checkpoints


class _Payload:
    """Pickles to a call of os.system: loading it with plain pickle would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_a_pickled_payload_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "rng": _Payload(marker)}, evil)
    with pytest.raises(AvdataError, match=r"evil\.pt: refused.*run code.*posix\.system|evil\.pt: refused.*system"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_eval_cli_refuses_a_pickled_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from scmrl.cli.train_app import eval_app

    marker = tmp_path / "ran"
    torch.save({"model": {}, "model_config": _Payload(marker)}, tmp_path / "evil.pt")
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(tmp_path / "evil.pt"), "--shards", str(tmp_path),
                                      "--device", "cpu"])
    assert r.exit_code == 2 and "refused" in r.output and not marker.exists()


def test_resume_refuses_a_pickled_checkpoint(shards, tmp_path):
    from scmrl.train.config import TrainConfig
    from scmrl.train.loop import train

    marker = tmp_path / "ran"
    (tmp_path / "run").mkdir()
    torch.save({"model": {}, "state": _Payload(marker)}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(AvdataError, match=r"checkpoint\.pt: refused"):
        train(TrainConfig(shards=str(shards), out=str(tmp_path / "run"), resume=True, epochs=1, batch_size=4,
                          workers=0, embed_dim=16, heads=2, time_steps=2, image_size=16))
    assert not marker.exists()


def test_rng_states_are_plain_tensors_and_restore_exactly(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng()})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)  # no allow-list needed
    restore_rng(ckpt["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_a_checkpoint_in_the_earlier_layout_still_loads(tmp_path):
    random.seed(4), np.random.seed(4)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"rng": old, "epoch": 1}, tmp_path / "old.pt")
    expected = (random.random(), float(np.random.rand()))
    random.seed(0), np.random.seed(0)
    restore_rng(load_checkpoint(tmp_path / "old.pt")["rng"])
    assert (random.random(), float(np.random.rand())) == expected


# ------------------------------------------------------------------------------------------ manifests


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from scmrl.data.synthetic import make_synthetic_av_shards

    return make_synthetic_av_shards(tmp_path_factory.mktemp("syn") / "s", 16, 8, 8, per_shard=8, seed=1)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_manifest(folder: Path, change) -> None:
    import json

    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _hostile_manifest(m: dict) -> None:
    m["schema_version"] = "1"
    m["classes"] = "v0a0,v0a1,v1a0,v1a1"
    m["splits"]["train"]["shards"][0]["file"] = 7
    m["splits"]["train"]["shards"][1]["bytes"] = "440320"
    m["splits"]["val"]["num_samples"] = "8"
    m["splits"]["val"]["class_counts"] = [2, 2, 2, 2]
    m["splits"]["test"]["shards"][0]["file"] = "test\x00-000000.tar"
    m["splits"]["extra"] = 5


EXPECTED_PATHS = ["$.schema_version: must be an integer, not a string", "$.classes: must be a list",
                  "$.splits.train.shards[0].file: must be a string", "$.splits.train.shards[1].bytes: must be an "
                  "integer", "$.splits.val.num_samples: must be an integer", "$.splits.val.class_counts: must be "
                  "an object", "$.splits.test.shards[0].file", "control character", "$.splits.extra: must be an "
                  "object"]


def test_manifest_validation_reports_every_problem_with_its_path(shards):
    import copy
    import json

    from avdata.shards.schema import problems, validate

    m = json.loads((shards / "manifest.json").read_text())
    assert problems(m) == []
    bad = copy.deepcopy(m)
    _hostile_manifest(bad)
    found = "\n".join(problems(bad))
    for expected in EXPECTED_PATHS:
        assert expected in found, expected
    with pytest.raises(AvdataError, match="newer") as e:
        validate({**m, "schema_version": 2})
    assert "(1)" in str(e.value) and "2" in str(e.value)
    neg = copy.deepcopy(m)
    neg["splits"]["train"]["shards"][0]["num_samples"] = -3
    neg["splits"]["train"]["shards"][0]["sha256"] = "zz"
    neg["splits"]["train"]["shards"][0]["file"] = "../escape.tar"
    found = "\n".join(problems(neg))
    assert "$.splits.train.shards[0].num_samples: -3 is out of range" in found
    assert "$.splits.train.shards[0].sha256: must be 64 hex digits" in found
    assert "$.splits.train.shards[0].file: shard file name '../escape.tar' must be a plain name" in found


@pytest.mark.parametrize("command", ["verify", "inspect", "train", "pull"])
def test_every_reader_reports_a_hostile_manifest_without_a_traceback(shards, tmp_path, command):
    from typer.testing import CliRunner

    from avdata.cli.avdata_app import app
    from scmrl.cli.train_app import train_app

    folder = _copy(shards, tmp_path / "hostile")
    _edit_manifest(folder, _hostile_manifest)
    runner = CliRunner()
    if command == "train":
        r = runner.invoke(train_app, ["--shards", str(folder), "--out", str(tmp_path / "run"), "--device", "cpu"])
    elif command == "pull":
        r = runner.invoke(app, ["pull", str(folder), "--to", str(tmp_path / "copy")])
    else:
        r = runner.invoke(app, [command, str(folder)])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    out = " ".join(r.output.split())
    for expected in EXPECTED_PATHS:
        assert " ".join(expected.split()) in out, (expected, r.output)
    assert not (tmp_path / "copy" / "manifest.json").exists()


# ------------------------------------------------------------------------------- hostile servers, caps


def _folder_server(folder: Path, overrides: dict):
    """A `respond` for serve_script: files of `folder`, except names in `overrides` (name -> respond)."""
    import urllib.parse

    def respond(h):
        name = urllib.parse.unquote(h.path.split("?")[0]).lstrip("/")
        if name in overrides:
            return overrides[name](h)
        path = folder / name
        if not path.is_file():
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = path.read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return respond


def _pull(url: str, to: Path, *extra: str):
    from typer.testing import CliRunner

    from avdata.cli.avdata_app import app

    return CliRunner().invoke(app, ["pull", url, "--to", str(to), "--retries", "0", "--backoff", "0", *extra])


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_shard_body_past_its_declared_size_is_cut_off(shards, tmp_path):
    from tests.httpserver import endless_body, serve_script

    name = "train-000000.tar"
    with serve_script(_folder_server(shards, {name: endless_body})) as url:
        r = _pull(url, tmp_path / "copy")
    assert r.exit_code == 1, r.output
    assert "more than the expected" in " ".join(r.output.split())
    assert not (tmp_path / "copy" / "manifest.json").exists()
    assert not (tmp_path / "copy" / name).exists() and not (tmp_path / "copy" / (name + ".part")).exists()


def test_a_huge_declared_length_is_refused_before_reading(shards, tmp_path):
    from avdata.fetch.download import RemoteFile, fetch_files
    from tests.httpserver import serve_script

    def huge(h):
        h.send_response(200)
        h.send_header("Content-Length", str(10**13))
        h.end_headers()
        h.wfile.write(b"\0" * 1000)

    with serve_script(huge) as url:
        rep = fetch_files(url, [RemoteFile("a.tar", size=1000), RemoteFile("card.md")], tmp_path, retries=0,
                          progress=False)
    assert [r.kind for r in rep.failed] == ["too-large", "too-large"]
    assert "10,000,000,000,000 bytes" in rep.failed[0].reason and _files_under(tmp_path) == set()


def test_a_pull_that_cannot_fit_is_refused_before_any_byte_arrives(shards, tmp_path, monkeypatch):
    """A manifest may declare shards of up to 10**12 bytes each, and a server send that much: the pull
    filled the disk before it stopped. What is already there (whole, or as .part) counts as pulled."""
    import avdata.share.pull as pull_mod

    total = sum(p.stat().st_size for p in shards.glob("*.tar"))
    big = _copy(shards, tmp_path / "big")
    _edit_manifest(big, lambda m: m["splits"]["train"]["shards"][0].update(bytes=10**12))
    monkeypatch.setattr(pull_mod, "free_space", lambda path: 10**11, raising=False)
    r = _pull(str(big), tmp_path / "copy")
    assert r.exit_code == 2, r.output
    assert f"the 4 shard(s) to pull need {10**12 + total - (big / 'train-000000.tar').stat().st_size:,} more " \
           f"bytes than the 100,000,000,000 free there" in " ".join(r.output.split())
    assert not (tmp_path / "copy").exists()
    monkeypatch.setattr(pull_mod, "free_space", lambda path: total - 1)
    r = _pull(str(shards), tmp_path / "copy")
    assert r.exit_code == 2 and f"need {total:,} more bytes than the {total - 1:,} free" in " ".join(r.output.split())
    (tmp_path / "copy").mkdir()
    first = shards / "train-000000.tar"
    (tmp_path / "copy" / "train-000000.tar.part").write_bytes(first.read_bytes()[:1000])
    r = _pull(str(shards), tmp_path / "copy")  # 1000 bytes of it already there
    assert r.exit_code == 0, r.output
    assert (tmp_path / "copy" / "manifest.json").read_bytes() == (shards / "manifest.json").read_bytes()

def test_the_card_is_capped(shards, tmp_path, monkeypatch):
    import avdata.share.pull as pull_mod
    from tests.httpserver import endless_body, serve_script

    monkeypatch.setattr(pull_mod, "MAX_CARD_SIZE", 1 << 20)  # the real cap is 16 MiB: same rule, less waiting
    with serve_script(_folder_server(shards, {"README.md": endless_body})) as url:
        r = _pull(url, tmp_path / "copy")
    assert r.exit_code == 1 and "README.md" in r.output and "1,048,576" in " ".join(r.output.split())
    assert not (tmp_path / "copy" / "manifest.json").exists() and not (tmp_path / "copy" / "README.md").exists()


def test_a_manifest_dripped_just_above_the_stall_rule_has_a_deadline(monkeypatch):
    """Every reader fetches manifest.json first; at the stall rule's floor (16 KiB a minute) a 64 MiB one
    took 68 hours a try. It now has the streamed reads' deadline (here scaled down: 0.5 s plus 1 s per
    200 bytes, against a drip of 100 bytes a second that never stalls)."""
    import avdata.fetch.transport as transport
    from avdata.errors import AvdataError
    from tests.httpserver import serve_script, trickle

    monkeypatch.setattr(transport, "READ_GRACE_SECONDS", 0.5)
    monkeypatch.setattr(transport, "READ_MIN_RATE", 200)
    with serve_script(lambda h: trickle(h, length=None, every=0.01, seconds=3)) as url:
        with pytest.raises(AvdataError, match=r"manifest.json: could not be read after 1 tries \(too slow: \d+ "
                                              r"bytes in [\d.]+s; gave up \(a manifest may take 0.5s plus 1s per "
                                              r"200 bytes\)\)"):
            transport.read_small(url + "/manifest.json", retries=1, what="manifest", stall_seconds=0.2,
                                 stall_bytes=1)

@pytest.mark.slow
def test_a_trickling_server_is_a_stall_and_gives_up(shards, tmp_path):

    from tests.httpserver import serve_script, trickle

    size = (shards / "train-000000.tar").stat().st_size
    with serve_script(_folder_server(shards, {"train-000000.tar": lambda h: trickle(h, length=size)})) as url:
        r = _pull(url, tmp_path / "copy", "--stall-timeout", "1")
    # the trickle would deliver the whole shard in the end: failing as stalled means the rule cut it short
    assert r.exit_code == 1 and "stalled" in r.output, r.output
    assert not (tmp_path / "copy" / "manifest.json").exists()


@pytest.mark.slow
def test_the_stall_rule_in_the_engine(tmp_path):
    from avdata.fetch.download import RemoteFile, fetch_files
    from tests.httpserver import serve_script, trickle

    with serve_script(lambda h: trickle(h, every=0.05, seconds=5)) as url:
        rep = fetch_files(url, [RemoteFile("x.bin", size=1 << 20)], tmp_path, retries=1, backoff=0,
                          progress=False, stall_seconds=0.5, stall_bytes=1024)
    assert rep.failed[0].kind == "stalled" and rep.failed[0].attempts == 2
    assert "1,024 bytes every 0.5s" in rep.failed[0].reason


@pytest.mark.slow
def test_the_trainer_gives_up_on_a_trickling_shard_server(shards, tmp_path):
    """Shards streamed over http obey the stall rule too: a server that sends a byte now and then (never
    silent long enough for the socket timeout) is a read error naming the shard, not a hang."""

    from avdata.shards.location import open_shards
    from scmrl.data.config import StreamConfig
    from scmrl.data.failures import ShardReadError
    from scmrl.data.stream import ShardStream
    from tests.httpserver import serve_script, trickle

    size = (shards / "train-000000.tar").stat().st_size
    with serve_script(_folder_server(shards, {"train-000000.tar": lambda h: trickle(h, length=size, every=0.05,
                                                                                    seconds=20)})) as url:
        src = open_shards(url)
        src.stall_seconds, src.stall_bytes = 0.5, 4096
        stream = ShardStream(src, "train", StreamConfig(kind="static", image_size=16, retries=1, backoff=0.01))
        with pytest.raises(ShardReadError, match="train-000000.tar.*stalled"):
            list(stream.iter_slot())


def test_the_stall_rule_counts_only_time_spent_reading():
    """A reader that pauses between reads (a data worker whose batches wait to be taken) is not stalled."""
    import io
    import time

    from avdata.fetch.transport import StallGuard

    class Slow(io.BytesIO):
        def read1(self, n=-1):
            time.sleep(0.02)
            return super().read1(min(n, 10))

    paused = StallGuard(io.BytesIO(b"x" * 100), seconds=0.1, min_bytes=50)
    for _ in range(5):
        assert paused.read(10) == b"x" * 10
        time.sleep(0.05)  # 0.25 s of pauses, no time spent waiting on the server
    slow = StallGuard(Slow(b"x" * 1000), seconds=0.1, min_bytes=100)  # 500 bytes/s: too slow
    with pytest.raises(TimeoutError, match=r"stalled: \d\d bytes in 0\.\ds of waiting"):
        for _ in range(100):
            slow.read(10)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["endless", "huge-length"])
def test_a_manifest_is_read_bounded_by_every_reader(shards, tmp_path, how):
    from typer.testing import CliRunner

    from avdata.cli.avdata_app import app
    from scmrl.cli.train_app import train_app
    from tests.httpserver import endless_body, serve_script

    respond = endless_body if how == "endless" else (lambda h: endless_body(h, length=10**13, seconds=2))
    runner = CliRunner()
    with serve_script(_folder_server(shards, {"manifest.json": respond})) as url:
        results = [runner.invoke(app, ["verify", url]), runner.invoke(app, ["inspect", url]),
                   _pull(url, tmp_path / "copy"),
                   runner.invoke(train_app, ["--shards", url, "--out", str(tmp_path / "run"), "--device", "cpu"])]
    for r in results:
        assert r.exit_code == 2, r.output
        assert "manifest.json" in r.output and "67,108,864" in " ".join(r.output.split()), r.output
    assert _files_under(tmp_path) == set()


ENDLESS_UNDER_A_MEMORY_LIMIT = r"""
import resource, sys
sys.path.insert(0, sys.argv[1])
from tests.httpserver import endless_body, serve_script
from avdata.errors import AvdataError
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))   # 1 GiB of address space in all
from avdata.shards.location import open_location
from avdata.share.pull import pull
for name in ("manifest", "pull"):
    with serve_script(endless_body) as url:
        try:
            open_location(url) if name == "manifest" else pull(url, sys.argv[2], progress=False, retries=1)
        except AvdataError as exc:
            print(name, "refused:", str(exc)[:200])
        except MemoryError:
            print(name, "MemoryError")
"""


@pytest.mark.slow
def test_endless_bodies_stay_within_a_memory_limit(tmp_path):
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", ENDLESS_UNDER_A_MEMORY_LIMIT, str(repo), str(tmp_path / "to")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["manifest", "pull"], r.stdout
    assert all("refused" in line and "67,108,864" in line for line in lines), r.stdout
    assert not (tmp_path / "to" / "manifest.json").exists()


def test_planted_symlinks_are_never_followed(shards, tmp_path):
    from tests.httpserver import serve_dir

    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {name: outside / name for name in ("a", "b", "c", "d")}
    for v in victims.values():
        v.write_bytes(b"keep me\n")
    to = tmp_path / "copy"
    to.mkdir()
    (to / "train-000000.tar.part").symlink_to(victims["a"])
    (to / "manifest.json.tmp").symlink_to(victims["b"])
    (to / "manifest.json").symlink_to(victims["c"])
    (to / "README.md.part").symlink_to(victims["d"])
    with serve_dir(shards) as url:
        r = _pull(url, to)
    assert r.exit_code == 0, r.output
    assert all(v.read_bytes() == b"keep me\n" for v in victims.values())
    assert not any(p.is_symlink() for p in to.iterdir())
    assert (to / "manifest.json").read_bytes() == (shards / "manifest.json").read_bytes()
    assert (to / "train-000000.tar").read_bytes() == (shards / "train-000000.tar").read_bytes()


def test_atomic_writes_never_follow_a_planted_tmp_link(tmp_path):
    from avdata.atomic import atomic_write_text

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.json.tmp").symlink_to(victim)
    atomic_write_text(tmp_path / "out" / "x.json", "new")
    assert victim.read_text() == "keep me" and (tmp_path / "out" / "x.json").read_text() == "new"
    assert _files_under(tmp_path / "out") == {"x.json"}


def test_a_mirror_answering_html_is_named_and_stopped_early(tmp_path):
    import avdata.datasets.download_plan as dr
    from avdata.fetch.session import SAME_FAILURE_ABORT_AFTER
    from tests.httpserver import serve_script

    hits = []

    def portal(h):
        hits.append(h.path)
        body = b"<!DOCTYPE html><html><body>Please log in to the Wi-Fi</body></html>"
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    with serve_script(portal) as url:
        rep = dr.download_dataset("cremad", tmp_path / "raw", mirror=url, limit=60, jobs=2, retries=2,
                                  backoff=0, progress=False)
    kinds = [r.kind for r in rep.failed]
    assert kinds.count("html") >= SAME_FAILURE_ABORT_AFTER and set(kinds) == {"html", "stopped"}
    assert len(hits) <= SAME_FAILURE_ABORT_AFTER + 2  # one request per file: an HTML page is not retried
    assert any("HTML page" in r.reason for r in rep.failed)
    assert any("all failed the same way" in r.reason for r in rep.failed if r.kind == "stopped")
    assert not list((tmp_path / "raw").rglob("*.flv"))


def test_pull_into_a_folder_holding_another_dataset_is_refused(shards, tmp_path):
    from tests.httpserver import serve_dir

    other = _copy(shards, tmp_path / "other")
    _edit_manifest(other, lambda m: m.update(dataset="cremad"))
    before = _files_under(other)
    with serve_dir(shards) as url:
        r = _pull(url, other)
        assert r.exit_code == 2 and "'cremad'" in r.output and "--overwrite" in r.output
        assert _files_under(other) == before and '"cremad"' in (other / "manifest.json").read_text()
        r = _pull(url, other, "--overwrite")
    assert r.exit_code == 0 and (other / "manifest.json").read_bytes() == (shards / "manifest.json").read_bytes()


# --------------------------------------------------------------------------------------- shards, trainer


def _set_member_size(tar: Path, index_in_file: int, size: int) -> None:
    """Rewrite the size field of the header at block `index_in_file` (GNU base-256) and its checksum."""
    data = bytearray(tar.read_bytes())
    at = index_in_file * 512
    header = data[at:at + 512]
    header[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    data[at:at + 512] = header
    tar.write_bytes(bytes(data))


def test_the_tar_reader_bounds_member_sizes(tmp_path):
    import io
    import tarfile

    from avdata.shards.reader import TarBoundsError, iter_tar_files

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("a.cls", "a.json"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"123"))
    path = tmp_path / "s.tar"
    path.write_bytes(buf.getvalue())
    _set_member_size(path, 0, 10**12)
    with open(path, "rb") as f, pytest.raises(tarfile.ReadError, match=r"member 'a.cls': it claims 1,000,000,000,000"):
        list(iter_tar_files(f))  # the file's own size bounds it (read as a file cut short)
    with pytest.raises(TarBoundsError, match="1,000,000,000,000"):  # a stream: the declared size bounds it
        list(iter_tar_files(io.BytesIO(path.read_bytes()), limit=len(buf.getvalue())))
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.cls")
        info.size, info.pax_headers = 1, {"comment": "x" * 2_000_000}
        tf.addfile(info, io.BytesIO(b"1"))
    with pytest.raises(TarBoundsError, match="extended header"):
        list(iter_tar_files(io.BytesIO(pax.getvalue())))


def test_a_huge_member_header_names_the_shard_in_the_trainer(shards, tmp_path, caplog):
    from scmrl.data.failures import ShardReadError
    from scmrl.train.config import TrainConfig
    from scmrl.train.loop import train

    folder = _copy(shards, tmp_path / "s")
    _set_member_size(folder / "train-000001.tar", 0, 10**12)
    with caplog.at_level("WARNING", logger="scmrl"), \
            pytest.raises(ShardReadError, match=r"train-000001\.tar is damaged.*1,000,000,000,000"):
        train(TrainConfig(shards=str(folder), out=str(tmp_path / "run"), epochs=1, batch_size=4, workers=0,
                          embed_dim=16, heads=2, time_steps=2, image_size=16, shuffle_buffer=8))
    # no retries with back-off for a header that will not change
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


class _FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written (what a full disk does)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        import errno

        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


@pytest.mark.slow
@pytest.mark.parametrize("what", ["checkpoint", "metrics"])
def test_a_full_disk_in_the_trainer_names_the_path_and_the_fix(shards, tmp_path, monkeypatch, capsys, what):
    import builtins

    import avdata.atomic
    from avdata.cli import errors
    from scmrl.train.config import TrainConfig
    from scmrl.train.loop import train

    if what == "checkpoint":
        real = avdata.atomic.open_new
        monkeypatch.setattr(avdata.atomic, "open_new", lambda path, mode="wb": _FullDisk(real(path, mode), 4096)
                            if str(path).endswith(".pt.tmp") else real(path, mode))
    else:
        real_open = builtins.open
        monkeypatch.setattr(builtins, "open", lambda path, mode="r", *a, **k: _FullDisk(
            real_open(path, mode, *a, **k), 0) if str(path).endswith("metrics.jsonl") and "a" in mode else
            real_open(path, mode, *a, **k))
    out = tmp_path / "run"
    cfg = TrainConfig(shards=str(shards), out=str(out), epochs=1, max_steps=1, batch_size=4, workers=0,
                      embed_dim=16, heads=2, time_steps=2, image_size=16, shuffle_buffer=8)
    with pytest.raises(SystemExit) as done:
        errors.run(lambda: train(cfg))  # what scmrl-train's entry point does with an OSError
    assert done.value.code == 2
    text = " ".join(capsys.readouterr().err.split())
    name = "checkpoint.pt" if what == "checkpoint" else "metrics.jsonl"
    assert f"{out / name}: No space left on device; the disk is full" in text, text
    assert "Traceback" not in text and "inline_container" not in text
    assert not (out / "checkpoint.pt.tmp").exists()


# ------------------------------------------------------------------------------------------ prepare


PREPARE_SLOWLY = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from avdata.datasets.registry import register_recipe
register_recipe("toy", "tests.toy_recipe:ToyRecipe")
from tests.toy_recipe import ToyOptions
from avdata.cli.cmd_prepare import PrepareRunOptions, _run
import typer
try:
    _run("toy", ToyOptions(), PrepareRunOptions(raw=Path(sys.argv[2]), out=Path(sys.argv[3]), jobs=2,
                                                samples_per_shard=4))
except typer.Exit as done:  # what the Typer app does with it
    sys.exit(done.exit_code)
"""


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_prepare_workers_exit_when_the_parent_dies(tmp_path, how):
    import signal
    import subprocess
    import time

    from tests.toy_recipe import make_toy_raw

    raw = make_toy_raw(tmp_path / "raw", n_train=8, n_test=2)
    for f in sorted(raw.glob("*.txt")):
        f.write_text("sleep 30")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", PREPARE_SLOWLY, str(repo), str(raw), str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "AVDATA_NO_PROGRESS": "1", "COLUMNS": "200"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = _children(proc.pid)
        assert len(workers) >= 2, proc.stdout.read() if proc.poll() is not None else "no workers started"
        time.sleep(1.0)  # the workers are inside a 30 s clip
        proc.send_signal(getattr(signal, how))
        code = proc.wait(timeout=15)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), f"workers still running after the parent got {how}"
        output = proc.stdout.read()
        if how == "SIGTERM":
            assert code == 143 and "interrupted: finished shards" in output, output
            assert "Traceback" not in output
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------------------ serve


@contextlib.contextmanager
def _serving(folder: Path, **options):
    """`avdata serve`'s server on a free port, running in a thread; its sockets are closed after."""
    import threading

    from avdata.share.serve import make_server

    server = make_server(folder, "127.0.0.1", 0, **options)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    socks: list = []
    try:
        yield server, socks
    finally:
        for s in socks:
            s.close()
        server.shutdown()
        server.server_close()


def _manifest_status(server) -> bytes:
    import socket

    with socket.create_connection(server.server_address[:2], timeout=5) as s:
        s.sendall(b"GET /manifest.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(64)


@pytest.mark.slow
def test_serve_closes_silent_connections(shards):
    import socket
    import time

    with _serving(shards, timeout=0.5) as (server, socks):
        for _ in range(10):  # half-sent requests that never finish
            s = socket.create_connection(server.server_address[:2], timeout=5)
            s.sendall(b"GET /manifest.json HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        time.sleep(1.5)
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                closed += s.recv(1024) == b""  # the server hung up
            except ConnectionResetError:
                closed += 1
            except TimeoutError:  # still held open
                pass
        assert closed == len(socks)
        assert _manifest_status(server).startswith(b"HTTP/1.1 200")  # still serving


def test_serve_caps_connections_at_once(shards):
    """Idle connections beyond --max-connections get 503 with Retry-After (and no thread); a freed slot
    serves again."""
    import socket
    import threading
    import time

    with _serving(shards, timeout=30, max_connections=3) as (server, idle):
        threads_before = threading.active_count()
        for _ in range(3):  # connected, never send anything: each holds a slot
            idle.append(socket.create_connection(server.server_address[:2], timeout=5))
        time.sleep(0.3)
        for _ in range(20):
            reply = _manifest_status(server)
            assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in reply
        assert threading.active_count() <= threads_before + 3  # a thread per held slot, none for the rest
        idle.pop().close()
        time.sleep(0.3)
        assert _manifest_status(server).startswith(b"HTTP/1.1 200")


# ------------------------------------------------------------------------------------------ inspect, verify


@pytest.mark.slow
def test_the_contact_sheet_is_bounded_whatever_the_manifest_claims(shards, tmp_path):

    from PIL import Image

    from avdata.contact_sheet import MAX_SHEET_CLASSES, ROW_H_IN, HEADER_IN, DPI, contact_sheet

    folder = _copy(shards, tmp_path / "many")
    _edit_manifest(folder, lambda m: m.update(classes=m["classes"] + [f"c{i}" for i in range(5002)]))
    png = contact_sheet(folder, tmp_path / "sheet.png", per_class=1)
    with Image.open(png) as im:
        assert im.height <= round((HEADER_IN + MAX_SHEET_CLASSES * ROW_H_IN) * DPI) + 1
    with pytest.raises(AvdataError, match="--show must be 1 to 16"):
        contact_sheet(folder, tmp_path / "x.png", per_class=1000)


def test_verify_warns_about_members_the_features_do_not_list(shards, tmp_path):
    import hashlib
    import io
    import json
    import pickle
    import tarfile

    from avdata.verify import verify_shards

    folder = _copy(shards, tmp_path / "extra")
    shard = folder / "val-000000.tar"
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    key = members[0][0].name.split(".")[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i, (m, data) in enumerate(members):
            tf.addfile(m, io.BytesIO(data))
            if i == 0:  # inside the first sample
                info = tarfile.TarInfo(f"{key}.meta.pyd")
                payload = pickle.dumps({"harmless": 1})
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    shard.write_bytes(buf.getvalue())

    def update(m):
        entry = m["splits"]["val"]["shards"][0]
        entry["bytes"], entry["sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    _edit_manifest(folder, update)
    report = verify_shards(folder)
    assert report.ok, report.problems
    assert [f for f, _ in report.warnings] == ["val-000000.tar"]
    what = report.warnings[0][1]
    assert ".meta.pyd" in what and "WDS_SECURE=1" in what
    assert verify_shards(shards).warnings == []
    json.dumps(report.to_dict())


def test_verify_stops_reading_a_shard_past_its_declared_size(shards):
    from avdata.verify import verify_shards
    from tests.httpserver import endless_body, serve_script

    with serve_script(_folder_server(shards, {"val-000000.tar": endless_body})) as url:
        report = verify_shards(url, splits=["val"])
    expected = (shards / "val-000000.tar").stat().st_size
    assert report.problems[0] == ("val-000000.tar", f"size differs: more than the expected {expected} bytes "
                                                    "(stopped reading there)")
    assert report.bytes_checked <= expected + 1


@pytest.mark.slow
def test_download_has_the_stall_flag_too(tmp_path):

    from typer.testing import CliRunner

    from avdata.cli.avdata_app import app
    from tests.httpserver import serve_script, trickle

    with serve_script(lambda h: trickle(h, length=None, seconds=8)) as url:
        r = CliRunner().invoke(app, ["download", "cremad", "--to", str(tmp_path / "raw"), "--mirror", url,
                                     "--limit", "1", "--retries", "0", "--stall-timeout", "1"])
    assert r.exit_code == 1 and "stalled" in r.output, r.output
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file() and p.suffix == ".flv"]
