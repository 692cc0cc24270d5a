"""What each dataset downloads, and from where. Every file goes through `avdata.fetch.download.fetch_files`.

- cremad: the raw media of CREMA-D from the repository's Git LFS media address (files and sha256 pinned
  in manifests/cremad/files.tsv). Default subset AudioWAV + VideoFlash; `include=("mp3",)` adds AudioMP3.
- mnistdvs: the MNIST-DVS zips grabbed_data0.zip .. grabbed_data9.zip from the IMSE-CNM CAVIAR site.
  No checksums are published: what is fetched is recorded in `<dest>/SHA256SUMS`.
- ntidigits: the N-TIDIGITS18 HDF5 file (the one tonic 1.7 downloads), checked against its md5.
- urbansound8k-av: the Kaggle dataset lingyueguo/urbansound8k-av through the Kaggle HTTP API (basic
  auth with a Kaggle API token), saved as `<dest>/urbansound8k-av.zip`.
- mnistdvs-ntidigits: mnistdvs and ntidigits into the same folder (what `avdata prepare
  mnistdvs-ntidigits --raw` reads).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from avdata.atomic import atomic_write_text
from avdata.fetch.download import DownloadReport, RemoteFile, fetch_files
from avdata.errors import AvdataError
from avdata.fetch.sources import SourceFile, load_source_list, pinned_sources
from avdata.fetch.urls import join_url

log = logging.getLogger("avdata.fetch.download")

DATASETS = ("cremad", "urbansound8k-av", "mnistdvs", "ntidigits", "mnistdvs-ntidigits")

CREMAD_MIRROR = "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master"
#: A mirror of the CREMA-D repository on GitLab; its raw-file address is what `--mirror` would take.
CREMAD_GITLAB_MIRROR = "https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/master"
CREMAD_MODALITIES = {"wav": "AudioWAV", "video": "VideoFlash", "mp3": "AudioMP3"}
CREMAD_DEFAULT = ("wav", "video")
_MODALITY_ALIASES = {"wav": "wav", "audiowav": "wav", "audio": "wav", "video": "video", "flv": "video",
                     "videoflash": "video", "mp3": "mp3", "audiomp3": "mp3"}

MNISTDVS_BASE = "http://www2.imse-cnm.csic.es/caviar/MNIST_DVS"
MNISTDVS_FILES = [f"grabbed_data{d}.zip" for d in range(10)]

NTIDIGITS_URL = ("https://www.dropbox.com/scl/fi/1x4lxt9yyw25sc3tez8oi/n-tidigits.hdf5"
                 "?e=2&rlkey=w8gi5udvib2zqzosusa5tr3wq&dl=1")
NTIDIGITS_FILE = "n-tidigits.hdf5"
NTIDIGITS_MD5 = "360a2d11e5429555c9197381cf6b58e0"

KAGGLE_DATASET = "lingyueguo/urbansound8k-av"
KAGGLE_URL = f"https://www.kaggle.com/api/v1/datasets/download/{KAGGLE_DATASET}"
URBANSOUND_FILE = "urbansound8k-av.zip"

SHA256SUMS = "SHA256SUMS"


# ------------------------------------------------------------------------------------------- CREMA-D


def cremad_clip(path: str) -> str:
    """The clip id of a CREMA-D media path: 'AudioWAV/1001_DFA_ANG_XX.wav' -> '1001_DFA_ANG_XX'."""
    return Path(path).stem


def _modality(name: str) -> str:
    key = name.strip().lower()
    if key not in _MODALITY_ALIASES:
        raise AvdataError(f"unknown CREMA-D modality {name!r}; choose from wav, video, mp3")
    return _MODALITY_ALIASES[key]


def parse_actors(spec: str | Sequence[str] | None) -> list[str] | None:
    """'1001,1002' (or a list of such strings) -> ['1001', '1002']; None stays None."""
    if spec is None:
        return None
    parts = [spec] if isinstance(spec, str) else list(spec)
    actors = [a.strip() for p in parts for a in p.split(",") if a.strip()]
    bad = [a for a in actors if not a.isdigit()]
    if bad:
        raise AvdataError(f"actor ids are numbers such as 1001; got {', '.join(bad)}")
    return actors or None


def select_cremad(
    files: Sequence[SourceFile],
    include: Sequence[str] = (),
    limit: int | None = None,
    actors: Sequence[str] | str | None = None,
) -> list[SourceFile]:
    """The CREMA-D files to fetch: the default modalities (WAV + FLV) plus `include` (e.g. "mp3"), for
    the clips of `actors` (all when None), then the first `limit` clips in sorted clip order (every
    selected modality of each clip)."""
    mods = {_modality(m) for m in (*CREMAD_DEFAULT, *include)}
    dirs = {CREMAD_MODALITIES[m] for m in mods}
    chosen = [f for f in files if f.path.split("/", 1)[0] in dirs]
    if not chosen:
        raise AvdataError(f"the source list has no files under {', '.join(d + '/' for d in sorted(dirs))}")
    wanted = parse_actors(actors)
    if wanted is not None:
        known = sorted({cremad_clip(f.path).split("_", 1)[0] for f in chosen})
        missing = [a for a in wanted if a not in known]
        if missing:
            raise AvdataError(f"no clips of actor(s) {', '.join(missing)} in the source list; actors are "
                              f"{known[0]}..{known[-1]}")
        chosen = [f for f in chosen if cremad_clip(f.path).split("_", 1)[0] in wanted]
    clips = sorted({cremad_clip(f.path) for f in chosen})
    if limit is not None:
        if limit < 1:
            raise AvdataError("--limit must be at least 1")
        keep = set(clips[:limit])
        chosen = [f for f in chosen if cremad_clip(f.path) in keep]
    return sorted(chosen, key=lambda f: (cremad_clip(f.path), f.path))


def cremad_files(
    include: Sequence[str] = (),
    limit: int | None = None,
    actors: Sequence[str] | str | None = None,
    sources: str | Path | None = None,
) -> list[SourceFile]:
    """The selected files of the pinned list (or of `sources`, a TSV in the same format)."""
    if sources is not None:
        try:
            files = load_source_list(sources)
        except (OSError, ValueError) as exc:
            raise AvdataError(f"--sources {sources}: {exc}") from exc
    else:
        files = pinned_sources("cremad")
    return select_cremad(files, include=include, limit=limit, actors=actors)


# --------------------------------------------------------------------------------------- event data


def _zip_check(path: Path) -> str | None:
    if not zipfile.is_zipfile(path):
        head = path.read_bytes()[:200] if path.stat().st_size else b""
        looks = " (it looks like an HTML page)" if b"<html" in head.lower() or b"<!doctype" in head.lower() else ""
        return f"the server sent something that is not a zip file{looks}"
    return None


def _hdf5_check(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head != b"\x89HDF\r\n\x1a\n":
        return "the server sent something that is not an HDF5 file"
    return None


def read_sha256sums(dest: Path) -> dict[str, str]:
    path = Path(dest) / SHA256SUMS
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if len(digest) == 64 and name:
                out[name.strip()] = digest
    return out


def record_sha256sums(dest: Path, report: DownloadReport, paths: Sequence[str]) -> Path | None:
    """Add the sha256 of the given files (fetched or already present) to `<dest>/SHA256SUMS`."""
    digests = {r.path: r.sha256 for r in (*report.fetched, *report.already_present) if r.sha256}
    new = {p: digests[p] for p in paths if p in digests}
    if not new:
        return None
    sums = read_sha256sums(dest)
    sums.update(new)
    path = Path(dest) / SHA256SUMS
    atomic_write_text(path, "".join(f"{sums[name]}  {name}\n" for name in sorted(sums)))
    return path


def _mirror_hint(name: str, base: str, default: str) -> str:
    if name == "mnistdvs" and base == default:
        return (f"The IMSE-CNM server ({default}) is often unreachable: pass --mirror URL of a copy that holds "
                f"{MNISTDVS_FILES[0]} .. {MNISTDVS_FILES[-1]} (any static web server or a local folder).")
    if name == "ntidigits" and base == default:
        return ("The N-TIDIGITS18 file is served from a Dropbox share link: if it cannot be reached, pass "
                f"--mirror URL of a folder holding {NTIDIGITS_FILE} (md5 {NTIDIGITS_MD5}).")
    return f"Could not fetch from {base}; check the address (--mirror) and your connection."


# ------------------------------------------------------------------------------------------- Kaggle


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


# ------------------------------------------------------------------------------------------- planning


@dataclass
class DownloadPlan:
    """One dataset's download: where from, which files, extra headers, notes for the user."""

    dataset: str
    base_url: str
    files: list[SourceFile | RemoteFile]
    headers: dict[str, str]
    record_sums: bool = False
    hint: str = ""


