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
from tests.s3server import moto_s3, skip_without_s3

#: end to end (servers, the commands run as processes): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"inspect": ["avdata.cli.avdata_app", "inspect"], "verify": ["avdata.cli.avdata_app", "verify"],
            "pull": ["avdata.cli.avdata_app", "pull"], "train": ["scmrl.cli.train_app", "--shards"],
            "push": ["avdata.cli.avdata_app", "push"]}


def run_cli(command: str, url: str, env: dict[str, str], tmp_path: Path, *extra: str,
            drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The command as a user runs it (its own process: logging as a terminal gets it), without the
    variables in `drop`. push uploads the shards folder `tmp_path/shards` (made here when missing)."""
    args = [sys.executable, "-m", *COMMANDS[command], url]
    if command == "push":
        if not (tmp_path / "shards").exists():
            from scmrl.data.synthetic import make_synthetic_av_shards

            make_synthetic_av_shards(tmp_path / "shards", 8, 0, 0, per_shard=8, frame_shape=(16, 16))
        args.insert(-1, str(tmp_path / "shards"))
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


@pytest.fixture(scope="module")
def revoked_google_key(tmp_path_factory):
    """A service account key file whose token endpoint is a server on 127.0.0.1 answering as Google does
    for a deleted key: 400 invalid_grant. The same server stands for the storage endpoint; it records every
    request, so a test sees that nothing but one token request was made."""
    pytest.importorskip("gcsfs")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    seen: list[str] = []

    def refuse(handler):
        seen.append(f"{handler.command} {handler.path}")
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        send_whole(handler, 400, json.dumps(body).encode(), {"Content-Type": "application/json"})

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with serve_script(refuse) as url:
        info = {"type": "service_account", "project_id": "lab", "private_key_id": "k1", "private_key": key,
                "client_email": "reader@lab.iam.gserviceaccount.com", "client_id": "1", "token_uri": url + "/token"}
        path = tmp_path_factory.mktemp("gkey") / "key.json"
        path.write_text(json.dumps(info))
        yield url, path, seen


@pytest.mark.parametrize("command", ["inspect", "verify", "pull", "push", "train"])
def test_a_revoked_google_key_fails_at_once_naming_the_file(revoked_google_key, tmp_path, command):
    """gcsfs retried the refused renewal as a 401 six times with back-off (and its bucket-type look-up over
    gRPC for up to 60 s more): 75 s per command here, ending in "access denied (HTTP 401 Unauthorized:
    Invalid Credentials, 401)", which named neither the file nor what to do."""
    import time

    if command == "train":
        pytest.importorskip("torch")
    url, key, seen = revoked_google_key
    seen.clear()
    start = time.monotonic()
    r = run_cli(command, "gs://bkt/ds", {"STORAGE_EMULATOR_HOST": url, "GOOGLE_APPLICATION_CREDENTIALS": str(key)},
                tmp_path)
    line = one_error_line(r)
    assert time.monotonic() - start < 10 and seen == ["POST /token"], (time.monotonic() - start, seen)
    target = "gs://bkt/ds" if command == "push" else "gs://bkt/ds/manifest.json"
    assert line == (f"error: {target}: Google refused to renew the credentials from GOOGLE_APPLICATION_CREDENTIALS "
                    f"({key}) (invalid_grant: Invalid JWT Signature.); the service account key may have been "
                    "deleted or disabled: create a new key (`gcloud iam service-accounts keys create`) and point "
                    "GOOGLE_APPLICATION_CREDENTIALS at it"), line
    assert not (tmp_path / "pulled").exists() and not (tmp_path / "run").exists()


