"""A remote shards folder that cannot be read, as a user meets it through the real commands: refused
credentials, a bucket or repository that does not exist, a path with nothing (or no manifest.json) under it.
Each ends in one `error:` line naming the URL and what to do, exit status 2, and nothing else on the
terminal: no traceback, no storage library's own log lines (they come back with --verbose)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.httpserver import send_whole, serve_script

#: end to end (servers, the commands run as processes): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"inspect": ["avdata.cli.avdata_app", "inspect"], "verify": ["avdata.cli.avdata_app", "verify"],
            "pull": ["avdata.cli.avdata_app", "pull"], "train": ["scmrl.cli.train_app", "--shards"]}


def run_cli(command: str, url: str, env: dict[str, str], tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The command as a user runs it (its own process: logging as a terminal gets it)."""
    args = [sys.executable, "-m", *COMMANDS[command], url]
    if command == "pull":
        args += ["--to", str(tmp_path / "pulled")]
    if command == "train":
        args += ["--out", str(tmp_path / "run"), "--device", "cpu"]
    full = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    full.update(env, PYTHONPATH=str(ROOT), AVDATA_NO_PROGRESS="1", COLUMNS="400")
    return subprocess.run([*args, *extra], env=full, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single line a failed command printed (asserting there is nothing else)."""
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stdout + r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def refusing_gcs():
    """A GCS endpoint that refuses every request with 401, as Google does a request without credentials
    (an expired token's 401 says "Invalid Credentials", which gcsfs retries for about 35 s first)."""
    pytest.importorskip("gcsfs")

    def refuse(handler):
        body = {"error": {"code": 401, "message": "Anonymous caller does not have storage.objects.get access"}}
        send_whole(handler, 401, json.dumps(body).encode(), {"Content-Type": "application/json"})

    with serve_script(refuse) as url:
        yield url


@pytest.mark.parametrize("command", ["inspect", "verify", "train"])
def test_refused_gcs_credentials_print_one_line_and_no_library_logs(refusing_gcs, tmp_path, command):
    """gcsfs logged its own traceback of the 401, and a warning per call that it could not find the
    bucket's type, before our line; scmrl-train (whose log handler shows library warnings) did too."""
    if command == "train":
        pytest.importorskip("torch")
    r = run_cli(command, "gs://bkt/ds", {"STORAGE_EMULATOR_HOST": refusing_gcs}, tmp_path)
    line = one_error_line(r)
    assert line.startswith("error: gs://bkt/ds/manifest.json: access denied"), line
    assert "Anonymous caller" in line and "GOOGLE_APPLICATION_CREDENTIALS" in line, line
    assert not (tmp_path / "run").exists()


def test_verbose_shows_the_storage_librarys_own_lines(refusing_gcs, tmp_path):
    r = run_cli("verify", "gs://bkt/ds", {"STORAGE_EMULATOR_HOST": refusing_gcs}, tmp_path, "--verbose")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" in out and "Could not determine bucket type" in out, out
    assert out.strip().splitlines()[-1].startswith("error: gs://bkt/ds/manifest.json: access denied"), out
