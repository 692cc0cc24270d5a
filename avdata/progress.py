"""One progress-bar style for every long step: description, bar, count, items/s, ETA."""

from __future__ import annotations

import logging
import os
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items (or bytes) per second."""

    def __init__(self, unit: str = "it") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"? {self.unit}/s", style="progress.data.speed")
        if self.unit == "B":
            for u in ("B", "KB", "MB", "GB"):
                if speed < 1024 or u == "GB":
                    return Text(f"{speed:.1f} {u}/s", style="progress.data.speed")
                speed /= 1024
        return Text(f"{speed:.1f} {self.unit}/s", style="progress.data.speed")


def make_progress(unit: str = "it", disable: bool | None = None) -> Progress:
    """A rich Progress with count, rate and ETA; quiet when AVDATA_NO_PROGRESS is set."""
    if disable is None:
        disable = bool(os.environ.get("AVDATA_NO_PROGRESS"))
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if unit != "B" else TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


#: Libraries that log on every request or credential lookup (botocore's "Found credentials", httpx's "HTTP
#: Request" per call, google.auth's "Authentication failed using Compute Engine" on any machine outside
#: Google Cloud), or log an error with its traceback before raising it (gcsfs; also its bucket-type probe,
#: which warns on every call without Google credentials, an emulator's included). The error they end in
#: is the command's own one line.
CHATTY_LOGGERS = ("botocore", "boto3", "aiobotocore", "s3fs", "gcsfs", "google", "grpc", "urllib3", "httpx",
                  "httpcore", "huggingface_hub", "fsspec")


def quiet_libraries(verbose: bool) -> None:
    """The storage libraries' lines only with --verbose, and then down to INFO (never their DEBUG lines,
    which log every request's headers)."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr through rich so log lines and progress bars do not tear each other; the storage
    libraries quietened (`quiet_libraries`). Every command that may read a URL calls this first."""
    quiet_libraries(verbose)
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if any(isinstance(h, RichHandler) for h in root.handlers):
        root.setLevel(level)
        return
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    if not sys.stderr.isatty():
        console.width = max(console.width, 120)
