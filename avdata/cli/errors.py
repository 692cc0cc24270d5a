"""How every command reports a failure: one line naming the file or URL and the fix, exit status 2.

Library errors (AvdataError, bad settings) are reported where they are caught; an OSError that reaches
the top (an output folder that cannot be created, a read-only or full disk, no permission) is reported
here for every command, with its path, instead of a traceback.
"""

from __future__ import annotations

import errno
from typing import Callable, NoReturn

import typer

from avdata.progress import console

__all__ = ["fail", "describe_os_error", "run"]

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another folder, then rerun the same command "
    "(finished files are kept)",
    errno.EACCES: "no permission: choose a folder you can write to",
    errno.EPERM: "not permitted: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose another folder",
    # a file where a folder is needed (`--out notes.txt/x`, `--to` a file): FileExistsError from mkdir
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
    errno.EEXIST: "something is already there (e.g. a file where a folder goes): choose another path",
    errno.EFBIG: "a file-size limit was reached (`ulimit -f`, or the largest file the file system holds): raise "
    "the limit or choose another folder, then rerun the same command (finished files are kept)",
}
if hasattr(errno, "EDQUOT"):
    _HINTS[errno.EDQUOT] = _HINTS[errno.ENOSPC].replace("the disk is full", "the disk quota is used up")


def fail(exc: BaseException) -> NoReturn:
    """Print ``error: <message>`` (markup-safe) and exit with status 2."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason; what to do`` for an OSError."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno or -1)
    text = f"{where}: {reason}" if where else reason
    return f"{text}; {hint}" if hint else text


def run(app: Callable[[], object]) -> None:
    """Run a Typer app; an OSError that no command handled is reported with its path, exit status 2."""
    try:
        app()
    except OSError as exc:
        try:
            fail(RuntimeError(describe_os_error(exc)))
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
