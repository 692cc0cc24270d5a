"""Where UrbanSound8K-AV comes from: `avdata download urbansound8k-av`.

The Kaggle dataset lingyueguo/urbansound8k-av through the Kaggle HTTP API (basic auth with a Kaggle API
token), saved as `<dest>/urbansound8k-av.zip`, which `avdata prepare urbansound8k-av --raw` reads as it is.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from avdata.option_fields import opt
from avdata.datasets.download_plan import MIRROR_HELP, Download, DownloadPlan, zip_check
from avdata.errors import AvdataError
from avdata.fetch.download import RemoteFile
from avdata.fetch.urls import join_url

log = logging.getLogger("avdata.fetch.download")

KAGGLE_DATASET = "lingyueguo/urbansound8k-av"
KAGGLE_URL = f"https://www.kaggle.com/api/v1/datasets/download/{KAGGLE_DATASET}"
URBANSOUND_FILE = "urbansound8k-av.zip"


def kaggle_url() -> str:
    """The Kaggle API address of the dataset (module-level so tests can point it at a loopback server)."""
    return KAGGLE_URL


@dataclass
class UrbanSoundDownloadOptions:
    """The flags of `avdata download urbansound8k-av`."""

    mirror: str | None = opt(None, help=MIRROR_HELP + " It replaces the Kaggle API address and gets no Kaggle "
                             "token; a URL ending in .zip is used as is.")


def kaggle_credentials() -> tuple[str, str] | None:
    """(username, key) from KAGGLE_USERNAME/KAGGLE_KEY, else from kaggle.json in $KAGGLE_CONFIG_DIR or
    ~/.kaggle; None when there are none."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return user, key
    folder = Path(os.environ["KAGGLE_CONFIG_DIR"]) if os.environ.get("KAGGLE_CONFIG_DIR") else Path.home() / ".kaggle"
    path = folder / "kaggle.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AvdataError(f"{path}: not a readable Kaggle token ({exc}); download a new one from "
                              "kaggle.com -> Settings -> API -> Create New Token") from exc
        if data.get("username") and data.get("key"):
            return str(data["username"]), str(data["key"])
        raise AvdataError(f"{path}: needs both \"username\" and \"key\"; download a new token from "
                          "kaggle.com -> Settings -> API -> Create New Token")
    return None


def kaggle_missing_message(dest: Path) -> str:
    return (
        f"no Kaggle API credentials found, needed to download {KAGGLE_DATASET}. Either: "
        "(1) create a token at kaggle.com -> Settings -> API -> Create New Token, save the kaggle.json it "
        "gives you as ~/.kaggle/kaggle.json and run `chmod 600 ~/.kaggle/kaggle.json`; or "
        "(2) set the environment variables KAGGLE_USERNAME and KAGGLE_KEY; or "
        f"(3) download the zip by hand from https://www.kaggle.com/datasets/{KAGGLE_DATASET} and pass it to "
        f"`avdata prepare urbansound8k-av --raw ZIP` (no `avdata download` needed). Then run this again "
        f"(it saves to {Path(dest) / URBANSOUND_FILE})."
    )


def _basic_auth(user: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode("ascii")


def plan(dest: Path, options: UrbanSoundDownloadOptions) -> list[DownloadPlan]:
    mirror = options.mirror
    creds = kaggle_credentials()
    if creds is None and mirror is None:
        raise AvdataError(kaggle_missing_message(Path(dest)))
    if mirror is None:
        url = kaggle_url()
    elif mirror.rstrip("/").rsplit("/", 1)[-1].lower().endswith(".zip"):
        url = mirror
    else:
        url = join_url(mirror, URBANSOUND_FILE)
    # the Kaggle token goes to the Kaggle API only: whoever runs a mirror must not receive the key
    headers = {"Authorization": _basic_auth(*creds)} if creds and mirror is None else {}
    files = [RemoteFile(URBANSOUND_FILE, url=url, check=zip_check)]
    return [DownloadPlan("urbansound8k-av", url, files, headers, record_sums=True,
                         hint="The Kaggle API could not be reached or refused the request: check the network; "
                              "if Kaggle answered (HTTP 401/403), check that the token is valid and that you "
                              f"accepted the dataset's terms at https://www.kaggle.com/datasets/{KAGGLE_DATASET}; "
                              "or download the zip there by hand and pass it to `avdata prepare urbansound8k-av "
                              "--raw ZIP`."
                         if mirror is None else "")]


DOWNLOADS = {
    "urbansound8k-av": Download(UrbanSoundDownloadOptions, plan,
                                help=f"""UrbanSound8K-AV: the Kaggle dataset {KAGGLE_DATASET} as one zip.

Default address: the Kaggle API; token in ~/.kaggle/kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY.
No checksums are published: the sha256 of the fetched zip goes to SHA256SUMS.
"""),
}
