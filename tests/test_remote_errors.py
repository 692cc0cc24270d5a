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


def run_cli(command: str, url: str, env: dict[str, str], tmp_path: Path, *extra: str,
            drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The command as a user runs it (its own process: logging as a terminal gets it), without the
    variables in `drop`."""
    args = [sys.executable, "-m", *COMMANDS[command], url]
    if command == "pull":
        args += ["--to", str(tmp_path / "pulled")]
    if command == "train":
        args += ["--out", str(tmp_path / "run"), "--device", "cpu"]
    full = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    full.update(env, PYTHONPATH=str(ROOT), AVDATA_NO_PROGRESS="1", COLUMNS="400")
    full = {k: v for k, v in full.items() if k not in drop}
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


@pytest.fixture(scope="module")
def expired_gcs_token():
    """A GCS endpoint answering as Google does a request with an expired or revoked token: 401 "Invalid
    Credentials", which gcsfs retries six times with back-off. Records each request it answers."""
    pytest.importorskip("gcsfs")
    seen: list[str] = []

    def refuse(handler):
        seen.append(handler.path)
        error = {"code": 401, "message": "Invalid Credentials",
                 "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError"}]}
        send_whole(handler, 401, json.dumps({"error": error}).encode(), {"Content-Type": "application/json"})

    with serve_script(refuse) as url:
        yield url, seen


@pytest.mark.parametrize("command", ["inspect", "pull"])
def test_an_expired_gcs_token_fails_at_the_first_401_saying_so_once(expired_gcs_token, tmp_path, command):
    """Each command took about 35 s (11 requests) before its error, which read "access denied (HTTP Error
    403: Forbidden (Invalid Credentials, 401); ...)": a 401 reported as a 403 inside a 403."""
    import time

    url, seen = expired_gcs_token
    seen.clear()
    start = time.monotonic()
    r = run_cli(command, "gs://bkt/ds", {"STORAGE_EMULATOR_HOST": url}, tmp_path)
    line = one_error_line(r)
    assert time.monotonic() - start < 15 and len(seen) <= 2, (time.monotonic() - start, seen)
    assert line == ("error: gs://bkt/ds/manifest.json: access denied (HTTP 401 Unauthorized: Invalid Credentials); "
                    "check the credentials: GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default "
                    "login`"), line


