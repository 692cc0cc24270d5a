"""avdata.fetch.download (fetch_files / fetch_url), avdata.datasets.download_plan and `avdata download`, against a
loopback server that can drop connections, corrupt bytes, fail, and serve Git LFS pointers."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from avdata.datasets import download_plan as dr
from avdata.datasets.cremad.sources import select_cremad
from avdata.datasets.mnistdvs_ntidigits import sources as events_sources
from avdata.datasets.urbansound8k_av import sources as us8k_sources
from avdata.fetch import transfer
from avdata.fetch.download import DiskFullError, DownloadError, RemoteFile, fetch_files, fetch_url
from avdata.fetch.session import LFS_ABORT_AFTER
from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.datasets.cremad.sources import pinned_files
from avdata.fetch.sources import SourceFile, load_source_list
from avdata.cli.avdata_app import app
from tests.httpserver import serve_dir

FAST = dict(backoff=0.01, progress=False)
runner = CliRunner()


def _write_tsv(path: Path, root: Path, rels: list[str]) -> Path:
    lines = ["path\tsize\tsha256"]
    for rel in rels:
        f = root / rel
        lines.append(f"{rel}\t{f.stat().st_size}\t{sha256_file(f)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, list[SourceFile], Path]:
    """A small raw tree in CREMA-D layout: two real WAVs and random 'FLV' bytes, with a TSV list."""
    root = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(0)
    rels = []
    for i, clip in enumerate(["1001_DFA_ANG_XX", "1001_DFA_DIS_XX"]):
        wav = root / "AudioWAV" / f"{clip}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(16000 * 2) / 16000
        sf.write(wav, (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), 16000, subtype="PCM_16")
        flv = root / "VideoFlash" / f"{clip}.flv"
        flv.parent.mkdir(parents=True, exist_ok=True)
        flv.write_bytes(rng.integers(0, 256, 300_000 + 50_000 * i, dtype=np.uint8).tobytes())
        rels += [f"AudioWAV/{clip}.wav", f"VideoFlash/{clip}.flv"]
    tsv = _write_tsv(root.parent / f"{root.name}.tsv", root, rels)
    return root, load_source_list(tsv), tsv


def _assert_identical(src: Path, dest: Path, files: list[SourceFile]) -> None:
    for f in files:
        assert (dest / f.path).read_bytes() == (src / f.path).read_bytes()
        assert sha256_file(dest / f.path) == f.sha256
    assert not list(dest.rglob("*.part"))


def test_full_download_then_rerun_skips(served, tmp_path):
    src, files, _ = served
    with serve_dir(src) as url:
        rep = fetch_files(url, files, tmp_path, jobs=4, **FAST)
        assert rep.ok and len(rep.fetched) == 4 and rep.bytes_fetched == sum(f.size for f in files)
        assert {r.sha256 for r in rep.fetched} == {f.sha256 for f in files}
        _assert_identical(src, tmp_path, files)
        n_requests = len(url.requests)
        again = fetch_files(url, files, tmp_path, **FAST)
        assert len(again.already_present) == 4 and not again.fetched and not again.failed
        assert len(url.requests) == n_requests  # nothing was requested again
        quick = fetch_files(url, files, tmp_path, verify_existing="size", **FAST)
        assert len(quick.already_present) == 4


def test_bad_existing_file_is_replaced(served, tmp_path):
    src, files, _ = served
    f = files[1]
    (tmp_path / f.path).parent.mkdir(parents=True)
    data = bytearray((src / f.path).read_bytes())
    data[100] ^= 1
    (tmp_path / f.path).write_bytes(bytes(data))  # right size, wrong content
    with serve_dir(src) as url:
        rep = fetch_files(url, [f], tmp_path, **FAST)
    assert [r.path for r in rep.fetched] == [f.path]
    assert sha256_file(tmp_path / f.path) == f.sha256


def test_resume_after_dropped_connections(served, tmp_path):
    src, files, _ = served
    with serve_dir(src, drop_after=40_000, drop_times=3) as url:
        rep = fetch_files(url, files, tmp_path, retries=1, **FAST)
        assert rep.ok, rep.failed
        flv = files[1].path
        ranges = [r["headers"].get("Range") for r in url.requests_for(flv)]
        assert ranges == [None, "bytes=40000-", "bytes=80000-", "bytes=120000-"]
        assert [r["status"] for r in url.requests_for(flv)] == [200, 206, 206, 206]
    _assert_identical(src, tmp_path, files)


def test_resume_from_part_left_by_earlier_run(served, tmp_path):
    src, files, _ = served
    f = files[3]
    part = tmp_path / (f.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((src / f.path).read_bytes()[:123_456])
    with serve_dir(src) as url:
        rep = fetch_files(url, [f], tmp_path, **FAST)
        assert [r["headers"].get("Range") for r in url.requests] == ["bytes=123456-"]
    assert rep.ok and sha256_file(tmp_path / f.path) == f.sha256 and not part.exists()


def test_a_file_nothing_pins_resumes_only_the_version_its_part_began_with(tmp_path):
    """AVE.zip and the MNIST-DVS and UrbanSound8K zips have no pinned size or sha256. A zip replaced on the
    server between two runs had its new tail appended to the old .part and kept under its final name: a
    mixed file nothing could catch. The .part now records the server's ETag and resumes with If-Range, so
    a changed file comes back whole; with no validator to go by, the .part starts over."""
    import urllib.request

    from avdata.fetch.resume_record import record_path, remember

    src = tmp_path / "src"
    src.mkdir()
    old, new = np.random.default_rng(1).bytes(200_000), np.random.default_rng(2).bytes(200_000)
    (src / "AVE.zip").write_bytes(old)
    dest = tmp_path / "dest"
    dest.mkdir()
    spec = RemoteFile("AVE.zip")  # nothing pinned: its size and checksum are not published
    part = dest / "AVE.zip.part"
    with serve_dir(src) as url, urllib.request.urlopen(f"{url}/AVE.zip") as resp:  # a run stopped at 80,000
        part.write_bytes(resp.read(80_000))
        remember(part, resp.headers)
    assert part.read_bytes() == old[:80_000] and record_path(part).is_file()

    (src / "AVE.zip").write_bytes(new)  # the server's copy changes, at the same size
    with serve_dir(src) as url:
        rep = fetch_files(url, [spec], dest, **FAST)
        (request,) = url.requests
    assert request["headers"].get("Range") == "bytes=80000-" and request["headers"].get("If-Range")
    assert request["status"] == 200  # another version: the whole new file, not its tail
    assert rep.ok and (dest / "AVE.zip").read_bytes() == new
    assert not part.exists() and not record_path(part).exists()

    (dest / "AVE.zip").unlink()  # unchanged: resumed where it stopped
    with serve_dir(src, drop_after=50_000, drop_times=1) as url:
        rep = fetch_files(url, [spec], dest, **FAST)
        assert [r["status"] for r in url.requests] == [200, 206]
    assert rep.ok and (dest / "AVE.zip").read_bytes() == new

    part.write_bytes(new[:60_000])  # a .part whose version is not known (no record): begun again
    (dest / "AVE.zip").unlink()
    with serve_dir(src, validators=False) as url:
        rep = fetch_files(url, [spec], dest, **FAST)
        assert [r["headers"].get("Range") for r in url.requests] == [None]
    assert rep.ok and (dest / "AVE.zip").read_bytes() == new and not record_path(part).exists()


def test_server_ignoring_range_restarts(served, tmp_path):
    src, files, _ = served
    f = files[1]
    part = tmp_path / (f.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((src / f.path).read_bytes()[:50_000])
    with serve_dir(src, ignore_range=True) as url:
        rep = fetch_files(url, [f], tmp_path, **FAST)
        assert url.requests[0]["headers"].get("Range") == "bytes=50000-" and url.requests[0]["status"] == 200
    assert rep.ok and sha256_file(tmp_path / f.path) == f.sha256


def test_416_restarts_from_zero(served, tmp_path):
    src, files, _ = served
    f = files[0]
    part = tmp_path / (f.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (f.size + 10))  # longer than the file; its size is not given to fetch_files
    with serve_dir(src) as url:
        rep = fetch_files(url, [RemoteFile(f.path, sha256=f.sha256)], tmp_path, **FAST)
        assert [r["status"] for r in url.requests] == [416, 200]
    assert rep.ok and sha256_file(tmp_path / f.path) == f.sha256


def test_corrupt_once_is_retried(served, tmp_path):
    src, files, _ = served
    with serve_dir(src, corrupt_byte_at=1000, corrupt_times=1) as url:
        rep = fetch_files(url, files[:2], tmp_path, **FAST)
    assert rep.ok and all(r.attempts == 2 for r in rep.fetched)
    _assert_identical(src, tmp_path, files[:2])


def test_always_corrupt_is_reported_and_never_kept(served, tmp_path):
    src, files, _ = served
    f = files[1]
    bad = bytearray((src / f.path).read_bytes())
    bad[777] ^= 0xFF
    with serve_dir(src, corrupt_byte_at=777) as url:
        rep = fetch_files(url, [f], tmp_path, retries=4, **FAST)
        assert len(url.requests) == 2  # the same wrong bytes twice: not retried further
    assert not rep.ok and len(rep.failed) == 1
    r = rep.failed[0]
    assert r.kind == "checksum" and r.expected_sha256 == f.sha256
    assert r.actual_sha256 == hashlib.sha256(bad).hexdigest()
    assert f.sha256 in r.reason and r.actual_sha256 in r.reason and "twice the same bytes" in r.reason
    assert not (tmp_path / f.path).exists() and not (tmp_path / (f.path + ".part")).exists()


def test_cli_exit_code_on_bad_file(served, tmp_path):
    src, files, tsv = served
    with serve_dir(src, corrupt_byte_at=10) as url:
        res = runner.invoke(app, ["download", "cremad", "--to", str(tmp_path), "--mirror", url, "--sources",
                                  str(tsv), "--retries", "1", "--backoff", "0.01"])
    assert res.exit_code == 1, res.output
    assert "sha256 mismatch" in res.output and "failed" in res.output
    assert not any((tmp_path / f.path).exists() for f in files)


def test_cli_download_ok_and_selection(served, tmp_path):
    src, files, tsv = served
    with serve_dir(src) as url:
        res = runner.invoke(app, ["download", "cremad", "--to", str(tmp_path), "--mirror", url, "--sources",
                                  str(tsv), "--limit", "1"])
        assert res.exit_code == 0, res.output
        got = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
        assert got == ["AudioWAV/1001_DFA_ANG_XX.wav", "VideoFlash/1001_DFA_ANG_XX.flv"]
        res = runner.invoke(app, ["download", "cremad", "--to", str(tmp_path), "--mirror", url, "--sources",
                                  str(tsv)])
        assert res.exit_code == 0, res.output
        assert "already there" in res.output
    _assert_identical(src, tmp_path, files)


def test_two_downloads_into_one_folder_do_not_run_at_once(served, tmp_path):
    """Two downloads into one --to (a command started twice, or every node of a job downloading into shared
    storage) appended to the same .part files and renamed each other's: one holds the folder's lock at a time.
    A run leaves no state folder behind."""
    import os

    from avdata.folder_lock import output_lock

    src, files, tsv = served
    to = tmp_path / "raw"
    args = ["download", "cremad", "--to", str(to), "--sources", str(tsv)]
    with serve_dir(src) as url:
        with output_lock(to, None, command="avdata download") as held:
            res = runner.invoke(app, [*args, "--mirror", url])
            assert res.exit_code == 2 and not url.requests, res.output
            said = " ".join(res.output.split())
            assert f"another `avdata download` (pid {os.getpid()}" in said and f"holds the lock {held}" in said
        assert not [p for p in to.rglob("*") if p.is_file()]
        res = runner.invoke(app, [*args, "--mirror", url])
        assert res.exit_code == 0, res.output
        assert list((to / ".avdata").iterdir()) == []  # the lock went with the run
        fresh = tmp_path / "fresh"
        res = runner.invoke(app, ["download", "cremad", "--to", str(fresh), "--sources", str(tsv), "--mirror", url])
        assert res.exit_code == 0 and not (fresh / ".avdata").exists(), res.output
    _assert_identical(src, to, files)


def test_server_errors_are_retried_404_is_not(served, tmp_path):
    src, files, _ = served
    with serve_dir(src, fail_first=2) as url:
        rep = fetch_files(url, files[:1], tmp_path, retries=2, **FAST)
        assert rep.ok and [r["status"] for r in url.requests] == [500, 500, 200]
    with serve_dir(src) as url:
        rep = fetch_files(url, [SourceFile("AudioWAV/nope.wav", 10, "0" * 64)], tmp_path / "b", **FAST)
        assert len(url.requests) == 1
    assert rep.failed[0].kind == "http" and rep.failed[0].http_status == 404 and "404" in rep.failed[0].reason


def test_unreachable_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: connection refused
    rep = fetch_files(f"http://127.0.0.1:{port}", [SourceFile("a.bin", 3, "0" * 64)], tmp_path, retries=1, **FAST)
    assert rep.failed[0].kind == "network" and "could not connect" in rep.failed[0].reason


def test_lfs_pointer_served_is_reported(served, tmp_path):
    src, files, _ = served
    with serve_dir(src, lfs_pointer=True) as url:
        rep = fetch_files(url, files, tmp_path, **FAST)
        assert len(url.requests) == len(files)  # not retried: the mirror will keep serving pointers
    assert len(rep.failed) == len(files) and {r.kind for r in rep.failed} == {"lfs-pointer"}
    assert "LFS pointer" in rep.failed[0].reason and "media" in rep.failed[0].reason
    assert any("media.githubusercontent.com" in n for n in rep.notes)
    assert not any(tmp_path.rglob("*.wav")) and not any(tmp_path.rglob("*.part"))


def test_whole_mirror_of_lfs_pointers_stops_early(tmp_path):
    src = tmp_path / "src"
    (src / "AudioWAV").mkdir(parents=True)
    files = []
    for i in range(20):
        f = src / "AudioWAV" / f"10{i:02d}_DFA_ANG_XX.wav"
        f.write_bytes(os.urandom(3000))
        files.append(SourceFile(f.relative_to(src).as_posix(), 3000, sha256_file(f)))
    with serve_dir(src, lfs_pointer=True) as url:
        rep = fetch_files(url, files, tmp_path / "out", jobs=1, **FAST)
        assert len(url.requests) == LFS_ABORT_AFTER
    kinds = [r.kind for r in rep.failed]
    assert kinds.count("lfs-pointer") == LFS_ABORT_AFTER and kinds.count("stopped") == 20 - LFS_ABORT_AFTER
    assert "LFS pointer" in next(r.reason for r in rep.failed if r.kind == "stopped")


def test_local_folder_as_source(served, tmp_path):
    src, files, _ = served
    rep = fetch_files(str(src), files, tmp_path, **FAST)
    assert rep.ok
    _assert_identical(src, tmp_path, files)


def test_disk_full_stops_with_clear_message(served, tmp_path, monkeypatch):
    src, files, _ = served

    class Full:
        def __init__(self, *a):
            pass

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(transfer, "open_part", lambda path, mode: Full())
    with serve_dir(src) as url, pytest.raises(DiskFullError) as info:
        fetch_files(url, files, tmp_path, jobs=1, **FAST)
    msg = str(info.value)
    assert "disk full" in msg and str(tmp_path / files[0].path) in msg and "resumes" in msg


def test_fetch_url_md5(served, tmp_path):
    src, files, _ = served
    f = files[0]
    md5 = hashlib.md5((src / f.path).read_bytes()).hexdigest()
    with serve_dir(src) as url:
        res = fetch_url(f"{url}/{f.path}", tmp_path / "a.wav", md5=md5, **FAST)
        assert res.status == "fetched" and res.sha256 == f.sha256
        assert fetch_url(f"{url}/{f.path}", tmp_path / "a.wav", md5=md5, **FAST).status == "present"
        with pytest.raises(DownloadError, match="md5 mismatch"):
            fetch_url(f"{url}/{f.path}", tmp_path / "b.wav", md5="0" * 32, retries=1, **FAST)
    assert not (tmp_path / "b.wav").exists() and not (tmp_path / "b.wav.part").exists()
    assert sf.info(str(tmp_path / "a.wav")).samplerate == 16000


# ------------------------------------------------------------------------------ dataset download specs


@pytest.mark.slow
def test_cremad_selection_on_pinned_list():
    pinned = pinned_files()
    clips = {Path(f.path).stem for f in pinned}
    assert len(clips) == 7442
    default = select_cremad(pinned)
    assert len(default) == 2 * 7442
    assert {f.path.split("/")[0] for f in default} == {"AudioWAV", "VideoFlash"}
    n1001 = sum(1 for f in pinned if f.path.split("/")[0] in ("AudioWAV", "VideoFlash")
                and Path(f.path).stem.startswith("1001_"))
    sel = select_cremad(pinned, actors="1001")
    assert len(sel) == n1001 == 82 * 2
    assert len(select_cremad(pinned, actors="1001,1002")) == n1001 + sum(
        1 for f in pinned if f.path.startswith(("AudioWAV/1002_", "VideoFlash/1002_")))
    first5 = sorted(clips)[:5]
    lim = select_cremad(pinned, limit=5)
    assert [Path(f.path).stem for f in lim] == [c for c in first5 for _ in range(2)]
    mp3 = select_cremad(pinned, include=["mp3"], limit=3, actors=["1002"])
    assert len(mp3) == 9 and {Path(f.path).stem.split("_")[0] for f in mp3} == {"1002"}
    with pytest.raises(AvdataError, match="9999"):
        select_cremad(pinned, actors="9999")
    with pytest.raises(AvdataError, match="modality"):
        select_cremad(pinned, include=["gif"])


def _make_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_mnistdvs_from_mirror_records_sha256sums(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for d in range(10):
        member = f"grabbed_data{d}/scale4/mnist_{d}_scale04_0001.aedat"
        _make_zip(mirror / f"grabbed_data{d}.zip", {member: bytes([d]) * 100})
    (mirror / "grabbed_data3.zip").write_bytes(b"<html>not found</html>")  # a bad mirror file
    out = tmp_path / "raw"
    with serve_dir(mirror) as url:
        rep = dr.download_dataset("mnistdvs", out, mirror=url, backoff=0.01, retries=1, progress=False)
    assert [r.path for r in rep.failed] == ["grabbed_data3.zip"] and rep.failed[0].kind == "html"
    assert "HTML page" in rep.failed[0].reason and not (out / "grabbed_data3.zip").exists()
    sums = dr.read_sha256sums(out)
    assert len(sums) == 9 and sums["grabbed_data0.zip"] == sha256_file(mirror / "grabbed_data0.zip")
    assert any("SHA256SUMS" in n for n in rep.notes)


def test_mnistdvs_unreachable_default_says_mirror(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(events_sources, "MNISTDVS_BASE", f"http://127.0.0.1:{port}/caviar/MNIST_DVS")
    rep = dr.download_dataset("mnistdvs", tmp_path, backoff=0.01, retries=0, progress=False)
    assert len(rep.failed) == 10
    assert all("--mirror" in r.reason and "often unreachable" in r.reason for r in rep.failed)


def test_ntidigits_md5_checked(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / events_sources.NTIDIGITS_FILE).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1000)  # not the real file
    with serve_dir(mirror) as url:
        rep = dr.download_dataset("ntidigits", tmp_path / "raw", mirror=url, backoff=0.01, retries=0,
                                  progress=False)
    assert rep.failed[0].kind == "md5" and events_sources.NTIDIGITS_MD5 in rep.failed[0].reason
    assert not (tmp_path / "raw" / events_sources.NTIDIGITS_FILE).exists()


def _no_kaggle(monkeypatch, home: Path) -> None:
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("HOME", str(home))


def _kaggle_user_and_zip(monkeypatch, tmp_path: Path, user: str, folder: str, size: int) -> Path:
    """Kaggle credentials for `user` in the environment, and a folder holding an urbansound8k-av.zip."""
    _no_kaggle(monkeypatch, tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", user)
    monkeypatch.setenv("KAGGLE_KEY", "k3y")
    site = tmp_path / folder
    site.mkdir()
    _make_zip(site / "urbansound8k-av.zip", {"a.txt": os.urandom(size)})
    return site


def test_kaggle_missing_credentials(tmp_path, monkeypatch):
    _no_kaggle(monkeypatch, tmp_path)
    with pytest.raises(AvdataError) as info:
        dr.download_dataset("urbansound8k-av", tmp_path / "raw", progress=False)
    msg = str(info.value)
    for part in ("Settings -> API", "kaggle.json", "chmod 600", "KAGGLE_USERNAME", "KAGGLE_KEY",
                 "avdata prepare urbansound8k-av --raw"):
        assert part in msg
    res = runner.invoke(app, ["download", "urbansound8k-av", "--to", str(tmp_path / "raw")])
    assert res.exit_code == 2 and "kaggle.json" in res.output and "Traceback" not in res.output


def test_kaggle_with_credentials_sends_auth(tmp_path, monkeypatch):
    _no_kaggle(monkeypatch, tmp_path)
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "alice", "key": "s3cret"}))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _make_zip(mirror / "urbansound8k-av.zip", {"Dataset_v3_sound/dog_bark/1.wav": os.urandom(5000)})
    with serve_dir(mirror) as url:  # the "Kaggle API" on loopback: the token goes there
        monkeypatch.setattr(us8k_sources, "kaggle_url", lambda: url + "/urbansound8k-av.zip")
        res = runner.invoke(app, ["download", "urbansound8k-av", "--to", str(tmp_path / "raw")])
        assert res.exit_code == 0, res.output
        auth = url.requests[0]["headers"].get("Authorization")
    assert auth == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    got = tmp_path / "raw" / "urbansound8k-av.zip"
    assert got.read_bytes() == (mirror / "urbansound8k-av.zip").read_bytes()
    assert dr.read_sha256sums(tmp_path / "raw") == {"urbansound8k-av.zip": sha256_file(got)}


def test_credentials_not_forwarded_on_redirect(tmp_path, monkeypatch):
    """Kaggle answers with a redirect to a storage host: the Range header follows, the credentials do not."""
    store = _kaggle_user_and_zip(monkeypatch, tmp_path, "bob", "store", 100_000)
    out = tmp_path / "raw"
    with serve_dir(store, drop_after=30_000) as storage, serve_dir(store, redirect_to=storage) as api:
        monkeypatch.setattr(us8k_sources, "kaggle_url", lambda: api + "/urbansound8k-av.zip")
        rep = dr.download_dataset("urbansound8k-av", out, backoff=0.01, progress=False)
        assert rep.ok
        assert [r["status"] for r in api.requests] == [302, 302]
        assert all(r["headers"].get("Authorization", "").startswith("Basic ") for r in api.requests)
        assert [r["headers"].get("Range") for r in storage.requests] == [None, "bytes=30000-"]
        assert not any("Authorization" in r["headers"] for r in storage.requests)
    assert (out / "urbansound8k-av.zip").read_bytes() == (store / "urbansound8k-av.zip").read_bytes()


def test_cremad_only_options_rejected_elsewhere(tmp_path):
    with pytest.raises(AvdataError, match="--limit only applies to cremad"):
        dr.plan_download("mnistdvs", tmp_path, limit=3)
    res = runner.invoke(app, ["download", "nosuch", "--to", str(tmp_path)])
    assert res.exit_code == 2 and "unknown dataset" in res.output


def test_kaggle_token_is_never_sent_to_a_mirror(tmp_path, monkeypatch):
    """A --mirror is someone else's server: the Kaggle key stays home."""
    mirror = _kaggle_user_and_zip(monkeypatch, tmp_path, "carol", "mirror", 1000)
    with serve_dir(mirror) as url:
        res = runner.invoke(app, ["download", "urbansound8k-av", "--to", str(tmp_path / "raw"), "--mirror", url])
        assert res.exit_code == 0, res.output
        assert url.requests and not any("Authorization" in r["headers"] for r in url.requests)


