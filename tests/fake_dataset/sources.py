"""`avdata download fake --mirror FOLDER`: one zip, unpacked after the download (a finish step, as AVE's)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from avdata.datasets.download_plan import Download, DownloadPlan, MirrorOptions, zip_check
from avdata.errors import AvdataError
from avdata.fetch.download import DownloadReport, RemoteFile


def unpack(dest: Path, report: DownloadReport) -> None:
    with zipfile.ZipFile(dest / "fake.zip") as zf:
        names = [n for n in zf.namelist() if n.endswith(".txt") and "/" not in n]
        for n in names:
            (dest / n).write_bytes(zf.read(n))
    report.notes.append(f"fake: {len(names)} files unpacked")


def plan(dest: Path, options: MirrorOptions) -> list[DownloadPlan]:
    if options.mirror is None:
        raise AvdataError("fake has no default address: pass --mirror")
    return [DownloadPlan("fake", options.mirror, [RemoteFile("fake.zip", check=zip_check)], {}, record_sums=True,
                         finish=unpack)]


DOWNLOADS = {"fake": Download(MirrorOptions, plan, help="The fake dataset's zip from a mirror, then unpacked.")}
