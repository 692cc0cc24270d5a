"""Where AVE comes from: `avdata download ave --to DIR --mirror URL`.

The official copy of the videos is a zip on Google Drive, linked from the README of the authors'
repository (https://github.com/YapengTian/AVE-ECCV18), whose `data/` folder holds the four lists. Google
Drive answers a plain HTTP request for a file this large with an HTML page asking to confirm the download
(it cannot scan it for viruses) and hands out the file only through that page's form and cookies, so no
default address is scripted here. Fetch it by hand once: open the link in a browser, save the zip as
`AVE.zip` in a folder next to `Annotations.txt`, `trainSet.txt`, `valSet.txt` and `testSet.txt`, then
either pass that folder to `avdata prepare ave --raw` directly, or use it (or a lab web server that serves
it) as the mirror: `avdata download ave --to raw/ave --mirror FOLDER_OR_URL`.

The download goes through the project's one engine (`avdata.fetch.download.fetch_files`: resumable, retried,
checked: the zip must be a zip, each list must parse as an AVE list, not an HTML page). No checksums are
published, so the sha256 of what was fetched is recorded in `<dest>/SHA256SUMS`. Then `AVE.zip` is unpacked
into `<dest>` (videos and lists only, safely: `avdata.fetch.unpack.unpack_zip`), which is what
`avdata prepare ave --raw` reads; the zip is kept, so a rerun checks it and does nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avdata.option_fields import opt
from avdata.datasets.ave.annotations import TEXT_FILES, read_rows
from avdata.datasets.ave.recipe import ZIP_NAME, wanted_member
from avdata.fetch.unpack import unpack_zip
from avdata.datasets.download_plan import Download, DownloadPlan, zip_check
from avdata.errors import AvdataError
from avdata.fetch.download import DownloadReport, RemoteFile

OFFICIAL = "https://github.com/YapengTian/AVE-ECCV18"
FILES = (ZIP_NAME, *TEXT_FILES)


@dataclass
class AveDownloadOptions:
    """The flags of `avdata download ave`."""

    mirror: str | None = opt(None, help="Base URL (or local folder) holding AVE.zip, Annotations.txt, "
                             "trainSet.txt, valSet.txt and testSet.txt; needed, as there is no default address.")


def no_mirror_message(dest: Path) -> str:
    return (
        "AVE has no address a plain download can use: the official zip is on Google Drive (linked from the README "
        f"of {OFFICIAL}), which serves files this large only after a confirmation page in a browser. Fetch it by "
        "hand: download the zip in a browser and save it as AVE.zip in a folder, put Annotations.txt, "
        f"trainSet.txt, valSet.txt and testSet.txt from the data/ folder of {OFFICIAL} beside it, then run "
        f"`avdata download ave --to {dest} --mirror FOLDER` (or a URL of a web server holding those five "
        "files), or pass the folder straight to `avdata prepare ave --raw FOLDER`."
    )


def _list_check(path: Path) -> str | None:
    """Why a fetched list is unusable (an HTML page, another file), or None."""
    try:
        rows = read_rows(path, path.name.removesuffix(".part"))
    except AvdataError as exc:
        head = path.read_bytes()[:200].lower()
        looks = " (it looks like an HTML page)" if b"<html" in head or b"<!doctype" in head else ""
        return f"the server sent something that is not an AVE list{looks}: {exc}"
    return None if rows else "the server sent an AVE list with no rows"


def unpack_after_download(dest: Path, report: DownloadReport) -> None:
    """Unpack the fetched AVE.zip into `dest`: its videos, and its lists where they do not land on the
    downloaded ones in the root."""
    names = unpack_zip(dest / ZIP_NAME, dest, keep=lambda n: wanted_member(n) and n not in TEXT_FILES)
    videos = sum(1 for n in names if n.lower().endswith(".mp4"))
    report.notes.append(f"ave: {videos:,} videos of {ZIP_NAME} unpacked under {dest} "
                        f"(`avdata prepare ave --raw {dest}` reads them; {ZIP_NAME} may be deleted once prepared)")


def plan(dest: Path, options: AveDownloadOptions) -> list[DownloadPlan]:
    """AVE.zip and the four lists from `options.mirror` (an http(s) base URL or a local folder), then
    unpacked."""
    mirror = options.mirror
    if mirror is None:
        raise AvdataError(no_mirror_message(Path(dest)))
    files = [RemoteFile(ZIP_NAME, check=zip_check)] + [RemoteFile(name, check=_list_check) for name in TEXT_FILES]
    hint = (f"Could not fetch from {mirror}: the mirror must hold {', '.join(FILES)} (check the address and your "
            f"connection). Without a mirror: {no_mirror_message(Path(dest))}")
    return [DownloadPlan("ave", mirror, files, {}, record_sums=True, hint=hint, finish=unpack_after_download)]


HELP = f"""AVE.zip and its four lists from --mirror (the official zip is on Google Drive: fetch it by hand).

Google Drive serves a file this large only through a confirmation page in a browser, so no default
address is scripted. Download the zip linked from {OFFICIAL} in a browser, save it as AVE.zip beside
Annotations.txt, trainSet.txt, valSet.txt and testSet.txt (from that repository's data/ folder), then
give that folder (or a web server holding the five files) as --mirror, or pass the folder straight to
`avdata prepare ave --raw`. After the download AVE.zip is unpacked into --to.
No checksums are published: the sha256 of what was fetched goes to SHA256SUMS.
"""

DOWNLOADS = {"ave": Download(AveDownloadOptions, plan, help=HELP)}
