"""`avdata download <dataset> --to DIR` and `avdata verify-raw <dataset> DIR`, one command per name in the
registry's downloads (`avdata.datasets.registry.downloads`), its own flags from its options dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from avdata.cli.dataset_group import dataset_command, dataset_group
from avdata.cli.errors import fail
from avdata.cli.help_format import typer_app
from avdata.errors import AvdataError
from avdata.option_fields import opt
from avdata.progress import console, setup_logging

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


def _download_names() -> list[str]:
    from avdata.datasets.registry import downloads

    return list(downloads())


def _verify_names() -> list[str]:
    from avdata.datasets.registry import downloads

    return [name for name, d in downloads().items() if d.files is not None]


@dataclasses.dataclass
class DownloadRunOptions:
    """The options every `avdata download <name>` takes, declared once (its own come from its sources)."""

    to: Path = opt(help="Folder to download into (created). Rerunning into it skips verified files and resumes "
                   "partial ones (<file>.part).")
    jobs: int = opt(8, short="j", min=1, help="Files downloaded at once.")
    retries: int = opt(4, min=0, help="Retries per file after a failure, with exponential back-off (a dropped "
                       "connection resumes without using one).")
    backoff: float = opt(1.0, min=0.0, help="Seconds to wait before the first retry of a file; doubled for each "
                         "further retry (at most 60).")
    quick: bool = opt(False, negatable=False, help="Trust files already present when their size matches (default: "
                      "re-check their sha256).")
    stall_timeout: float = opt(60.0, min=0.0, help="Abort an attempt (and retry it) when fewer than 16 KiB arrive "
                               "in this many seconds; 0 turns the rule off.")
    verbose: bool = opt(False, short="v", negatable=False, help="Log every file fetched or skipped.")


_DOWNLOAD_NOTE = """

Files are written as <file>.part and renamed only once verified. A rerun skips good files and resumes
partial ones. Exit code 1 when any file failed, 2 on a usage or setup problem (a full disk among
them), 130 when stopped with Ctrl-C, 143 with `kill`."""


def build_download_command(name: str) -> Any:
    """`avdata download <name>`: the common flags (`DownloadRunOptions`), then the dataset's download options."""
    from avdata.datasets.registry import get_download

    download = get_download(name)

    def body(run: DownloadRunOptions, options: Any) -> None:
        from avdata.datasets.download_plan import download_dataset
        from avdata.cli.stopping import interrupted
        from avdata.prepare.lifeline import sigterm_as_interrupt

        setup_logging(run.verbose)
        try:
            with sigterm_as_interrupt():  # `kill`, a batch system's time limit: stop as on Ctrl-C
                report = download_dataset(name, run.to, jobs=run.jobs, retries=run.retries, backoff=run.backoff,
                                          verify_existing="size" if run.quick else "sha256",
                                          stall_seconds=run.stall_timeout, **dataclasses.asdict(options))
        except AvdataError as exc:
            fail(exc)
        except KeyboardInterrupt as exc:
            interrupted(f"verified files in {run.to} are kept and partial ones (.part) resume; run the same "
                        "command again to go on", exc)
        print_download_summary(report)
        if not report.ok:
            raise typer.Exit(1)

    return dataset_command(name, (DownloadRunOptions, download.options), body, help=download.help + _DOWNLOAD_NOTE)


def build_verify_raw_command(name: str) -> Any:
    """`avdata verify-raw <name> DIR`: the selection options of the dataset's download (not --mirror)."""
    from avdata.datasets.registry import get_download

    download = get_download(name)
    files = download.files
    assert files is not None, f"{name} has no pinned file list"  # verify_raw_names() lists only those that have one

    def body(
        options: Any,
        raw_dir: Path = typer.Argument(..., metavar="DIR", help="The raw folder (a clone of the dataset's "
                                       "repository or an `avdata download` folder)."),
        quick: bool = typer.Option(False, "--quick", help="Check presence, LFS stubs and sizes only (no sha256)."),
        jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Files hashed at once."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every problem file."),
    ) -> None:
        from avdata.fetch.verify_raw import verify_raw

        setup_logging(verbose)
        try:
            report = verify_raw(raw_dir, files(options), check_hash=not quick, jobs=jobs)
        except AvdataError as exc:
            fail(exc)
        print_verify_summary(raw_dir, report)
        if report.problems:
            raise typer.Exit(1)

    return dataset_command(name, download.options, body, exclude=("mirror",),
                           help="Check a raw copy against the pinned list: ok, missing, LFS pointer stub, size or "
                           "sha256 mismatch.\n\nEach problem is listed with its fix. Exit code 1 when any file is "
                           "not ok.")


def print_verify_summary(raw_dir: Path, report: Any) -> None:
    """Counts per status, each problem with its detail, and the fix of each kind of problem."""
    from rich.table import Table

    from avdata.fetch.verify_raw import FIXES

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
    else:
        console.print(f"[green]ok:[/] {report.summary()}", highlight=False)


download_app = typer_app(
    cls=dataset_group(_download_names, build_download_command),
    help="Download a dataset's raw files, verified by size and sha256 (or the checksum its source publishes).",
    no_args_is_help=True,
)
verify_raw_app = typer_app(
    cls=dataset_group(_verify_names, build_verify_raw_command, unknown="no pinned file list for dataset"),
    help="Check a raw copy against a dataset's pinned file list.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(download_app, name="download")
    app.add_typer(verify_raw_app, name="verify-raw")
