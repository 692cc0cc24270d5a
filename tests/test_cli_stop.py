"""Ctrl-C and SIGTERM at fixed, early moments of the real console scripts, and `avdata merge` stopped at random
moments: one line, status 130 / 143, nothing half-written, and a rerun ends as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from avdata.cli.stopping import STARTING
from avdata.errors import AvdataError
from avdata.folder_lock import output_lock
from avdata.prepare.merge import merge
from tests.test_prepare_engine import folder_bytes, run
from tests.stops import stop_when
from tests.toy_recipe import make_toy_raw

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "AVDATA_NO_PROGRESS": "1", "COLUMNS": "400"}


def _script(name: str, *args: str) -> subprocess.Popen:
    """The console script `name` as pip's wrapper runs it: import its function, exit with what it returns."""
    module, function = SCRIPTS[name].split(":")
    code = f"import sys\nfrom {module} import {function}\nsys.exit({function}())"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (the kernel's SigCgt mask): the first thing the entry does."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the handler mask from /proc")
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_while_the_script_imports_its_app_is_one_line(name, sig, status):
    """The moment the handlers are in place, the app (typer, rich, numpy; the trainer's torch) is still to be
    imported. Before: SIGINT there printed a KeyboardInterrupt traceback, SIGTERM killed the process (-15)."""
    proc = _script(name, "--help")
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.0005)
        proc.send_signal(sig)
        said = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert (proc.returncode, said) == (status, STARTING + "\n")


# ------------------------------------------------------------------------------------------------ merge

@pytest.fixture
def parts(tmp_path) -> tuple[list[Path], Path]:
    """Three part folders of one toy plan (one sample a shard: 27 shards) and their uninterrupted merge."""
    raw = make_toy_raw(tmp_path / "raw")
    folders = [tmp_path / f"p{i}" for i in range(3)]
    for i, folder in enumerate(folders):
        run(raw, folder, part=(i, 3), per_shard=1)
    merge(tmp_path / "whole", folders)
    return folders, tmp_path / "whole"


def _state(out: Path) -> dict[str, bytes]:
    """Every file under its final name, the shard records included (not the plan's lock or temp files)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.endswith((".tmp", ".lock"))}


def _held_by(lock: Path, pid: int) -> bool:
    try:
        return json.loads(lock.read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_merge_stopped_at_random_moments_resumes_to_the_same_bytes(parts, tmp_path, seed):
    folders, whole = parts
    expected = _state(whole)
    rng = random.Random(f"merge-interrupt:{seed}")
    out = tmp_path / "out"
    args = ["merge", str(out), *(a for f in folders for a in ("--from", str(f)))]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
        proc = _script("avdata", *args)
        # the lock of the merge started (a killed run's lock stays until the next takes it over)
        said = stop_when(proc, lambda: _held_by(out / ".avdata" / "prepare.lock", proc.pid), rng.uniform(0, 0.15),
                         sig)
        # before: SIGINT ended it with a bare 130, SIGTERM killed it (-15)
        if proc.returncode in (130, 143):
            assert said.strip().splitlines()[-1] == (
                f"interrupted: the shards copied into {out} are kept; run the same command again to go on")
        for name, data in _state(out).items():  # nothing half-written under a final name
            assert data == expected[name], f"{name} is not whole"
    again = _script("avdata", *args)
    said = again.communicate(timeout=60)[0]
    assert again.returncode == 0, said
    assert _state(out) == expected and folder_bytes(out) == folder_bytes(whole)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_merge_rerun_copies_only_the_missing_shards(parts, tmp_path, monkeypatch):
    """Before: a rerun copied and hashed every shard again (and replaced each, under a reader's feet)."""
    import avdata.prepare.merge as merge_module

    folders, whole = parts
    out = tmp_path / "out"
    merge(out, folders)
    names = sorted(p.name for p in out.glob("*.tar"))
    for name in names:
        os.utime(out / name, ns=(0, 0))  # a shard written again gets the time of writing
    gone = names[3]
    (out / gone).unlink()
    hashed: list[str] = []
    monkeypatch.setattr(merge_module, "sha256_file", lambda path, *a, **k: hashed.append(Path(path).name))
    merge(out, folders)
    assert folder_bytes(out) == folder_bytes(whole)
    assert [n for n in names if (out / n).stat().st_mtime_ns != 0] == [gone]
    assert hashed == []


def test_merge_takes_the_folders_lock(parts, tmp_path):
    """Before: a merge wrote into a folder a prepare (or another merge) was writing into."""
    folders, _whole = parts
    out = tmp_path / "out"
    with output_lock(out, (0, 3)) as lock:  # a `prepare --part 0/3` running there
        with pytest.raises(AvdataError, match=r"another `avdata prepare` \(pid \d+ on .*\) is writing into"):
            merge(out, folders)
        assert not list(out.glob("*.tar")) and lock.exists()
    with output_lock(out, None, command="avdata merge"):
        with pytest.raises(AvdataError, match=r"another `avdata merge` \(pid \d+ on .*\) is writing into"):
            merge(out, folders)
    merge(out, folders)
