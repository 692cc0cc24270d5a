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
from scmrl.cli.convert_app import convert_app
from avdata.share.serve import make_server, parse_range
from scmrl.train.convert import load_reference_state_dict
from scmrl.train.checkpoint import check_archive, load_checkpoint, save_checkpoint
from tests.finishes import finishes

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


def test_the_check_reads_only_the_zip_directory(bomb):
    """The refusal of the 64 MiB bomb costs kilobytes of memory, not the member's size."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(AvdataError, match="refused before loading"):
            check_archive(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, peak


def test_a_directory_of_too_many_members_is_refused_from_its_end_record(tmp_path, monkeypatch):
    from scmrl.train import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_MEMBERS", 10)
    with zipfile.ZipFile(tmp_path / "wide.pt", "w") as zf:
        zf.writestr("archive/data.pkl", b"")
        for i in range(10):
            zf.writestr(f"archive/data/{i}", b"")
    with pytest.raises(AvdataError, match=r"wide\.pt: refused before loading: its zip directory lists 11 members, "
                                          r"more than the 10"):
        check_archive(tmp_path / "wide.pt")


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



@pytest.fixture(scope="module")
def eval_case(tmp_path_factory) -> tuple[Path, dict]:
    """An events shards folder and the payload of a small model's checkpoint for it (as scmrl-train writes)."""
    from dataclasses import asdict

    from scmrl.model.config import ModelConfig
    from scmrl.model.models import build_model
    from tests.test_inspect_verify import EVENT_CLASSES, make_event_folder

    root = tmp_path_factory.mktemp("eval")
    mcfg = ModelConfig(num_classes=4, embedding="shallow", embed_dim=16, heads=2, audio_size=28, visual_size=28,
                       visual_channels=2)
    torch.manual_seed(0)
    payload = {"model": build_model(mcfg).state_dict(), "model_config": asdict(mcfg), "classes": EVENT_CLASSES,
               "train_config": {"image_size": 28, "frames_per_step": False, "seed": 1, "amp": False}}
    return make_event_folder(root / "events"), payload


@pytest.mark.parametrize("change, message", [
    # before: a RuntimeError listing every tensor (a checkpoint of another version of the network)
    (lambda p: {"model_config": {**p["model_config"], "embed_dim": 32}},
     r"its weights do not fit the network its model_config describes \(other shapes: "
     r"audio_embed.stages.0.conv.weight \(8, 1, 3, 3\) where the network has \(16, 1, 3, 3\)"),
    # before: torch tried to allocate 19 TB (a smaller ask is allocated and initialised, then fails)
    (lambda p: {"model_config": {**p["model_config"], "embed_dim": 1 << 20}}, r"where the network has \(524288, 1, 3"),
    (lambda p: {"model_config": {**p["model_config"], "heads": 0}},  # before: ZeroDivisionError
     r"its model_config has heads=0, not a whole number >= 1"),
    (lambda p: {"model_config": [1]}, r"its model_config is a list, not a dict"),  # AttributeError
    (lambda p: {"model": {}}, r"\(missing: audio_embed.stages.0.conv.weight, .*, \.\.\. \(\d+\)\)"),
    (lambda p: {"train_config": {"seed": 1}}, r"its train_config has image_size=None"),  # KeyError
    (lambda p: {"train_config": {**p["train_config"], "seed": 10 ** 30}}, r"seed=10+, not a 64-bit"),  # ValueError
    (lambda p: {"classes": "zero"}, r"its classes are not a list of names"),
    # every input resized to a side of a million before
    (lambda p: {"train_config": {**p["train_config"], "image_size": 10 ** 6}}, r"image_size=1000000, not a whole "
     r"number from 16 to 1024"),
], ids=["another-network", "huge-embedding", "zero-heads", "config-list", "no-weights", "no-image-size",
        "huge-seed", "classes-str", "huge-image-size"])
