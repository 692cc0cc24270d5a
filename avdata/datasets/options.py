"""Option fields that several recipes share, each declared once with its help (see `Recipe.options_type`).

Each is a dataclass field made with `opt`, whose metadata `avdata prepare <name>` turns into a flag.
"""

from __future__ import annotations

from typing import Any

from avdata.cli.dataclass_options import opt
from avdata.media.audio import SPEC_PRESETS

__all__ = ["val_fraction_option", "seed_option", "spectrogram_option"]


def val_fraction_option(default: float = 0.1) -> Any:
    return opt(default, min=0.0, max=0.99, help="Fraction of the training part held out as a seeded validation "
               "split (0 keeps train whole).")


def seed_option(default: int = 42) -> Any:
    return opt(default, help="Seed of every random choice made while preparing: the splits, and the random "
               "order each split's samples are written in (recorded in manifest.json).")


def spectrogram_option(default: str = "reference") -> Any:
    presets = "; ".join(f"{name}: {p['meaning']}" for name, p in SPEC_PRESETS.items())
    return opt(default, choices=tuple(SPEC_PRESETS), help=f"The audio's spectrogram ({presets}).")
