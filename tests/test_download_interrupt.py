"""`avdata download` as a user on a bad connection or a small disk sees it, through the real CLI: stopped at
random moments while files stream, a full disk mid-file, mirrors that send the wrong bytes. Nothing that is not
whole and checked is ever under its final name, and the rerun completes to the bytes of an uninterrupted run."""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.hashing import sha256_file
from tests.httpserver import serve_dir
from tests.stops import STOP_STATUS, stop_when, wait_until

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, Path]:
    """A CREMA-D-layout mirror of real-format files (FLV + WAV, 1.5 MB) and its TSV list."""
    from avdata.datasets.cremad.synth import make_cremad_raw

    root = tmp_path_factory.mktemp("mirror")
    src = root / "src"
    make_cremad_raw(src, n_clips=4, width=160, height=120)
    rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    tsv = root / "files.tsv"
    tsv.write_text("path\tsize\tsha256\n" + "".join(
        f"{r}\t{(src / r).stat().st_size}\t{sha256_file(src / r)}\n" for r in rels))
    return src, tsv


def _args(url: str, to: Path, tsv: Path, *more: str) -> list[str]:
    return ["download", "cremad", "--to", str(to), "--mirror", url, "--sources", str(tsv), "--backoff", "0.01",
            *more]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "AVDATA_NO_PROGRESS": "1", "COLUMNS": "400"}