def plan_download(
    dataset: str,
    dest: str | Path,
    mirror: str | None = None,
    include: Sequence[str] = (),
    limit: int | None = None,
    actors: Sequence[str] | str | None = None,
    sources: str | Path | None = None,
) -> list[DownloadPlan]:
    """The downloads `avdata download DATASET` makes (several for mnistdvs-ntidigits)."""
    if dataset not in DATASETS:
        raise AvdataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    cremad_only = {"--include": bool(include), "--limit": limit is not None, "--actors": bool(actors),
                   "--sources": sources is not None}
    if dataset != "cremad" and any(cremad_only.values()):
        used = ", ".join(k for k, v in cremad_only.items() if v)
        raise AvdataError(f"{used} only applies to cremad, not {dataset}")
    if dataset == "cremad":
        base = mirror or CREMAD_MIRROR
        return [DownloadPlan("cremad", base, list(cremad_files(include, limit, actors, sources)), {})]
    if dataset == "mnistdvs-ntidigits":
        return [*plan_download("mnistdvs", dest, mirror), *plan_download("ntidigits", dest, mirror)]
    if dataset == "mnistdvs":
        base = mirror or MNISTDVS_BASE
        files = [RemoteFile(name, check=_zip_check) for name in MNISTDVS_FILES]
        return [DownloadPlan("mnistdvs", base, files, {}, record_sums=True,
                             hint=_mirror_hint("mnistdvs", base, MNISTDVS_BASE))]
    if dataset == "ntidigits":
        url = NTIDIGITS_URL if mirror is None else join_url(mirror, NTIDIGITS_FILE)
        files = [RemoteFile(NTIDIGITS_FILE, md5=NTIDIGITS_MD5, url=url, check=_hdf5_check)]
        return [DownloadPlan("ntidigits", mirror or NTIDIGITS_URL, files, {}, record_sums=True,
                             hint=_mirror_hint("ntidigits", mirror or NTIDIGITS_URL, NTIDIGITS_URL))]
    # urbansound8k-av
    creds = kaggle_credentials()
    if creds is None and mirror is None:
        raise AvdataError(kaggle_missing_message(Path(dest)))
    if mirror is None:
        url = KAGGLE_URL
    elif mirror.rstrip("/").rsplit("/", 1)[-1].lower().endswith(".zip"):
        url = mirror
    else:
        url = join_url(mirror, URBANSOUND_FILE)
    headers = {"Authorization": _basic_auth(*creds)} if creds else {}
    if creds and mirror is not None:
        log.info("sending the Kaggle credentials of %s to %s (--mirror)", creds[0], url)
    files = [RemoteFile(URBANSOUND_FILE, url=url, check=_zip_check)]
    return [DownloadPlan("urbansound8k-av", url, files, headers, record_sums=True,
                         hint="Kaggle answered with an error: check that the token is valid and that you "
                              f"accepted the dataset's terms at https://www.kaggle.com/datasets/{KAGGLE_DATASET}."
                         if mirror is None else "")]