def test_a_refused_gcloud_application_default_file_is_named(revoked_google_key, tmp_path):
    """Without GOOGLE_APPLICATION_CREDENTIALS, google.auth reads gcloud's application-default file (under
    CLOUDSDK_CONFIG here): the line names that file."""
    import shutil

    url, key, seen = revoked_google_key
    seen.clear()
    (tmp_path / "gcloud").mkdir()
    shutil.copy(key, tmp_path / "gcloud" / "application_default_credentials.json")
    r = run_cli("inspect", "gs://bkt/ds", {"STORAGE_EMULATOR_HOST": url, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")},
                tmp_path)
    line = one_error_line(r)
    assert seen == ["POST /token"], seen
    assert line.startswith("error: gs://bkt/ds/manifest.json: Google refused to renew the credentials from gcloud's "
                           f"application-default file ({tmp_path / 'gcloud' / 'application_default_credentials.json'}) "
                           "(invalid_grant: Invalid JWT Signature.); the service account key may have been"), line


S3_RENEW = ("set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN together from new temporary "
            "credentials (or unset AWS_SESSION_TOKEN if the keys are long-term ones)")


def test_an_s3_session_token_it_did_not_issue_fails_at_once(tmp_path, monkeypatch):
    """moto checking signatures: a user's long-term keys with a stale AWS_SESSION_TOKEN beside them, which S3
    answers with 400 InvalidToken (to a HEAD: a bare 400, no code). It read "could not be read after 3 tries
    ([Errno 22] Bad Request)", and push, verify and pull tried every shard."""
    import time

    import boto3

    skip_without_s3()
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "2")  # creating the user and its key; then every request
    with moto_s3(tmp_path) as s3:
        iam = boto3.client("iam", endpoint_url=s3.endpoint, aws_access_key_id="testing",
                           aws_secret_access_key="testing", region_name="us-east-1")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        env = {**s3.env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
               "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEStale"}
        for command in ("inspect", "verify", "pull", "push"):
            start = time.monotonic()
            line = one_error_line(run_cli(command, "s3://bkt/ds", env, tmp_path))
            assert time.monotonic() - start < 10, command
            target = "s3://bkt/ds" if command == "push" else "s3://bkt/ds/manifest.json"
            assert line == (f"error: {target}: S3 refused the session token (HTTP 400 InvalidToken: The provided "
                            f"token is malformed or otherwise invalid.); renew it: {S3_RENEW}"), line
    assert not (tmp_path / "pulled").exists()


@pytest.fixture(scope="module")
def expired_s3_token():
    """An S3 endpoint answering as S3 does a request signed with an expired session token: 400 with no body
    to a HEAD, and S3's XML error ExpiredToken to anything else. Records each request."""
    seen: list[str] = []

    def refuse(handler):
        seen.append(f"{handler.command} {handler.path}")
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code><Message>The provided '
                b"token has expired.</Message><Token-0>FwoGZXIvYXdzEOld</Token-0><RequestId>4442587FB7D0A2F9"
                b"</RequestId><HostId>dGVzdA==</HostId></Error>")
        send_whole(handler, 400, b"" if handler.command == "HEAD" else body, {"Content-Type": "application/xml"})

    with serve_script(refuse) as url:
        yield url, seen


@pytest.mark.parametrize("command", ["inspect", "pull", "train"])
def test_an_expired_s3_session_token_of_a_profile_fails_at_once_naming_it(expired_s3_token, tmp_path, command):
    """A profile's temporary credentials, expired: the HEAD (and botocore's HEAD of the bucket, looking for
    its region), one listing to learn why, then the line naming the profile. It read "could not be read
    after 3 tries ([Errno 22] Bad Request)"."""
    import time

    skip_without_s3()
    if command == "train":
        pytest.importorskip("torch")
    url, seen = expired_s3_token
    seen.clear()
    (tmp_path / "credentials").write_text("[lab]\naws_access_key_id = ASIAEXAMPLE\naws_secret_access_key = s\n"
                                          "aws_session_token = FwoGZXIvYXdzEOld\n")
    (tmp_path / "config").write_text("")
    env = {"AWS_PROFILE": "lab", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
           "AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    start = time.monotonic()
    r = run_cli(command, "s3://bkt/ds", env, tmp_path,
                drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    line = one_error_line(r)
    assert time.monotonic() - start < 10 and len(seen) == 3, (time.monotonic() - start, seen)
    assert seen[:2] == ["HEAD /bkt/ds/manifest.json", "HEAD /bkt"] and seen[2].startswith("GET /bkt?list-type=2"), seen
    assert line == ("error: s3://bkt/ds/manifest.json: S3 refused the session token (HTTP 400 ExpiredToken: The "
                    "provided token has expired.); renew it: refresh the profile 'lab' (`aws sso login --profile "
                    "lab`, or new keys and aws_session_token in ~/.aws/credentials)"), line
    assert not (tmp_path / "pulled").exists() and not (tmp_path / "run").exists()


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