def test_scmrl_eval_names_a_checkpoint_it_cannot_use(eval_case, tmp_path, change, message):
    """Each stopped scmrl-eval with a traceback (or an allocation of the config's size) before."""
    from scmrl.train.evaluate import evaluate_checkpoint

    shards, payload = eval_case
    path = save_checkpoint(tmp_path / "best.pt", {**payload, **change(payload)})
    with pytest.raises(AvdataError, match=rf"best\.pt: .*{message}"):
        evaluate_checkpoint(str(path), str(shards), device="cpu", batch_size=4)


def test_a_tensor_claiming_more_than_its_storage_is_refused_by_every_loader(eval_case, tmp_path):
    """torch.save keeps a tensor's shape and strides beside its storage: a zero-stride tensor of 10**12
    elements is 1.5 KB on disk. With a model_config whose network has that shape, scmrl-eval's
    load_state_dict (and scmrl-convert's clone) would have allocated it whole."""
    from scmrl.train.evaluate import evaluate_checkpoint

    shards, payload = eval_case
    state = dict(payload["model"])
    state["head.weight"] = torch.zeros(1).expand(1 << 20, 1 << 20)
    path = save_checkpoint(tmp_path / "best.pt", {**payload, "model": state})
    assert path.stat().st_size < 1 << 20
    why = (r"refused: it holds a tensor of shape \(1048576, 1048576\) \(1,099,511,627,776 elements\) over a "
           r"storage of 4 bytes; torch.save writes each tensor with its elements")
    with pytest.raises(AvdataError, match=rf"best\.pt: {why}"):
        evaluate_checkpoint(str(path), str(shards), device="cpu", batch_size=4)
    torch.save({"audio_patch_embed.rpe_conv.weight": torch.zeros(1).expand(1 << 16, 1 << 16, 3, 3)},
               tmp_path / "ref.pth")
    with pytest.raises(AvdataError, match=r"ref\.pth: refused: it holds a tensor of shape \(65536, 65536, 3, 3\)"):
        load_reference_state_dict(tmp_path / "ref.pth")  # scmrl-convert


def test_init_from_names_weights_that_do_not_fit(eval_case, tmp_path):
    """--init-from a checkpoint whose config matches but whose weights do not (damaged, or another version)."""
    from scmrl.model.config import ModelConfig
    from scmrl.model.models import build_model
    from scmrl.train.start import init_weights

    _shards, payload = eval_case
    mcfg = ModelConfig(**payload["model_config"])
    state = dict(payload["model"])
    state["head.weight"] = torch.zeros(3, 3)  # the classifier's weight of another shape, and one name unknown
    state["head.scale"] = torch.ones(1)
    path = save_checkpoint(tmp_path / "c.pt", {**payload, "model": state})
    model = build_model(mcfg)
    with pytest.raises(AvdataError, match=r"c\.pt: its weights do not fit the network \(not in the network: "
                                          r"head\.scale \(1\); other shapes: head\.weight \(3, 3\) where the "
                                          r"network has \(4, 16\) \(1\)\); it was made by another version"):
        init_weights(model, mcfg, str(path))
    path = save_checkpoint(tmp_path / "ok.pt", payload)
    init_weights(model, mcfg, str(path))
    assert all(torch.equal(v, payload["model"][k]) for k, v in model.state_dict().items())


def test_resume_names_a_weights_only_checkpoint(eval_case, tmp_path):
    """best.pt copied to checkpoint.pt (or an scmrl-convert output) to continue a run: a KeyError
    'optimizer' in the training loop before."""
    from avdata.shards.location import open_shards
    from scmrl.model.config import ModelConfig
    from scmrl.train.config import TrainConfig
    from scmrl.train.distributed import DistContext
    from scmrl.train.start import read_resume_checkpoint

    shards, payload = eval_case
    out = tmp_path / "run"
    save_checkpoint(out / "checkpoint.pt", payload)
    cfg = TrainConfig(shards=str(shards), out=str(out), resume=True)
    with pytest.raises(AvdataError, match=r"checkpoint.pt: cannot be resumed from: it holds no optimizer, schedule, "
                                          r"state, rng \(a best.pt .*--init-from in a new --out instead"):
        read_resume_checkpoint(cfg, ModelConfig(**payload["model_config"]), open_shards(str(shards)), DistContext())


