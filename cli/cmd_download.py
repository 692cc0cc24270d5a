"""`avdata download DATASET --to DIR` and `avdata verify-raw cremad DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.errors import fail

DOWNLOADABLE = ("cremad", "urbansound8k-av", "mnistdvs", "ntidigits", "mnistdvs-ntidigits")
MAX_ROWS = 40


def print_download_summary(report, title: str = "download") -> None:
    """Counts, then each failure's path and reason, then notes for the user."""
    from rich.table import Table

    table = Table(title=f"{title} -> {report.dest}", show_header=True, header_style="bold")
    table.add_column("result")
    table.add_column("files", justify="right")
    table.add_column("bytes", justify="right")
    table.add_row("fetched", str(len(report.fetched)), f"{report.bytes_fetched:,}")
    table.add_row("already there", str(len(report.already_present)),
                  f"{sum(r.bytes for r in report.already_present):,}")
    table.add_row("[red]failed[/]" if report.failed else "failed", str(len(report.failed)), "")
    console.print(table)
    if report.failed:
        fails = Table(title="failures", show_header=True, header_style="bold red", show_lines=False)
        fails.add_column("path", overflow="fold")
        fails.add_column("reason", overflow="fold")
        for r in report.failed[:MAX_ROWS]:
            reason = r.reason
            if r.kind == "checksum" and r.expected_sha256 and r.expected_sha256 not in reason:
                reason += f" (expected sha256 {r.expected_sha256}, got {r.actual_sha256})"
            fails.add_row(r.path, reason)
        console.print(fails)
        if len(report.failed) > MAX_ROWS:
            console.print(f"... and {len(report.failed) - MAX_ROWS} more failures (run with --verbose to log each)")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if report.ok:
        console.print(f"[green]done:[/] {report.summary()} in {report.seconds:.1f}s", highlight=False)
    else:
        console.print(f"[red]incomplete:[/] {report.summary()}; run the same command again to retry "
                      "(verified files are skipped, partial ones resume)", highlight=False)