def download_dataset(
    dataset: str,
    dest: str | Path,
    mirror: str | None = None,
    jobs: int = 8,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    include: Sequence[str] = (),
    limit: int | None = None,
    actors: Sequence[str] | str | None = None,
    sources: str | Path | None = None,
    verify_existing: str = "sha256",
    progress: bool = True,
    stall_seconds: float | None = None,
) -> DownloadReport:
    """Download a dataset's raw files into `dest` (resumable; rerunning skips verified files).
    `stall_seconds`: the stall rule's window (None: the default; 0: off)."""
    dest = Path(dest)
    plans = plan_download(dataset, dest, mirror=mirror, include=include, limit=limit, actors=actors,
                          sources=sources)
    report = DownloadReport(dest=dest)
    for plan in plans:
        part = fetch_files(plan.base_url, plan.files, dest, jobs=jobs, retries=retries, backoff=backoff,
                           timeout=timeout, progress=progress, verify_existing=verify_existing,
                           headers=plan.headers, description=f"{plan.dataset} -> {dest.name or dest}",
                           **({} if stall_seconds is None else {"stall_seconds": stall_seconds}))
        if plan.record_sums:
            unverified = [f.path for f in plan.files if getattr(f, "sha256", None) is None]
            sums = record_sha256sums(dest, part, unverified)
            if sums is not None:
                part.notes.append(f"{plan.dataset}: no sha256 is published for these files; the sha256 of what "
                                  f"was fetched is recorded in {sums} (compare it with another copy).")
        if part.failed and plan.hint and any(r.kind in ("network", "http") for r in part.failed):
            part.notes.append(plan.hint)
            for r in part.failed:
                if r.kind in ("network", "stopped") and plan.hint not in r.reason:
                    r.reason = f"{r.reason}. {plan.hint}"
        report.extend(part)
    return report
