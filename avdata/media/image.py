"""Reading a still image (UrbanSound8K-AV's JPEGs and PNGs) within the decoded-size budget.

Why its own reader: PIL decodes a 13000x13000 PNG of 493 KB to 500 MB and converts it to RGB (another
500 MB), and refuses one over 179 million pixels with `DecompressionBombError`, which is not bad input to
its callers but an internal error. Here the header's size (read by `Image.open` without decoding) is
checked against `avdata.media.budget` first, so PIL's own limit is lifted while opening (the budget is the
one rule, and `--max-decoded-mb` raises it); then the image is decoded, converted and resized.

Only the formats a web image comes in are opened (`FORMATS`, by content: a .jpg that is a PNG still
reads): PIL identifies a file by its bytes, and for some formats (EPS) it runs an outside program,
Ghostscript, on them, which nothing read from a raw folder may make it do.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from avdata.errors import MediaError
from avdata.media.budget import DEFAULT_MAX_DECODED_BYTES, check_decoded, image_bytes
from avdata.media.files import require_media_file
from avdata.media.video import resize_short_side, target_size

__all__ = ["load_image", "FORMATS"]

#: The image formats PIL may open here (decoders inside PIL; no outside program such as Ghostscript).
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


@contextlib.contextmanager
def _budget_not_pil_limit() -> Iterator[None]:
    """PIL's pixel limit (a process-wide setting) lifted while a header is read: the budget decides."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _grey16_as_rgb(im: Image.Image) -> np.ndarray:
    """A 16-bit grey image (a PNG or TIFF: PIL mode I;16 or I) as 8-bit RGB by its top 8 bits: PIL's own
    convert("RGB") clips every value over 255 to white, which turns nearly the whole picture white."""
    grey = np.clip(np.asarray(im).astype(np.int64) >> 8, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def load_image(path: str | Path, short_side: int, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> np.ndarray:
    """RGB uint8 [H, W, 3] with the short side resized to `short_side` (INTER_AREA down, LINEAR up).
    MediaError for an unreadable or empty image; OverBudget (a MediaError) when decoding, converting and
    resizing it would pass `max_bytes`, decided from its header before decoding."""
    path = Path(path)
    require_media_file(path, "image")
    try:
        Image.init()  # every plugin registered, so that only this build's missing ones are left out
        with _budget_not_pil_limit(), Image.open(path, formats=[f for f in FORMATS if f in Image.OPEN]) as im:
            width, height = im.size
            if min(width, height) == 0:
                raise MediaError(path, "empty image")
            out_w, out_h = target_size(width, height, short_side)
            check_decoded(path, f"a {width}x{height} {im.mode} image (resized to {out_w}x{out_h})",
                          image_bytes(width, height, len(im.getbands()), out_w, out_h), max_bytes)
            arr = _grey16_as_rgb(im) if im.mode.startswith("I;16") or im.mode == "I" else np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # PIL's message may hold the path: reasons go into manifests, which hold no absolute paths
        raise MediaError(path, "not a readable image (" + str(exc).replace(str(path), "<file>") + ")") from exc
    if min(arr.shape[:2]) == 0:
        raise MediaError(path, "empty image")
    return resize_short_side(arr, short_side)
