"""`avdata`: download, prepare, inspect, verify and share datasets. Each command group lives in its own
`avdata/cli/cmd_*.py` module that registers its commands on this app."""

from __future__ import annotations

import importlib


from avdata.cli.stopping import start
from avdata.cli.help_format import WholeHelpGroup, typer_app, version_option

app = typer_app(
    name="avdata",
    cls=WholeHelpGroup,
    help="Turn raw audio-visual and neuromorphic datasets into verified, shareable WebDataset shards.",
    no_args_is_help=True,
)


@app.callback()
def _options(version: bool = version_option()) -> None:
    """The options of `avdata` itself (--version); the app's help above is what --help shows."""


# Command modules; each defines register(app).
COMMAND_MODULES = ["cmd_download", "cmd_prepare", "cmd_inspect", "cmd_share", "cmd_demo"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"avdata.cli.{_name}").register(app)


def main() -> None:
    """`python -m avdata.cli.avdata_app` (the console script is `avdata.cli.entry`)."""
    start(lambda: app)


if __name__ == "__main__":
    main()
