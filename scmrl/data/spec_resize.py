"""Resizing a spectrogram, as an image, to the model's square input.

Two methods, because the two protocols differ here:

* ``linear`` (ours): OpenCV's bilinear interpolation, which samples the input at the output pixel
  centres and does not low-pass it when shrinking (a 257-bin STFT shrunk to 128 rows keeps aliasing);
* ``pil-bilinear`` (the authors'): their loader makes a float (mode ``F``) PIL image of the log
  spectrogram and applies torchvision's ``Resize((128, 128))``, i.e. Pillow's bilinear filter, whose
  triangle kernel is widened by the scale factor when shrinking (an antialiased, area-weighted mean).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from avdata.errors import AvdataError

__all__ = ["SPEC_RESIZES", "resize_spectrogram"]

SPEC_RESIZES = ("linear", "pil-bilinear")


def resize_spectrogram(spec: np.ndarray, size: int, method: str = "linear") -> np.ndarray:
    """``spec [F, T]`` -> float32 ``[size, size]`` (rows: frequency)."""
    spec = np.ascontiguousarray(spec, dtype=np.float32)
    if method == "linear":
        return cv2.resize(spec, (size, size), interpolation=cv2.INTER_LINEAR)
    if method == "pil-bilinear":
        img = Image.fromarray(spec).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.float32).copy()
    raise AvdataError(f"spectrogram resize must be one of {', '.join(SPEC_RESIZES)}, got {method!r}")
