"""A Google Cloud Storage emulator on 127.0.0.1 for tests (gcp-storage-emulator, in a child process).

    with gcs_emulator() as url:   # STORAGE_EMULATOR_HOST set in this process; gcsfs talks to it
        make_bucket(url, "bkt")

gcsfs reads STORAGE_EMULATOR_HOST and then sends no credentials, so nothing of the user's Google set-up
is read. The emulator keeps objects in memory and is stopped (its process group killed) at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import urllib.request
from typing import Iterator

import pytest

from tests.childserver import child_server


def skip_without_gcs() -> None:
    """Skip (with the reason) where the gcs extra or the emulator is not installed."""
    if importlib.util.find_spec("gcsfs") is None:
        pytest.skip('the gcs extra is not installed: pip install -e ".[gcs]"')
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        pytest.skip("the GCS emulator is not installed: pip install gcp-storage-emulator")


def make_bucket(url: str, name: str) -> None:
    req = urllib.request.Request(f"{url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).close()


@contextlib.contextmanager
def gcs_emulator(timeout: float = 30.0) -> Iterator[str]:
    import gcsfs

    command = lambda port: [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",  # noqa: E731
                            "--port", str(port), "--in-memory"]
    mp = pytest.MonkeyPatch()
    with child_server(command, "/storage/v1/b?project=test", "GCS emulator", timeout) as url:
        mp.setenv("STORAGE_EMULATOR_HOST", url)
        mp.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        gcsfs.GCSFileSystem.clear_instance_cache()
        try:
            yield url
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()
            mp.undo()
