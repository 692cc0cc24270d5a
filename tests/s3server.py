"""An S3-compatible server on 127.0.0.1 for tests: moto's standalone server in a child process.

    with moto_s3(tmp_path) as s3:
        s3.env        # AWS_* variables that point boto3/s3fs at it (set them in the tests' processes)
        s3.client     # a boto3 client for it (create buckets, delete objects)

Credentials are fixed test values and config files point at empty files, so nothing of the user's AWS
set-up is read; the server is stopped (and its process group killed) at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.childserver import child_server


def skip_without_s3() -> None:
    """Skip (with the reason) where the s3 extra or moto's server mode is not installed."""
    if importlib.util.find_spec("s3fs") is None:
        pytest.skip('the s3 extra is not installed: pip install -e ".[s3]"')
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        pytest.skip('moto\'s server mode is not installed: pip install "moto[server]"')


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]
    client: Any


@contextlib.contextmanager
def moto_s3(tmp: Path, timeout: float = 30.0) -> Iterator[S3]:
    empty = tmp / "aws-empty"
    empty.write_text("")
    command = lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]  # noqa: E731
    with child_server(command, "/moto-api/", "moto server", timeout) as endpoint:
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": str(empty),
               "AWS_SHARED_CREDENTIALS_FILE": str(empty), "AWS_EC2_METADATA_DISABLED": "true"}
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        yield S3(endpoint, env, client)


@contextlib.contextmanager
def s3_env(s3: S3) -> Iterator[None]:
    """The server's AWS_* variables set in this process (and fsspec's cached clients dropped before and
    after, so no client made for other settings is reused)."""
    import s3fs

    mp = pytest.MonkeyPatch()
    for k, v in s3.env.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(k, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        mp.undo()
