"""Ctrl-C and `kill` (SIGTERM) end every command with one line and status 130 / 143, from its first moment.

The console scripts (`avdata.cli.entry`, `scmrl.cli.entry`) call `start` before anything heavy is imported
(the apps import typer, rich and numpy, the trainer torch): a stop during those imports printed a
KeyboardInterrupt traceback, a stop while Typer builds the app or runs a command that does not handle it
ended with a bare 130 (Typer turns any KeyboardInterrupt, SIGTERM's too, into exit 130), and SIGTERM before
a handler was in place killed the process (-15). A command with more to say (prepare: the finished shards
are kept) says it through `interrupted`; any other stop gets the line here. Standard library and
`avdata.prepare.lifeline` only, so that this is in place within milliseconds.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn

from avdata.prepare.lifeline import Terminated, catch_stops, ignore_stops, stop_signal

__all__ = ["start", "interrupted"]

STARTING = "interrupted while starting: nothing was done"
GENERIC = "interrupted before it finished; run the same command again"

_reported: list[str] = []  # the line a command printed through `interrupted`
_started: list[bool] = []  # `start` runs this process's command (not a test's in-process call)


def _code(terminated: bool) -> int:
    return 143 if terminated else 130


def _stop(line: str, code: int) -> NoReturn:
    ignore_stops()
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def start(load: Callable[[], Any]) -> None:
    """Run the Typer app that `load()` imports and returns, stops caught from before its first import."""
    import signal

    try:
        catch_stops()
        _started.append(True)
        app = load()
        from avdata.cli.errors import run

        run(app)
    except KeyboardInterrupt as exc:  # during the imports, before Typer runs
        _stop(STARTING, _code(isinstance(exc, Terminated)))
    except SystemExit as done:
        arrived = stop_signal()
        if arrived is not None and not _reported and done.code == 130:  # Typer's bare exit for a stop
            _stop(GENERIC, _code(arrived == signal.SIGTERM))
        raise
    finally:
        ignore_stops()  # the command is over: exiting is not interrupted with a traceback


def interrupted(hint: str, exc: KeyboardInterrupt | None = None, status: int | None = None) -> NoReturn:
    """Print `interrupted: <hint>` (what was kept, how to go on) and exit 130, or 143 for SIGTERM (`status`
    when the stop came another way: a loader worker that SIGTERM ended)."""
    import typer

    from avdata.progress import console

    if _started:
        ignore_stops()
    _reported.append(hint)
    console.print(f"interrupted: {hint}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(status if status is not None else _code(isinstance(exc, Terminated)))
