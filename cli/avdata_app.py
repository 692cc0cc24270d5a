"""`avdata`: download, prepare, inspect, verify and share datasets. Each command group lives in its own
`cli/cmd_*.py` module that registers its commands on this app."""

from __future__ import annotations

import importlib

import typer

from avdata.cli.errors import run

app = typer.Typer(
    name="avdata",
    help="Turn raw audio-visual and neuromorphic datasets into verified, shareable WebDataset shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules; each defines register(app). Missing ones are skipped so partial checkouts still run.
COMMAND_MODULES = ["cmd_download", "cmd_prepare", "cmd_inspect", "cmd_share", "cmd_demo"]

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"avdata.cli.{_name}")
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a module is not yet written
        if exc.name != f"avdata.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
