"""`avdata inspect` and `avdata verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.errors import fail

ShardsArg = typer.Argument(..., metavar="SHARDS",
                           help="Shards folder: a local path, or the URL of a folder served as-is: "
                           "http(s)://, s3://BUCKET/PATH, gs://BUCKET/PATH, hf://datasets/OWNER/NAME/FOLDER.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Also show the storage libraries' own messages "
                          "(credentials found, each request, their tracebacks).")


def inspect_cmd(
    shards: str = ShardsArg,
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only this split (repeat for several; "
                                              "default: all)."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="Read back only the first K samples "
                                         "per split (faster on big folders; default: read every sample)."),
    show: Optional[int] = typer.Option(None, "--show", min=1, max=16, help="Draw the first N samples of each "
                                       "class to the contact sheet PNG given by --png (default 2 when --png is "
                                       "given; at most 16, and at most 64 classes are drawn)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write a contact sheet PNG here: rows are classes, "
                                       "each cell the visual and audio of one sample (split: the first --split, "
                                       "else train if there is one, else the first split)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of tables."),
    verbose: bool = VerboseOpt,
) -> None:
    """Summarise a shards folder: counts per split and class, field shapes and dtypes, bytes, durations.

    Counts come from manifest.json and from reading the shards back (all samples, or --sample K per split);
    also the skipped clips and their reasons, and the options and tool version that made the folder.
    With --png, a contact sheet of the first --show N samples of each class.
    """
    from rich.console import Console

    from avdata.summary import print_shards_summary, summarize

    if show is not None and png is None:
        console.print("[red]error:[/] --show N needs --png FILE (where to write the contact sheet)", highlight=False)
        raise typer.Exit(2)
    setup_logging(verbose)
    try:
        summary = summarize(shards, splits=split or None, sample=sample)
        sheet = None
        if png is not None:
            from avdata.contact_sheet import contact_sheet

            sheet = contact_sheet(shards, png, per_class=show or 2, split=split[0] if split else None)
    except AvdataError as exc:
        fail(exc)
        return
    if as_json:
        if sheet is not None:
            summary["contact_sheet"] = str(sheet)
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    out = Console()
    print_shards_summary(summary, out)
    if sheet is not None:
        out.print(f"contact sheet: {sheet}", highlight=False, soft_wrap=True)


def verify_cmd(
    shards: str = ShardsArg,
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only check this split (repeat for several; "
                                              "default: all)."),
    quick: bool = typer.Option(False, "--quick", help="Compare byte counts only (no sha256, no reading the tars)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    verbose: bool = VerboseOpt,
) -> None:
    """Check every shard against manifest.json: sha256, byte count and sample count.

    A shard cut short is reported as truncated; .tar files the manifest does not list are warned about.
    In a folder filled by `avdata pull --split`, the splits not pulled are named and not checked.
    Exit status 1 when anything differs, 2 when the folder or its manifest cannot be read.
    """
    from rich.console import Console

    from avdata.verify import print_report, verify_shards

    setup_logging(verbose)
    try:
        report = verify_shards(shards, splits=split or None, quick=quick)
    except AvdataError as exc:
        fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, Console())
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
    app.command("verify")(verify_cmd)
