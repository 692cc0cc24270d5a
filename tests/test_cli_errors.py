"""What a user sees when the operating system refuses: the path, the reason, the fix; exit status 2 and
no traceback, for every command (the entry points wrap the Typer apps in avdata.cli.errors.run)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from avdata.cli import errors
from scmrl.data.synthetic import make_synthetic_av_shards

ROOT = Path(__file__).resolve().parents[1]


def test_describe_names_the_path_and_the_fix() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/shards/train-000003.tar.tmp")
    text = errors.describe_os_error(full)
    assert text.startswith("/data/shards/train-000003.tar.tmp: No space left on device; the disk is full")
    assert "rerun the same command" in text
    ro = OSError(errno.EROFS, "Read-only file system", "/data/ro/out")
    assert errors.describe_os_error(ro) == ("/data/ro/out: Read-only file system; the file system is read-only: "
                                            "choose another folder")
    assert errors.describe_os_error(OSError("socket closed")) == "socket closed"
    in_the_way = FileExistsError(errno.EEXIST, "File exists", "/data/notes.txt")  # --png notes.txt/sheet.png
    assert errors.describe_os_error(in_the_way) == ("/data/notes.txt: File exists; something is already there (e.g. "
                                                    "a file where a folder goes): choose another path")
    assert errors.describe_os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x")).endswith(
        "a file stands where a folder is needed: choose another path")


def test_run_turns_an_oserror_into_exit_status_2(capsys: pytest.CaptureFixture) -> None:
    def app() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/datasets/cremad")

    with pytest.raises(SystemExit) as done:
        errors.run(app)
    assert done.value.code == 2
    out = capsys.readouterr().err
    assert "error: /srv/datasets/cremad: Permission denied; no permission: choose a folder you can write to" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "avdata.cli.avdata_app", "prepare", "cremad", "--raw", "{raw}", "--out", "{blocked}/shards"],
        ["-m", "avdata.cli.avdata_app", "download", "cremad", "--to", "{blocked}/raw", "--limit", "1"],
        ["-m", "scmrl.cli.train_app", "--shards", "{shards}", "--out", "{blocked}/run", "--device", "cpu"],
    ],
    ids=["prepare", "download", "scmrl-train"],
)
@pytest.mark.slow
def test_an_output_folder_that_cannot_be_made_is_named(argv: list[str], tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    (tmp_path / "raw").mkdir()
    shards = tmp_path / "shards"
    if "{shards}" in argv:
        make_synthetic_av_shards(shards, 8, 4, 4, per_shard=8)
    args = [a.format(raw=tmp_path / "raw", blocked=blocked, shards=shards) for a in argv]
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "AVDATA_NO_PROGRESS": "1", "COLUMNS": "400"})
    text = res.stdout + res.stderr
    assert res.returncode == 2, text
    assert "Traceback" not in text
    assert f"error: {blocked}" in text and "Not a directory" in text