def download_cmd(
    dataset: str = typer.Argument(..., metavar="DATASET", help="One of: " + ", ".join(DOWNLOADABLE)
                                  + " (mnistdvs-ntidigits = mnistdvs and ntidigits into the same folder)."),
    to: Path = typer.Option(..., "--to", help="Folder to download into (created). Rerunning into it skips "
                            "verified files and resumes partial ones (<file>.part)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Fetch from this base URL (or local folder) "
                                         "instead of the default address (listed above). urbansound8k-av: "
                                         "replaces the Kaggle API address; a URL ending in .zip is used as is."),
    jobs: int = typer.Option(8, "--jobs", "-j", min=1, help="Files downloaded at once."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="cremad: also fetch this modality "
                                                "(mp3 = AudioMP3/). The default is AudioWAV + VideoFlash."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="cremad: only the first N clips in "
                                        "sorted clip order (every selected modality of each), e.g. to try "
                                        "the pipeline on a small subset."),
    actors: Optional[str] = typer.Option(None, "--actors", help="cremad: only these actors' clips, "
                                         "comma-separated ids such as 1001,1002."),
    sources: Optional[Path] = typer.Option(None, "--sources", help="cremad: a file list to use instead of the "
                                           "pinned manifests/cremad/files.tsv (same TSV: path, size, sha256)."),
    retries: int = typer.Option(4, "--retries", min=0, help="Retries per file after a failure, with "
                                "exponential back-off (a dropped connection resumes without using one)."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="Seconds to wait before the first retry "
                                  "of a file; doubled for each further retry (at most 60)."),
    quick: bool = typer.Option(False, "--quick", help="Trust files already present when their size matches "
                               "(default: re-check their sha256)."),
    stall_timeout: float = typer.Option(60.0, "--stall-timeout", min=0.0, help="Abort an attempt (and retry it) "
                                        "when fewer than 16 KiB arrive in this many seconds; 0 turns the rule off."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every file fetched or skipped."),
) -> None:
    """Download a dataset's raw files, verified by size and sha256 (md5 for N-TIDIGITS).

    Files are written as <file>.part and renamed only once verified.
    A rerun skips good files and resumes partial ones.
    Exit code 1 when any file failed, 2 on a usage or setup problem.

    Default addresses (--mirror replaces them):

    cremad: the GitHub LFS media address (the plain raw address gives LFS stubs)
    https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master
    or the GitLab mirror of the repository, cs-cooper-lab/crema-d-mirror:
    --mirror https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/master

    mnistdvs: grabbed_data0.zip .. grabbed_data9.zip from
    http://www2.imse-cnm.csic.es/caviar/MNIST_DVS (often down: use --mirror).
    No checksums are published: the sha256 of each fetched file goes to SHA256SUMS.

    ntidigits: n-tidigits.hdf5 from the Dropbox link tonic uses, checked by md5.

    urbansound8k-av: Kaggle dataset lingyueguo/urbansound8k-av via the Kaggle API;
    token in ~/.kaggle/kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY.
    """
    from avdata.datasets.remote import download_dataset

    setup_logging(verbose)
    if dataset not in DOWNLOADABLE:
        fail(AvdataError(f"unknown dataset {dataset!r}; choose from {', '.join(DOWNLOADABLE)}"))
    try:
        report = download_dataset(dataset, to, mirror=mirror, jobs=jobs, retries=retries, backoff=backoff,
                                  include=include or (), limit=limit, actors=actors, sources=sources,
                                  verify_existing="size" if quick else "sha256", stall_seconds=stall_timeout)
    except AvdataError as exc:
        fail(exc)
        return
    print_download_summary(report)
    if not report.ok:
        raise typer.Exit(1)


def verify_raw_cmd(
    dataset: str = typer.Argument(..., metavar="DATASET", help="Dataset with a pinned file list: cremad."),
    raw_dir: Path = typer.Argument(..., metavar="DIR", help="The raw folder (a clone of the repository or an "
                                   "`avdata download` folder): AudioWAV/, VideoFlash/, ..."),
    sources: Optional[Path] = typer.Option(None, "--sources", help="A file list to check against instead of the "
                                           "pinned manifests/cremad/files.tsv (TSV: path, size, sha256)."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="Also check this modality (mp3). "
                                                "The default is AudioWAV + VideoFlash."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N clips (as download)."),
    actors: Optional[str] = typer.Option(None, "--actors", help="Only these actors' clips, e.g. 1001,1002."),
    quick: bool = typer.Option(False, "--quick", help="Check presence, LFS stubs and sizes only (no sha256)."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Files hashed at once."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every problem file."),
) -> None:
    """Check a raw copy against the pinned list: ok, missing, LFS pointer stub, size or sha256 mismatch.

    Each problem is listed with its fix. Exit code 1 when any file is not ok.
    """
    from rich.table import Table

    from avdata.datasets.remote import cremad_files
    from avdata.fetch.verify_raw import FIXES, verify_raw

    setup_logging(verbose)
    if dataset != "cremad":
        fail(AvdataError(f"verify-raw knows the file list of cremad only, not {dataset!r}"))
    try:
        files = cremad_files(include=include or (), limit=limit, actors=actors, sources=sources)
        report = verify_raw(raw_dir, files, check_hash=not quick, jobs=jobs)
    except AvdataError as exc:
        fail(exc)
        return
    table = Table(title=f"verify-raw {raw_dir}", header_style="bold")
    table.add_column("status")
    table.add_column("files", justify="right")
    for status, n in report.counts.items():
        table.add_row(status if status == "ok" or not n else f"[red]{status}[/]", str(n))
    console.print(table)
    problems = report.problems
    if problems:
        rows = Table(title="problems", header_style="bold red")
        rows.add_column("path", overflow="fold")
        rows.add_column("status")
        rows.add_column("detail", overflow="fold")
        for c in problems[:MAX_ROWS]:
            rows.add_row(c.path, c.status, c.detail)
        console.print(rows)
        if len(problems) > MAX_ROWS:
            console.print(f"... and {len(problems) - MAX_ROWS} more (--verbose logs each)")
        for status in ("missing", "lfs-pointer", "size-mismatch", "hash-mismatch"):
            if report.counts[status]:
                console.print(f"[yellow]fix ({status}):[/] {FIXES[status]}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]ok:[/] {report.summary()}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("download")(download_cmd)
    app.command("verify-raw")(verify_raw_cmd)
