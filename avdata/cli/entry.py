"""The `avdata` console script: stops are caught before the app (typer, rich, numpy, every command module)
is imported (`avdata.cli.stopping`), so this module imports nothing else at its top."""

from __future__ import annotations

from typing import Any

from avdata.cli.stopping import start


def _app() -> Any:
    from avdata.cli.avdata_app import app

    return app


def main() -> None:
    start(_app)
