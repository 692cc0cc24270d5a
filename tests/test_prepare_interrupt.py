"""Prepare runs that stop part-way, as a user's do: a full disk, a kill. Nothing half-written is left under a
final name or as a stray temporary file, and the rerun gives the bytes of an uninterrupted run."""

from __future__ import annotations

import errno
import io
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.stops import STOP_STATUS, stop_when, wait_until

from avdata.shards.tar import ShardWriter


class _FullDisk(io.RawIOBase):
    """A file on a disk with `room` bytes left: writes past it fail with ENOSPC, as on a real full disk."""

    def __init__(self, path: Path, room: int) -> None:
        self.f = open(path, "wb")
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(b), self.room)
        self.f.write(bytes(b[:n]))
        self.room -= n
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def test_a_shard_cut_short_by_a_full_disk_leaves_no_temp_file(tmp_path):
    path = tmp_path / "train-000000.tar"
    with pytest.raises(OSError) as caught:
        with ShardWriter(path) as w:
            w._fileobj.close()
            w._fileobj = io.BufferedWriter(_FullDisk(w.tmp, room=5000), buffer_size=8192)
            for i in range(40):  # small members stay in the buffer: the last of them fail only when it is flushed
                w.write(f"k{i}", {"txt": b"x" * 100})
            w.close()
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # before: train-000000.tar.tmp, 5,000 bytes, stayed


def test_disk_full_names_the_folder_its_free_space_and_the_room_the_rest_needs(tmp_path, monkeypatch):
    import avdata.prepare.engine as engine
    from avdata.errors import AvdataError
    from tests.test_prepare_engine import run
    from tests.toy_recipe import make_toy_raw

    raw = make_toy_raw(tmp_path / "raw")
    sizes = {p.name: p.stat().st_size for p in sorted((run(raw, tmp_path / "whole").out).glob("*.tar"))}
    opened: list[str] = []

    class FillsAtTheThirdShard(ShardWriter):
        def write_encoded(self, key, parts):
            if self.path.name not in opened:
                opened.append(self.path.name)
            if len(opened) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write_encoded(key, parts)

    monkeypatch.setattr(engine, "ShardWriter", FillsAtTheThirdShard)
    monkeypatch.setattr(engine, "free_space", lambda folder: 1234)
    out = tmp_path / "out"
    with pytest.raises(AvdataError) as caught:
        run(raw, out)
    first, second, third = opened
    per_clip = (sizes[first] + sizes[second]) // 8  # 4 clips a shard
    assert str(caught.value) == (
        f"disk full while writing {out / third} (1,234 bytes free in {out}; the 6 shard(s) left need about "
        f"{(sizes[first] + sizes[second]) * 18 // 8:,} bytes (at the {per_clip:,} bytes a clip of the shards "
        "written)); free space and rerun the same command (finished shards are kept)")
    assert sorted(p.name for p in out.glob("*.tar*")) == sorted([first, second])


REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """The real `avdata` CLI in a child process; `file_limit`: no file it writes may grow past that many
    bytes (RLIMIT_FSIZE: writes past it fail with EFBIG, as writes to a full disk fail with ENOSPC)."""
    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**os.environ, "PYTHONPATH": str(REPO), "AVDATA_NO_PROGRESS": "1", "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "avdata.cli.avdata_app", *args], capture_output=True, text=True,
                          env=env, preexec_fn=limit, timeout=120)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".avdata" not in p.parts}


@pytest.fixture(scope="module")
def cremad_raw(tmp_path_factory) -> Path:
    from avdata.datasets.cremad.synth import make_cremad_raw

    raw = tmp_path_factory.mktemp("cremad") / "raw"
    make_cremad_raw(raw, n_clips=10, width=160, height=120, with_bad=True)
    return raw


