"""Every Typer app of the CLI is made here, so that `--help` is drawn one way everywhere: Typer's rich
panels where the terminal is wide enough for them, click's plain layout where it is not (at 80 columns
rich cuts long option names to fit, `--label-smooth…`, and the plain layout wraps instead). Output that
is not a terminal (a pipe, a file) counts as 80 columns, unless COLUMNS says otherwise."""

from __future__ import annotations

import inspect
import shutil
from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["typer_app", "WholeHelpGroup", "RICH_HELP_COLUMNS", "version_option"]

#: The narrowest terminal where rich's option tables cut no option name of any command (checked by tests).
RICH_HELP_COLUMNS = 120


def typer_app(**kwargs: Any) -> typer.Typer:
    """typer.Typer(**kwargs) without shell-completion commands or rich tracebacks, help drawn as above."""
    wide = shutil.get_terminal_size((80, 24)).columns >= RICH_HELP_COLUMNS
    kwargs.setdefault("add_completion", False)
    kwargs.setdefault("pretty_exceptions_enable", False)
    kwargs.setdefault("rich_markup_mode", "rich" if wide else None)
    return typer.Typer(**kwargs)


class WholeHelpGroup(TyperGroup):
    """A command group whose plain `--help` gives each sub-command's whole first paragraph, wrapped (click
    cuts it at about 45 characters, which lost e.g. AVE's "fetch it by hand")."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            text = cmd.short_help or inspect.cleandoc(cmd.help or "").split("\n\n")[0]
            rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _print_version(value: bool) -> None:
    if value:
        from avdata import __version__

        typer.echo(f"avdata-scmrl {__version__}")
        raise typer.Exit()


def version_option() -> Any:
    """`--version` for a command or app: eager, so it answers before required options are checked (the
    version a bug report, or a manifest's `tool.version`, is compared with)."""
    return typer.Option(False, "--version", is_eager=True, callback=_print_version,
                        help="Print the installed avdata-scmrl version and exit.")
