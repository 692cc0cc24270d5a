"""A command group whose sub-commands are the registry's datasets (`avdata prepare <name>`, `avdata download
<name>`), each built from its options dataclass when first asked for, so that `avdata` starts without
importing every recipe and an unknown name is answered with the names there are."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import typer
from typer.core import TyperGroup

from avdata.cli.dataclass_options import command_from
from avdata.cli.help_format import WholeHelpGroup, typer_app
from avdata.datasets.registry import unknown_dataset

__all__ = ["dataset_group", "dataset_command", "click_command"]


def click_command(name: str, function: Callable[..., Any], help: str | None = None) -> Any:
    """The (Click) command Typer makes of `function` (e.g. one from `dataclass_options.command_from`)."""
    app = typer_app()
    app.command(name, help=help)(function)
    return typer.main.get_command(app)


def dataset_command(name: str, dc_types: type | tuple[type, ...], body: Callable[..., Any], *,
                    help: str | None = None, exclude: Iterable[str] = (),
                    overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """The command `name` of a dataset group: flags from the fields of `dc_types` (the options every dataset's
    command takes, then the dataset's own), built by `dataclass_options.command_from`."""
    return click_command(name, command_from(dc_types, body, exclude=exclude, overrides=overrides), help=help)


def dataset_group(names: Callable[[], Iterable[str]], build: Callable[[str], Any],
                  unknown: str | None = None) -> type[TyperGroup]:
    """A TyperGroup class (for `typer_app(cls=...)`) listing `names()` and building each with `build`; a
    name it does not list fails with `unknown` (default: the registry's unknown-dataset message)."""

    class DatasetGroup(WholeHelpGroup):
        _built: dict[str, Any] = {}

        def list_commands(self, ctx: Any) -> list[str]:
            return list(names())

        def get_command(self, ctx: Any, cmd_name: str) -> Any | None:
            if cmd_name not in names():
                return None
            if cmd_name not in self._built:
                self._built[cmd_name] = build(cmd_name)
            return self._built[cmd_name]

        def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
            name = args[0]
            if name not in names() and not name.startswith("-") and not ctx.resilient_parsing:
                ctx.fail(str(unknown_dataset(name, names())) if unknown is None
                         else f"{unknown} {name!r}; choose from {', '.join(names())}")
            return super().resolve_command(ctx, args)

    return DatasetGroup
