"""`avdata demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.errors import fail
from avdata.demo import DEMO_CLIPS, MIN_DEMO_CLIPS


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for the generated raw data (OUT/raw), shards "
                             "(OUT/shards) and contact sheet; a rerun replaces what the demo wrote there, and "
                             "nothing else."),
    clips: int = typer.Option(DEMO_CLIPS, "--clips", min=MIN_DEMO_CLIPS, help="Number of good clips to generate (6 "
                              "broken ones are added); at least 24, so that the suggested training run has a batch "
                              "to train on."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Worker processes for prepare."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated data."),
) -> None:
    """Generate a small CREMA-D-format raw tree (real FLV + WAV), prepare it, verify it, draw a contact sheet."""
    from avdata.demo import run_demo
    from avdata.cli.cmd_prepare import print_prepare_result

    setup_logging()
    try:
        res = run_demo(out, clips=clips, jobs=jobs, seed=seed)
    except AvdataError as exc:
        fail(exc)
    print_prepare_result(res["result"], generated=True)
    console.print(f"verify: {'all shards OK' if res['verified'] else 'PROBLEMS'}")
    for file, what in res["problems"]:
        console.print(f"  {file}: {what}", markup=False, highlight=False)
    console.print(f"raw data:      {res['raw']}\nshards:        {res['shards']}\ncontact sheet: {res['contact_sheet']}")
    # one command a line, never wrapped, so each can be copied as it is
    console.print("next:")
    for command in (res["inspect_command"], res["train_command"]):
        console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
    if not res["verified"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
