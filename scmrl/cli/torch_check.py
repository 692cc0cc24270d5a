"""The trainer's commands need PyTorch, which the data side (`avdata`) does not: say how to get it."""

from __future__ import annotations

import importlib.util

from avdata.cli.errors import fail
from avdata.errors import AvdataError, install_hint

INSTALL_HINT = f"{install_hint('train', 'torch')}; for a GPU, first the CUDA build pytorch.org lists for your driver"


def require_torch(command: str) -> None:
    """Stop with the install line when torch cannot be imported (`--help` works without it)."""
    if importlib.util.find_spec("torch") is None:
        fail(AvdataError(f"{command} needs PyTorch, which is not installed here: {INSTALL_HINT}"))
