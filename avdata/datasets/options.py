"""Option fields that several recipes share, each declared once with its help (see `Recipe.options_type`).

Each is a dataclass field made with `opt`, whose metadata `avdata prepare <name>` turns into a flag.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from avdata.option_fields import opt
from avdata.datasets.recipe import NOT_RECORDED
from avdata.media.audio import SPEC_PRESETS
from avdata.media.budget import DEFAULT_MAX_DECODED_MB
from avdata.shards.frames import DEFAULT_JPEG_QUALITY, FRAME_FORMATS, SPEC_DTYPES

__all__ = ["val_fraction_option", "seed_option", "spectrogram_option", "frame_format_option", "jpeg_quality_option",
           "spec_dtype_option", "max_decoded_mb_option"]


def val_fraction_option(default: float = 0.1) -> Any:
    return opt(default, min=0.0, max=0.99, help="Fraction of the training part held out as a seeded validation "
               "split (0 keeps train whole).")


def seed_option(default: int = 42) -> Any:
    return opt(default, help="Seed of every random choice made while preparing: the splits, and the random "
               "order each split's samples are written in (recorded in manifest.json).")


def spectrogram_option(default: str = "reference") -> Any:
    presets = "; ".join(f"{name}: {p['meaning']}" for name, p in SPEC_PRESETS.items())
    return opt(default, choices=tuple(SPEC_PRESETS), help=f"The audio's spectrogram ({presets}).")


def frame_format_option(default: str = "jpeg") -> Any:
    return opt(default, choices=FRAME_FORMATS, help="How frames are stored: jpeg (one <key>.frames.<i>.jpg member "
               "per frame, about 8% of the npy bytes at quality 95) or npy (one uint8 [K, H, W, 3] array, "
               "lossless).")


def jpeg_quality_option(default: int = DEFAULT_JPEG_QUALITY) -> Any:
    return opt(default, min=1, max=100, help="JPEG quality of stored frames with --frame-format jpeg (95: mean "
               "error about 1.2 grey levels).")


def spec_dtype_option(default: str = "float32") -> Any:
    return opt(default, choices=SPEC_DTYPES, help="dtype of the stored spectrogram: float16 halves its bytes "
               "(error at most 0.008 after the trainer's 128x128 resize).")


def max_decoded_mb_option(default: int = DEFAULT_MAX_DECODED_MB) -> Any:
    """A run limit, not a choice of output: kept out of manifest.json and the plan's fingerprint (an
    accepted clip's bytes do not depend on it), as --jobs is."""
    field = opt(default, min=16, help="Budget of what one raw file may decode to, in MB: a file whose header "
                "declares more (audio samples after resampling, kept video frames x pixels, image pixels) is "
                "skipped and recorded in manifest.json, so each worker process's decoded arrays stay within "
                "about this much memory. To admit a skipped clip, raise it and rerun with --overwrite.")
    return dataclasses.field(default=default, metadata={**field.metadata, NOT_RECORDED: True})
