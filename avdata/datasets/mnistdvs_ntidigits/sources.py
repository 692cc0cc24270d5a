"""Where MNISTDVS-NTIDIGITS comes from: `avdata download mnistdvs`, `ntidigits`, or both at once
(`mnistdvs-ntidigits`, into the same folder, which is what `avdata prepare mnistdvs-ntidigits --raw` reads).

- mnistdvs: the zips grabbed_data0.zip .. grabbed_data9.zip from the IMSE-CNM CAVIAR site. No checksums
  are published: what is fetched is recorded in `<dest>/SHA256SUMS`.
- ntidigits: the N-TIDIGITS18 HDF5 file (the one tonic 1.7 downloads), checked against its md5.
"""

from __future__ import annotations

from pathlib import Path

from avdata.datasets.download_plan import Download, DownloadPlan, MirrorOptions, mirror_hint, zip_check
from avdata.fetch.download import RemoteFile
from avdata.fetch.urls import join_url

MNISTDVS_BASE = "http://www2.imse-cnm.csic.es/caviar/MNIST_DVS"
MNISTDVS_FILES = [f"grabbed_data{d}.zip" for d in range(10)]

NTIDIGITS_URL = ("https://www.dropbox.com/scl/fi/1x4lxt9yyw25sc3tez8oi/n-tidigits.hdf5"
                 "?e=2&rlkey=w8gi5udvib2zqzosusa5tr3wq&dl=1")
NTIDIGITS_FILE = "n-tidigits.hdf5"
NTIDIGITS_MD5 = "360a2d11e5429555c9197381cf6b58e0"


def _hdf5_check(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head != b"\x89HDF\r\n\x1a\n":
        return "the server sent something that is not an HDF5 file"
    return None


def plan_mnistdvs(dest: Path, options: MirrorOptions) -> list[DownloadPlan]:
    base = options.mirror or MNISTDVS_BASE
    hint = (f"The IMSE-CNM server ({MNISTDVS_BASE}) is often unreachable: pass --mirror URL of a copy that holds "
            f"{MNISTDVS_FILES[0]} .. {MNISTDVS_FILES[-1]} (any static web server or a local folder)."
            if base == MNISTDVS_BASE else mirror_hint(base))
    files = [RemoteFile(name, check=zip_check) for name in MNISTDVS_FILES]
    return [DownloadPlan("mnistdvs", base, files, {}, record_sums=True, hint=hint)]


def plan_ntidigits(dest: Path, options: MirrorOptions) -> list[DownloadPlan]:
    mirror = options.mirror
    url = NTIDIGITS_URL if mirror is None else join_url(mirror, NTIDIGITS_FILE)
    hint = ("The N-TIDIGITS18 file is served from a Dropbox share link: if it cannot be reached, pass "
            f"--mirror URL of a folder holding {NTIDIGITS_FILE} (md5 {NTIDIGITS_MD5})."
            if mirror is None else mirror_hint(mirror))
    files = [RemoteFile(NTIDIGITS_FILE, md5=NTIDIGITS_MD5, url=url, check=_hdf5_check)]
    return [DownloadPlan("ntidigits", mirror or NTIDIGITS_URL, files, {}, record_sums=True, hint=hint)]


def plan_both(dest: Path, options: MirrorOptions) -> list[DownloadPlan]:
    return [*plan_mnistdvs(dest, options), *plan_ntidigits(dest, options)]


_MNISTDVS_HELP = (f"MNIST-DVS: {MNISTDVS_FILES[0]} .. {MNISTDVS_FILES[-1]} from {MNISTDVS_BASE} (often down: "
                  "use --mirror).\n\nNo checksums are published: the sha256 of each fetched file goes to SHA256SUMS.")
_NTIDIGITS_HELP = f"N-TIDIGITS18: {NTIDIGITS_FILE} from the Dropbox link tonic uses, checked by md5."

DOWNLOADS = {
    "mnistdvs": Download(MirrorOptions, plan_mnistdvs, help=_MNISTDVS_HELP),
    "ntidigits": Download(MirrorOptions, plan_ntidigits, help=_NTIDIGITS_HELP),
    "mnistdvs-ntidigits": Download(MirrorOptions, plan_both, help="MNIST-DVS and N-TIDIGITS18 into the same "
                                   f"folder.\n\n{_MNISTDVS_HELP}\n\n{_NTIDIGITS_HELP}"),
}