@pytest.mark.slow
def test_a_file_size_limit_mid_shard_is_named_and_the_rerun_gives_the_same_bytes(cremad_raw, tmp_path):
    prepare = ("prepare", "cremad", "--raw", str(cremad_raw), "--samples-per-shard", "3")
    whole = _cli(*prepare, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    out = tmp_path / "out"
    cut = _cli(*prepare, "--out", str(out), file_limit=300_000)
    said = cut.stdout + cut.stderr
    assert cut.returncode == 2 and "Traceback" not in said
    # before: "error: File too large", naming no file and no way on
    assert f"error: {out}/train-000000.tar.tmp: File too large; a file-size limit was reached" in said, said
    assert not list(out.glob("*.tmp")) and not (out / "manifest.json").exists()
    again = _cli(*prepare, "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert _tree(out) == _tree(tmp_path / "whole")


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AVDATA_NO_PROGRESS": "1", "COLUMNS": "400"}
    return subprocess.Popen([sys.executable, "-m", "avdata.cli.avdata_app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _no_half_files(out: Path, whole: dict[str, bytes]) -> None:
    """Every file under a final name is the finished file: the uninterrupted run's bytes."""
    for p in out.iterdir():
        if p.is_file() and p.name in whole:
            assert p.read_bytes() == whole[p.name], f"{p.name} is half-written"


@pytest.mark.slow
def test_a_killed_pool_run_leaves_no_hand_off_folder_after_its_rerun(cremad_raw, tmp_path):
    prepare = ("prepare", "cremad", "--raw", str(cremad_raw), "--samples-per-shard", "3", "--jobs", "2")
    assert _cli(*prepare, "--out", str(tmp_path / "whole")).returncode == 0
    whole = _tree(tmp_path / "whole")
    out = tmp_path / "out"
    proc = _start(*prepare, "--out", str(out))
    try:
        busy = lambda: any((out / ".avdata").glob("work-*/*.busy"))  # noqa: E731 (the workers are on clips)
        assert wait_until(proc, busy), proc.communicate()[0]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert list((out / ".avdata").glob("work-*"))  # what the killed run left: its workers' folder
    _no_half_files(out, whole)
    again = _cli(*prepare, "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    # before: the killed run's folder stayed for an hour, holding its workers' unread samples
    assert not list((out / ".avdata").glob("work-*"))
    assert _tree(out) == whole


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prepare_stopped_at_random_moments_resumes_to_the_same_bytes(cremad_raw, tmp_path, seed):
    """Each signal at seeded random moments after the run took its lock: planning, mid-shard, the manifest."""
    import random

    rng = random.Random(f"prepare-interrupt:{seed}")
    prepare = ("prepare", "cremad", "--raw", str(cremad_raw), "--samples-per-shard", "3", "--jobs", str(1 + seed % 2))
    assert _cli(*prepare, "--out", str(tmp_path / "whole")).returncode == 0
    whole = _tree(tmp_path / "whole")
    out = tmp_path / "out"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        proc = _start(*prepare, "--out", str(out))
        said = stop_when(proc, lambda: any((out / ".avdata").glob("*.lock")), rng.uniform(0, 1.0), sig)
        if proc.returncode == STOP_STATUS[sig] and sig != signal.SIGKILL:
            assert "run the same command again to go on" in said
        _no_half_files(out, whole)
    again = _cli(*prepare, "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert _tree(out) == whole
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".part", ".busy")) or p.name.startswith("work-")]


def test_a_raw_file_replaced_before_the_rerun_is_prepared_again(tmp_path, caplog):
    import json

    from tests.test_prepare_engine import folder_bytes, run
    from tests.toy_recipe import make_toy_raw

    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    run(raw, out)
    before = folder_bytes(out)
    (raw / "s003.txt").write_text("7 8 9")  # another version of one clip, e.g. downloaded again
    result = run(raw, out)
    fresh = run(raw, tmp_path / "fresh")
    assert folder_bytes(out) == folder_bytes(fresh.out) != before  # before: the old version was kept, silently
    made_from = [s for s in json.loads((out / "manifest.json").read_text())["splits"].values()]
    assert len(result.written) == 1 and len(result.kept) == sum(len(s["shards"]) for s in made_from) - 1
    assert f"s003.txt changed since {result.written[0]} was made from it; making that shard again" in caplog.text