def test_a_file_the_server_declares_smaller_is_refused_at_once(served, tmp_path):
    """Another version of the file (its Content-Length below the listed size) is not retried."""
    src, files, _ = served
    f = files[1]
    longer = SourceFile(f.path, f.size + 100, f.sha256)
    with serve_dir(src) as url:
        rep = fetch_files(url, [longer], tmp_path, retries=4, **FAST)
        assert len(url.requests) == 1
    r = rep.failed[0]
    assert r.kind == "size" and f"declares {f.size:,} bytes, fewer than the {f.size + 100:,}" in r.reason
    assert not list(tmp_path.rglob("*.flv*"))


def test_a_host_that_does_not_exist_is_not_retried(served, tmp_path, monkeypatch):
    """No such host (EAI_NONAME) stops at once; a temporary DNS failure (EAI_AGAIN) is retried."""
    import urllib.error

    src, files, _ = served
    calls = []

    def resolve(errno_):
        def fail(url, headers, timeout):
            calls.append(url)
            raise urllib.error.URLError(socket.gaierror(errno_, "name lookup failed"))
        return fail

    monkeypatch.setattr(transfer, "open_source", resolve(socket.EAI_NONAME))
    rep = fetch_files("http://no-such-host.invalid", [files[0]], tmp_path, retries=3, **FAST)
    assert len(calls) == 1 and "no such host" in rep.failed[0].reason and "--mirror" in rep.failed[0].reason
    calls.clear()
    monkeypatch.setattr(transfer, "open_source", resolve(socket.EAI_AGAIN))
    rep = fetch_files("http://flaky-dns.example", [files[0]], tmp_path, retries=2, **FAST)
    assert len(calls) == 3 and not rep.ok