def _start(args: list[str], file_limit: int | None = None) -> subprocess.Popen:
    """The real CLI in a child; `file_limit`: no file it writes may grow past that many bytes (RLIMIT_FSIZE,
    SIGXFSZ ignored: writes past it fail with EFBIG, as writes to a full disk fail with ENOSPC)."""
    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.Popen([sys.executable, "-m", "avdata.cli.avdata_app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), preexec_fn=limit)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_half_files(to: Path, src: Path) -> None:
    """Every file under a final name is the whole, checked file; anything else is a .part, the user's, or a
    killed run's lock."""
    for rel, data in _tree(to).items():
        if rel.startswith(".avdata/"):  # the lock of a killed run (the next run takes it over)
            assert rel == ".avdata/prepare.lock", rel
        elif rel.endswith(".part"):
            whole = (src / rel[: -len(".part")]).read_bytes()
            assert whole.startswith(data), f"{rel} is not a prefix of the file"
        elif rel != "notes.txt":
            assert data == (src / rel).read_bytes(), f"{rel} is under its final name but not whole"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_download_stopped_at_random_moments_resumes_to_the_same_bytes(mirror, tmp_path, seed):
    src, tsv = mirror
    rng = random.Random(f"download-interrupt:{seed}")
    to = tmp_path / "to"
    to.mkdir()
    (to / "notes.txt").write_bytes(b"the user's own file\n")
    with serve_dir(src, pace=0.01) as url:  # 16 KiB every 10 ms: each file takes 0.1-0.3 s
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            before = len(url.requests)  # the child is receiving a file once it has asked for one
            proc = _start(_args(url, to, tsv, "--jobs", str(1 + seed)))
            said = stop_when(proc, lambda: len(url.requests) > before, rng.uniform(0, 0.3), sig, timeout=30)
            if proc.returncode == STOP_STATUS[sig] and sig != signal.SIGKILL:
                # before: SIGTERM killed it silently (status -15); Ctrl-C printed nothing
                assert said.count("interrupted:") == 1 and "run the same command again" in said, said
            _no_half_files(to, src)
        parts = {p.relative_to(to).as_posix()[: -len(".part")]: p.stat().st_size for p in to.rglob("*.part")}
        before = len(url.requests)
        again = _start(_args(url, to, tsv))
        said = again.communicate(timeout=60)[0]
        assert again.returncode == 0, said
        for rel, size in parts.items():  # every partial file resumed where it stopped
            if size:
                assert url.requests_for(rel)[-1]["headers"].get("Range") == f"bytes={size}-"
        assert len(url.requests) - before <= len(list(src.rglob("*.*")))
    assert _tree(to) == {**_tree(src), "notes.txt": b"the user's own file\n"}


def test_ctrl_c_on_a_slow_link_stops_at_once(mirror, tmp_path):
    src, tsv = mirror
    to = tmp_path / "to"
    with serve_dir(src, pace=20) as url:  # one 16 KiB piece every 20 s: reads block
        before = len(url.requests)
        proc = _start(_args(url, to, tsv))
        try:
            assert wait_until(proc, lambda: len(url.requests) > before)
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            said = proc.communicate(timeout=60)[0]
            took = time.monotonic() - t0
        finally:
            proc.kill()
    assert proc.returncode == 130 and "interrupted:" in said and "Traceback" not in said, said
    assert took < 5, took  # before: 20 s, the read waited for the next piece (up to --stall-timeout, 60 s)
    _no_half_files(to, src)


@pytest.mark.slow
def test_a_file_size_limit_mid_file_is_named_and_the_rerun_completes(mirror, tmp_path):
    src, tsv = mirror
    to = tmp_path / "to"
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    with serve_dir(src) as url:
        cut = _start(_args(url, to, tsv, "--jobs", "1"), file_limit=200_000)
        said = cut.communicate(timeout=60)[0]
        assert cut.returncode == 2 and "Traceback" not in said, said
        _no_half_files(to, src)
        present = sum(p.stat().st_size for p in to.rglob("*") if p.is_file())
        error = [line for line in said.splitlines() if line.startswith("error:")]
        # before: a traceback logged per file and "OSError: [Errno 27] File too large" in the table, exit 1
        assert len(error) == 1 and error[0].startswith("error: a file-size limit was reached while writing "), said
        assert ".flv.part (`ulimit -f`" in error[0] and f" bytes free in {to}; " in error[0]
        assert f"the files not yet downloaded need {total - present:,} more bytes" in error[0]
        assert "run the same command again; it resumes from the .part files" in error[0]
        parts = {p.relative_to(to).as_posix()[: -len(".part")]: p.stat().st_size for p in to.rglob("*.part")}
        assert list(parts.values()) == [200_000]
        again = _start(_args(url, to, tsv))
        said = again.communicate(timeout=60)[0]
        assert again.returncode == 0, said
        (rel, size), = parts.items()
        assert url.requests_for(rel)[-1]["headers"].get("Range") == f"bytes={size}-"
    assert _tree(to) == _tree(src)


def _whole_part(src: Path, to: Path, rel: str, n: int) -> None:
    """An earlier run's `.part`: the first n bytes of the file."""
    (to / rel).parent.mkdir(parents=True, exist_ok=True)
    (to / (rel + ".part")).write_bytes((src / rel).read_bytes()[:n])


FLV = "VideoFlash/1010_ITH_ANG_XX.flv"


@pytest.mark.parametrize("fault, part, said", [
    # before: "the server declares 266,515 bytes, fewer than the 303,128 the list gives: another file"
    ({"gzip": True}, 0, "the server sent the file compressed (Content-Encoding: gzip)"),
    # the file changed on the server since the .part began (before: the new tail was appended and received whole)
    ({"range_total": 400_000}, 100_000, "the server's copy is 400,000 bytes (Content-Range), not the {size}"),
    ({"drop_after": 2_000, "drop_times": None}, 0, "connection closed after 2,000 of "),  # 150 resumes needed
    ({"corrupt_byte_at": 1234}, 0, "sha256 mismatch: expected "),
    ({"corrupt_byte_at": 150_000}, 100_000, "twice the same bytes"),  # resumed, then the whole file again
])
def test_a_mirror_that_sends_other_bytes_is_named_and_never_kept(mirror, tmp_path, fault, part, said):
    src, tsv = mirror
    to = tmp_path / "to"
    if part:
        _whole_part(src, to, FLV, part)
    with serve_dir(src, only=FLV, **fault) as url:
        res = runner.invoke(app, _args(url, to, tsv, "--retries", "1"))
        assert all(r["headers"].get("Accept-Encoding") == "identity" for r in url.requests)
    assert res.exit_code == 1, res.output
    out = " ".join(res.output.split())
    said = said.format(size=f"{(src / FLV).stat().st_size:,}")  # the encoder's output: its size varies by version
    assert said in out and FLV in out and "run the same command again" in out, out
    assert not (to / FLV).exists()
    _no_half_files(to, src)
    kept = [FLV + ".part"] if "drop_after" in fault else []  # a true prefix: the rerun resumes it
    assert sorted(_tree(to)) == sorted([r for r in _tree(src) if r != FLV] + kept)


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_below_one_is_refused_before_anything_is_written(mirror, tmp_path, jobs):
    src, tsv = mirror
    res = runner.invoke(app, _args(str(src), tmp_path / "to", tsv, "--jobs", jobs))
    out = " ".join(res.output.split())  # click's wording of the range varies by version
    assert res.exit_code == 2 and "'--jobs'" in out and ("greater than or equal to 1" in out or "x>=1" in out), out
    assert not (tmp_path / "to").exists()


def test_more_jobs_than_files(mirror, tmp_path):
    src, tsv = mirror
    with serve_dir(src) as url:
        res = runner.invoke(app, _args(url, tmp_path / "to", tsv, "--jobs", "64"))
    assert res.exit_code == 0, res.output
    assert _tree(tmp_path / "to") == _tree(src)