def test_refused_or_missing_s3_credentials_are_named_in_one_line_at_once(tmp_path, monkeypatch):
    """moto checking signatures (as S3 does): an unknown access key is refused with 403 (botocore does not
    retry it; the message read "HTTP Error 403: Forbidden (Forbidden)"), and no credentials at all is
    botocore's NoCredentialsError; both through the commands as a user runs them."""
    import time

    from tests.s3server import moto_s3, skip_without_s3

    skip_without_s3()
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # the server (a child) checks every request
    where = ("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials (and "
             "AWS_ENDPOINT_URL for an S3-compatible server)")
    with moto_s3(tmp_path) as s3:
        for command in ("inspect", "pull"):
            start = time.monotonic()
            r = run_cli(command, "s3://bkt/ds", {**s3.env, "AWS_ACCESS_KEY_ID": "AKIDUNKNOWN"}, tmp_path)
            assert one_error_line(r) == (f"error: s3://bkt/ds/manifest.json: access denied (HTTP 403 Forbidden); "
                                         f"check the credentials: {where}")
            assert time.monotonic() - start < 20
            r = run_cli(command, "s3://bkt/ds", s3.env, tmp_path,
                        drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"))
            assert one_error_line(r) == ("error: s3://bkt/ds/manifest.json: no usable credentials (Unable to "
                                         f"locate credentials); set {where}")
    assert not (tmp_path / "pulled").exists()


def test_verbose_shows_the_storage_librarys_own_lines(refusing_gcs, tmp_path):
    r = run_cli("verify", "gs://bkt/ds", {"STORAGE_EMULATOR_HOST": refusing_gcs}, tmp_path, "--verbose")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Could not determine bucket type" in out, out  # (the 401 ends before gcsfs logs it)
    assert out.strip().splitlines()[-1].startswith("error: gs://bkt/ds/manifest.json: access denied"), out


def _inspect(url: str) -> str:
    from typer.testing import CliRunner

    from avdata.cli.avdata_app import app

    r = CliRunner().invoke(app, ["inspect", url])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    return " ".join(r.output.split())


@pytest.fixture(scope="module")
def gcs():
    from tests.gcsserver import gcs_emulator, make_bucket, skip_without_gcs

    skip_without_gcs()
    with gcs_emulator() as url:
        make_bucket(url, "bkt")
        import gcsfs

        gcsfs.GCSFileSystem().pipe("bkt/half/train-000000.tar", b"a shard of a push that stopped")
        yield url


@pytest.mark.parametrize("suffix", ["", "/", "/manifest.json"])
def test_a_missing_gcs_bucket_or_folder_says_which_and_what_to_do(gcs, suffix):
    """All three said "not found (HTTP 404); is this the URL of a shards folder?", whatever was missing."""
    out = _inspect(f"gs://nobkt/ds{suffix}")
    assert "gs://nobkt/ds/manifest.json: not found (HTTP 404); there is no bucket 'nobkt'" in out, out
    assert "`avdata push DIR gs://nobkt/ds`" in out, out
    out = _inspect(f"gs://bkt/empty{suffix}")
    assert "nothing is stored under gs://bkt/empty" in out and "`avdata push DIR gs://bkt/empty`" in out, out
    out = _inspect(f"gs://bkt/half{suffix}")
    assert "gs://bkt/half holds objects but no manifest.json" in out and "rerun `avdata push DIR gs://bkt/half`" in out


def test_a_missing_s3_bucket_or_folder_says_which_and_what_to_do(tmp_path):
    from tests.s3server import moto_s3, s3_env, skip_without_s3

    skip_without_s3()
    with moto_s3(tmp_path) as s3, s3_env(s3):
        s3.client.create_bucket(Bucket="bkt")
        s3.client.put_object(Bucket="bkt", Key="half/train-000000.tar", Body=b"x")
        assert "there is no bucket 'nobkt'" in _inspect("s3://nobkt/ds/")
        out = _inspect("s3://bkt/empty/manifest.json")
        assert "s3://bkt/empty/manifest.json: not found (HTTP 404); nothing is stored under s3://bkt/empty" in out, out
        assert "s3://bkt/half holds objects but no manifest.json" in _inspect("s3://bkt/half")
        from typer.testing import CliRunner

        from avdata.cli.avdata_app import app

        r = CliRunner().invoke(app, ["pull", "s3://nobkt/ds", "--to", str(tmp_path / "p")])
        assert r.exit_code == 2 and "there is no bucket 'nobkt'" in r.output, r.output
        assert not (tmp_path / "p").exists()


def test_a_missing_hub_repository_revision_or_folder_says_which(monkeypatch):
    """The Hub names what is missing in its X-Error-Code header; all three read as the same 404."""
    pytest.importorskip("huggingface_hub")
    from tests.hubserver import hub_server

    with hub_server() as hub:
        hub.create("lab/syn", {"half/train-000000.tar": b"x"})
        monkeypatch.setenv("HF_ENDPOINT", hub)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        out = _inspect("hf://datasets/lab/nope/shards")
        assert "there is no dataset repository lab/nope on the Hub" in out and "hf repo create lab/nope" in out, out
        assert "has no revision 'dev'" in _inspect("hf://datasets/lab/syn@dev/shards/")
        out = _inspect("hf://datasets/lab/syn/half/manifest.json")
        assert "the folder 'half' of lab/syn holds no manifest.json" in out, out
        assert "`avdata push DIR hf://datasets/lab/syn/half`" in out, out


def test_a_web_server_without_a_manifest_is_named(tmp_path):
    from tests.httpserver import serve_dir

    with serve_dir(tmp_path) as url:
        out = _inspect(url + "/")
    assert f"{url}/manifest.json: not found (HTTP 404); no manifest.json at this address" in out, out


@pytest.mark.parametrize("body", [b'{"name": "someone else\'s", "files": []}', b"[1, 2]"])
def test_a_manifest_json_of_another_tool_is_named_in_one_line(gcs, body):
    """It printed 'not a valid manifest (1 problem(s))' and a second line listing eight missing keys."""
    import gcsfs

    gcsfs.GCSFileSystem().pipe("bkt/foreign/manifest.json", body)
    out = _inspect("gs://bkt/foreign/")
    assert out.startswith("error: gs://bkt/foreign/manifest.json: not an avdata manifest ("), out
    assert ("its keys: name, files" if body.startswith(b"{") else "a JSON list, not an object") in out, out