def test_the_file_checked_is_the_file_loaded(tmp_path, monkeypatch):
    """The zip directory was checked on one open and torch.load opened the path again: a file replaced in
    between (a run still writing, or someone racing the check) was loaded unchecked. One open serves both."""
    from scmrl.train import checkpoint

    own = tmp_path / "own.pt"
    save_checkpoint(own, {"epoch": 3})
    opened, loaded = [], []
    real_open, real_load = checkpoint.open_regular, torch.load

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path))
        return real_open(path, *args, **kwargs)

    def recording_load(f, *args, **kwargs):
        loaded.append(f)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open_regular", counting_open)
    monkeypatch.setattr(torch, "load", recording_load)
    assert load_checkpoint(own)["epoch"] == 3
    assert opened == [own] and len(loaded) == 1 and hasattr(loaded[0], "read")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this OS")
def test_a_fifo_as_a_checkpoint_is_refused_at_once(tmp_path):
    """scmrl-eval --checkpoint, --resume, --init-from and scmrl-convert open the file in check_archive first:
    a FIFO there blocked that open for good."""
    import os

    fifo = tmp_path / "best.pt"
    os.mkfifo(fifo)
    err = finishes(lambda: load_checkpoint(fifo))
    assert isinstance(err, AvdataError)
    assert str(err) == f"{fifo}: is a FIFO (named pipe), not a checkpoint file"

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


# --- secrets in URLs, and user:pass@ URLs -------------------------------------------------------------------

