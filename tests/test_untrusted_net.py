"""Checkpoints and the network's lesser hostile inputs (issue #23): zip-bomb checkpoints refused before
torch.load, scmrl-convert's message, serve's Range digits, secrets in printed URLs, user:pass@ URLs, and
the overall deadline of a shard read on a drip. Loopback servers only."""

from __future__ import annotations

import http.client
import io
import logging
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avdata.errors import AvdataError
from avdata.cli.convert_app import convert_app
from avdata.share.serve import make_server, parse_range
from scmrl.model.convert import load_reference_state_dict
from scmrl.train.checkpoint import check_archive, load_checkpoint, save_checkpoint

MiB = 1 << 20


# --- checkpoints ---------------------------------------------------------------------------------------------

def _rezip(src: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    """`src` (a torch.save zip) written again with every member deflated, plus `extra` members (named inside
    the checkpoint's one folder)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
        folder = zin.infolist()[0].filename.split("/")[0]
        for name, data in (extra or {}).items():
            zout.writestr(f"{folder}/{name}", data)
    return dest


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A checkpoint whose one 64 MiB tensor of zeros deflates to well under 1 MiB (the issue's 3 GB one,
    scaled down): a valid torch checkpoint, that the old code loaded, taking the full size in memory."""
    root = tmp_path_factory.mktemp("bomb")
    plain = root / "plain.pt"
    torch.save({"head.weight": torch.zeros(16 * MiB, dtype=torch.float32)}, plain)
    path = _rezip(plain, root / "bomb.pt")
    assert path.stat().st_size < MiB
    return path


@pytest.fixture
def no_torch_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a file that should have been refused first")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_deflated_bomb_is_refused_by_every_entry_point_before_torch_load(bomb, no_torch_load, tmp_path):
    with pytest.raises(AvdataError, match=r"bomb\.pt: refused before loading: member plain/data/0 unpacks to "
                                          r"67,108,864 bytes from [\d,]+ \(more than 20x\)"):
        load_checkpoint(bomb)  # scmrl-eval --checkpoint, scmrl-train --resume / --init-from
    with pytest.raises(AvdataError, match="refused before loading"):
        load_reference_state_dict(bomb)  # scmrl-convert
    r = CliRunner().invoke(convert_app, [str(bomb), str(tmp_path / "o.pt"), "--dataset", "cremad"])
    assert r.exit_code == 2 and "refused before loading" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o.pt").exists()


def test_many_small_deflated_members_are_refused_by_their_total(tmp_path, no_torch_load):
    plain = tmp_path / "plain.pt"
    torch.save({f"t{i}": torch.zeros(MiB // 4) for i in range(40)}, plain)  # 40 x 1 MiB, each under the slack
    path = _rezip(plain, tmp_path / "many.pt")
    with pytest.raises(AvdataError, match=r"many\.pt: refused before loading: its members unpack to "
                                          r"41,9\d\d,\d\d\d bytes, more than [\d,]+ \(4x the file's"):
        check_archive(path)


def test_members_a_torch_checkpoint_does_not_hold_are_refused(tmp_path, no_torch_load):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(4)}, plain)
    path = _rezip(plain, tmp_path / "odd.pt", {"payload.bin": b"x" * 10_000})
    with pytest.raises(AvdataError, match=r"odd\.pt: refused before loading: member plain/payload\.bin "
                                          r"\(10,000 bytes\) is not one a torch checkpoint holds"):
        load_checkpoint(path)
    with zipfile.ZipFile(tmp_path / "nopkl.pt", "w") as zf:
        zf.writestr("archive/data/0", b"\0" * 16)
    with pytest.raises(AvdataError, match=r"no archive/data\.pkl"):
        load_reference_state_dict(tmp_path / "nopkl.pt")
    with zipfile.ZipFile(tmp_path / "two.pt", "w") as zf:
        zf.writestr("a/data.pkl", b"")
        zf.writestr("b/data/0", b"")
    with pytest.raises(AvdataError, match=r"not under one folder \(a, b\)"):
        check_archive(tmp_path / "two.pt")


def test_real_checkpoints_pass_the_archive_check(tmp_path):
    """The trainer's own layout (torch.save, stored members), re-zipped with deflate too, still loads."""
    payload = {"model": {"w": torch.randn(300, 300)}, "epoch": 3, "classes": ["a", "b"],
               "history": [{"loss": 0.5}] * 100}
    own = save_checkpoint(tmp_path / "checkpoint.pt", payload)
    assert check_archive(own) is None and load_checkpoint(own)["epoch"] == 3
    deflated = _rezip(own, tmp_path / "deflated.pt")
    assert torch.equal(load_checkpoint(deflated)["model"]["w"], payload["model"]["w"])
    legacy = tmp_path / "legacy.pt"  # the pre-zip format: not a zip, left to torch.load
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert check_archive(legacy) is None and torch.equal(load_reference_state_dict(legacy)["w"], torch.ones(3))


def test_convert_never_suggests_an_unrestricted_load(tmp_path):
    """Whatever is wrong with the file, the advice is never to load it with weights_only=False / pickle."""
    import argparse

    pickled = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1.0)}, pickled)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all\n" * 10)
    outputs = {}
    for path in (pickled, truncated, garbage):
        r = CliRunner().invoke(convert_app, [str(path), str(tmp_path / "o.pt"), "--dataset", "cremad"])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        outputs[path.name] = " ".join(r.output.split())
        for unsafe in ("weights_only=False", "unrestricted", "pickle", "if you trust"):
            assert unsafe not in outputs[path.name].lower(), outputs[path.name]
    assert "refused: it holds Python objects besides tensors" in outputs["model_best.pth.tar"]
    assert "Ask whoever made it for a file of plain tensors" in outputs["model_best.pth.tar"]
    assert "not a readable torch checkpoint" in outputs["truncated.pth"]
    assert "not a readable torch checkpoint" in outputs["garbage.pth"]
    for path in (pickled, garbage):  # scmrl-eval / --resume pass on none of torch's advice either
        with pytest.raises(AvdataError) as err:
            load_checkpoint(path)
        assert "weights_only" not in str(err.value) and "trust the source" not in str(err.value)


# --- serve: the Range header --------------------------------------------------------------------------------

def test_a_range_of_thousands_of_digits_is_answered_not_a_traceback(tmp_path, capfd):
    assert parse_range("bytes=" + "9" * 5000 + "-", 100) == "unsatisfiable"
    assert parse_range("bytes=0-" + "9" * 5000, 100) == (0, 99)
    assert parse_range("bytes=-" + "9" * 5000, 100) == (0, 99)
    assert parse_range("bytes=" + "0" * 5000 + "5-9", 100) == (5, 9)  # leading zeros are still a number
    (tmp_path / "f.bin").write_bytes(bytes(range(100)))
    import threading

    server = make_server(tmp_path, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        answers = []
        for rng in ("bytes=" + "9" * 5000 + "-", "bytes=1-" + "9" * 5000):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
            conn.request("GET", "/f.bin", headers={"Range": rng})
            resp = conn.getresponse()
            answers.append((resp.status, resp.getheader("Content-Range"), len(resp.read())))
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert answers == [(416, "bytes */100", len("range not satisfiable\n")), (206, "bytes 1-99/100", 99)]
    assert "Traceback" not in capfd.readouterr().err  # the server thread's errors go to stderr
