"""The trainer's console scripts (`scmrl-train`, `scmrl-eval`, `scmrl-convert`): stops are caught before
their apps, and torch behind them, are imported (`avdata.cli.stopping`)."""

from __future__ import annotations

from typing import Any

from avdata.cli.stopping import start


def _train() -> Any:
    from scmrl.cli.train_app import train_app

    return train_app


def _eval() -> Any:
    from scmrl.cli.train_app import eval_app

    return eval_app


def _convert() -> Any:
    from scmrl.cli.convert_app import convert_app

    return convert_app


def main_train() -> None:
    start(_train)


def main_eval() -> None:
    start(_eval)


def main_convert() -> None:
    start(_convert)