def test_redact_hides_passwords_and_secret_query_values():
    from avdata.fetch.urls import redact

    assert redact("https://bob:hunter2@host:8443/d/f.tar?token=abc123&part=2#x") == \
        "https://***@host:8443/d/f.tar?token=***&part=2#x"
    presigned = ("https://b.s3.amazonaws.com/k.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026"
                 "&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok&sig=s1&api_key=k1&access_token=t1&v=3")
    shown = redact(presigned)
    for secret in ("AKIA", "deadbeef", "=tok", "s1", "k1", "t1"):
        assert secret not in shown, shown
    assert shown.endswith("&v=3") and "X-Amz-Signature=***" in shown
    assert redact("http://host/a.tar") == "http://host/a.tar" and redact("/data/a.tar") == "/data/a.tar"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A CREMA-D-shaped raw tree of two small files and its pinned list."""
    from avdata.hashing import sha256_file

    root = tmp_path_factory.mktemp("mirror")
    rels = ["AudioWAV/1001_DFA_ANG_XX.wav", "VideoFlash/1001_DFA_ANG_XX.flv"]
    for i, rel in enumerate(rels):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(bytes([i]) * (20_000 + i))
    tsv = root.parent / "files.tsv"
    tsv.write_text("path\tsize\tsha256\n" + "".join(f"{r}\t{(root / r).stat().st_size}\t{sha256_file(root / r)}\n"
                                                    for r in rels))
    return root, tsv


def _download(url: str, to: Path, tsv: Path):
    from avdata.cli.avdata_app import app

    return CliRunner().invoke(app, ["download", "cremad", "--to", str(to), "--mirror", url, "--sources", str(tsv),
                                    "--retries", "0", "--backoff", "0", "-v"])


def test_download_verbose_never_prints_a_token_and_keeps_it_on_every_request(mirror, tmp_path, caplog):
    from tests.httpserver import serve_dir

    root, tsv = mirror
    with serve_dir(root, status_for={"VideoFlash/1001_DFA_ANG_XX.flv": 403}) as url:
        with caplog.at_level(logging.DEBUG):
            r = _download(url + "/?token=SECRET-T0KEN&region=eu", tmp_path / "raw", tsv)
    shown = r.output + caplog.text
    assert "SECRET-T0KEN" not in shown and "token=***" in shown, shown
    assert "access denied (HTTP 403)" in " ".join(r.output.split())
    paths = sorted(q["path"] for q in url.requests)
    assert paths == ["/AudioWAV/1001_DFA_ANG_XX.wav?token=SECRET-T0KEN&region=eu",
                     "/VideoFlash/1001_DFA_ANG_XX.flv?token=SECRET-T0KEN&region=eu"]
    assert (tmp_path / "raw" / "AudioWAV" / "1001_DFA_ANG_XX.wav").stat().st_size == 20_000


def test_a_user_and_password_in_the_url_are_sent_as_basic_auth_and_never_shown(mirror, tmp_path, caplog):
    import base64

    from tests.httpserver import serve_dir

    root, tsv = mirror
    with serve_dir(root, status_for={"VideoFlash/1001_DFA_ANG_XX.flv": 500}) as url:
        with caplog.at_level(logging.DEBUG):
            r = _download(url.replace("http://", "http://bob:p%40ss-W0RD@"), tmp_path / "raw", tsv)
    shown = r.output + caplog.text
    assert "W0RD" not in shown and "http://***@127.0.0.1" in shown, shown
    assert "Name or service not known" not in shown and "no such host" not in shown
    expected = "Basic " + base64.b64encode(b"bob:p@ss-W0RD").decode()
    assert [q["headers"].get("Authorization") for q in url.requests] == [expected, expected]
    assert (tmp_path / "raw" / "AudioWAV" / "1001_DFA_ANG_XX.wav").stat().st_size == 20_000
    assert "HTTP 500" in " ".join(r.output.split())


def test_basic_auth_is_not_forwarded_on_a_redirect_to_another_host(mirror, tmp_path):
    from avdata.fetch.download import fetch_url
    from tests.httpserver import serve_dir

    root, _ = mirror
    with serve_dir(root) as storage, serve_dir(root, redirect_to=storage) as front:
        fetch_url(front.replace("http://", "http://bob:pw@") + "/AudioWAV/1001_DFA_ANG_XX.wav",
                  tmp_path / "a.wav", progress=False)
    assert front.requests[0]["headers"].get("Authorization", "").startswith("Basic ")
    assert [q["headers"].get("Authorization") for q in storage.requests] == [None]
    assert (tmp_path / "a.wav").stat().st_size == 20_000


# --- the overall deadline of a streamed shard read ----------------------------------------------------------

class _Drip(io.BytesIO):
    """A response that gives `per_read` bytes per read, each read taking `seconds` on the fake clock."""

    def __init__(self, data: bytes, per_read: int, seconds: float, clock: list[float]) -> None:
        super().__init__(data)
        self.per_read, self.seconds, self.clock = per_read, seconds, clock
        self.reads = 0

    def read1(self, n: int = -1) -> bytes:
        self.reads += 1
        self.clock[0] += self.seconds
        return super().read1(min(n, self.per_read))


def test_a_drip_just_above_the_stall_rule_meets_the_overall_deadline():
    """16 KiB + 1 every 60 s passes every stall window forever; the average-rate deadline ends it (counted on
    an injected clock: no waiting)."""
    from avdata.fetch.transport import READ_GRACE_SECONDS, READ_MIN_RATE, StallGuard

    now = [0.0]
    drip = _Drip(b"\0" * (64 << 20), per_read=(16 << 10) + 1, seconds=60.0, clock=now)
    guard = StallGuard(drip, what="http://bob:pw@host/train-000003.tar?token=SECRET", clock=lambda: now[0])
    with pytest.raises(TimeoutError) as err:
        while guard.read(1 << 20):
            pass
    message = str(err.value)
    assert message.startswith("http://***@host/train-000003.tar?token=***: too slow: ")
    assert f"a read may take {READ_GRACE_SECONDS:g}s plus 1s per {READ_MIN_RATE:,} bytes" in message
    assert drip.reads == 6  # the first read past the 300 s grace: 6 x 60 s
    fast = StallGuard(_Drip(b"\0" * (4 << 20), per_read=1 << 20, seconds=1.0, clock=now), clock=lambda: now[0])
    assert len(fast.read(-1)) == 4 << 20  # 1 MiB/s: far above the floor, never stopped


def test_the_trainer_gives_up_on_a_dripping_shard_naming_it(tmp_path, monkeypatch):
    """End to end through the trainer's shard stream, with the deadline made small (0.3 s, 2 KB/s) and a
    loopback server sending a byte every 10 ms (the stall rule, 16 KiB a minute, never fires)."""
    import urllib.parse

    from avdata.fetch import transport
    from avdata.shards.location import open_shards
    from scmrl.data.config import StreamConfig
    from scmrl.data.failures import ShardReadError
    from scmrl.data.stream import ShardStream
    from scmrl.data.synthetic import make_synthetic_av_shards
    from tests.httpserver import serve_script, trickle

    shards = make_synthetic_av_shards(tmp_path / "s", 8, 0, 0, per_shard=8, seed=1)
    size = (shards / "train-000000.tar").stat().st_size

    def respond(h):
        name = urllib.parse.unquote(h.path.split("?")[0]).lstrip("/")
        if name == "train-000000.tar":
            return trickle(h, length=size, every=0.01, seconds=10)
        data = (shards / name).read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    monkeypatch.setattr(transport, "READ_GRACE_SECONDS", 0.3)
    monkeypatch.setattr(transport, "READ_MIN_RATE", 2000)
    with serve_script(respond) as url:
        src = open_shards(url)
        stream = ShardStream(src, "train", StreamConfig(kind="static", image_size=16, retries=1, backoff=0.01))
        with pytest.raises(ShardReadError, match=r"train-000000\.tar could not be read after 2 attempts "
                                                 r"\(TimeoutError: .*too slow: \d+ bytes in 0\.\ds of waiting"):
            list(stream.iter_slot())


def test_a_shards_url_with_a_password_opens_with_basic_auth_and_shows_none(tmp_path):
    from avdata.shards.location import open_shards
    from scmrl.data.synthetic import make_synthetic_av_shards
    from tests.httpserver import serve_dir

    shards = make_synthetic_av_shards(tmp_path / "s", 8, 0, 0, per_shard=8, seed=1)
    with serve_dir(shards) as url:
        src = open_shards(url.replace("http://", "http://bob:S3CRET@"))
        with src.open("train-000000.tar") as f:
            assert len(f.read()) == (shards / "train-000000.tar").stat().st_size
        with pytest.raises(AvdataError) as err:
            src.shards("nosuch")
    assert str(err.value).startswith("http://***@127.0.0.1:") and "S3CRET" not in str(err.value)
    assert {q["headers"].get("Authorization") for q in url.requests} == {"Basic Ym9iOlMzQ1JFVA=="}


def test_a_shards_url_with_a_token_query_reads_and_shows_no_token(tmp_path):
    """inspect / the trainer: the query goes on every file's address (manifest and shards); what is shown
    (the summary's location, messages) carries *** instead."""
    from avdata.shards.location import open_shards
    from avdata.summary import summarize
    from scmrl.data.synthetic import make_synthetic_av_shards
    from tests.httpserver import serve_dir

    shards = make_synthetic_av_shards(tmp_path / "s", 8, 0, 0, per_shard=8, seed=1)
    with serve_dir(shards) as url:
        spec = url + "/manifest.json?token=SECRETQ&v=1"
        src = open_shards(spec)
        with src.open("train-000000.tar") as f:
            assert len(f.read()) == (shards / "train-000000.tar").stat().st_size
        shown = summarize(spec)["location"]
    assert shown == url + "?token=***&v=1"
    assert [q["path"] for q in url.requests][:2] == ["/manifest.json?token=SECRETQ&v=1",
                                                    "/train-000000.tar?token=SECRETQ&v=1"]
