"""Where CREMA-D comes from: `avdata download cremad` and `avdata verify-raw cremad`.

The raw media of the CREMA-D repository from its Git LFS media address (the plain raw address gives LFS
pointer stubs), files and sha256 pinned in lists/files.tsv beside this module. Default subset AudioWAV +
VideoFlash; `--include mp3` adds AudioMP3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from avdata.option_fields import opt
from avdata.datasets.download_plan import MIRROR_HELP, Download, DownloadPlan
from avdata.errors import AvdataError
from avdata.fetch.sources import SourceFile, load_source_list

#: The pinned file list (`files.tsv`) and the published split, demographics and rating files, shipped in the
#: package (the dataset owns its lists, as it owns its addresses).
LISTS = Path(__file__).resolve().parent / "lists"
CREMAD_MIRROR = "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master"
#: A mirror of the CREMA-D repository on GitLab; its raw-file address is what `--mirror` would take.
CREMAD_GITLAB_MIRROR = "https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/master"
CREMAD_MODALITIES = {"wav": "AudioWAV", "video": "VideoFlash", "mp3": "AudioMP3"}
CREMAD_DEFAULT = ("wav", "video")
_MODALITY_ALIASES = {"wav": "wav", "audiowav": "wav", "audio": "wav", "video": "video", "flv": "video",
                     "videoflash": "video", "mp3": "mp3", "audiomp3": "mp3"}


@dataclass
class CremadDownloadOptions:
    """The flags of `avdata download cremad` (all but `mirror` also those of `avdata verify-raw cremad`)."""

    mirror: str | None = opt(None, help=MIRROR_HELP)
    include: list[str] = opt([], help="Also this modality (mp3 = AudioMP3/) besides the default AudioWAV + "
                             "VideoFlash.")
    limit: int | None = opt(None, min=1, help="Only the first N clips in sorted clip order (every selected "
                            "modality of each), e.g. to try the pipeline on a small subset.")
    actors: str | None = opt(None, help="Only these actors' clips, comma-separated ids such as 1001,1002.")
    sources: Path | None = opt(None, help="A file list to use instead of the pinned one "
                               "(avdata/datasets/cremad/lists/files.tsv; same TSV: path, size, sha256).")


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
        except (OSError, UnicodeDecodeError, AvdataError) as exc:
            raise AvdataError(f"--sources {sources}: {exc}") from exc
    else:
        files = pinned_files()
    return select_cremad(files, include=include, limit=limit, actors=actors)


def pinned_files() -> list[SourceFile]:
    """Every raw file of CREMA-D with its size and sha256."""
    return load_source_list(LISTS / "files.tsv")


def selected_files(options: CremadDownloadOptions) -> list[SourceFile]:
    return cremad_files(options.include, options.limit, options.actors, options.sources)


def plan(dest: Path, options: CremadDownloadOptions) -> list[DownloadPlan]:
    return [DownloadPlan("cremad", options.mirror or CREMAD_MIRROR, list(selected_files(options)), {})]


DOWNLOADS = {
    "cremad": Download(CremadDownloadOptions, plan, files=selected_files,
                       help=f"""CREMA-D's raw media, checked against the pinned sha256 list.

Default address: the GitHub LFS media address (the plain raw address gives LFS stubs)
{CREMAD_MIRROR}
or the GitLab mirror of the repository, cs-cooper-lab/crema-d-mirror:
--mirror {CREMAD_GITLAB_MIRROR}
"""),
}
