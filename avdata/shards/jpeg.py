"""The one JPEG codec of shard fields (stored video frames): encode, decode, and the encoder's identity.

Encoding uses OpenCV's bundled libjpeg-turbo with every setting spelled out (quality, 4:2:0 chroma,
baseline, default Huffman tables, no restart markers), so the same frame gives the same bytes on every
run and with any number of processes; a different build of the library may give other bytes, which is
why `encoder()` (written into the manifest's features) names the OpenCV and libjpeg-turbo versions.

Shards come from other people, so decoding reads the frame size from the JPEG header first and refuses
images over MAX_JPEG_PIXELS before any pixel is allocated.
"""

from __future__ import annotations

import re
from functools import lru_cache

import cv2
import numpy as np

from avdata.errors import AvdataError, FieldError

__all__ = ["encode_jpeg", "decode_jpeg", "jpeg_size", "encoder", "MAX_JPEG_PIXELS"]

#: A stored frame is a few hundred pixels a side; a header claiming more is a damaged or hostile field.
MAX_JPEG_PIXELS = 1 << 24

_SAMPLING_420 = 0x221111  # cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420


def _params(quality: int) -> list[int]:
    if not 1 <= quality <= 100:
        raise AvdataError(f"--jpeg-quality must be 1 to 100, got {quality}")
    return [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
            cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_RST_INTERVAL, 0,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _SAMPLING_420]


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB uint8 [H, W, 3] image (deterministic for a given `encoder()`)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"JPEG frames must be uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), _params(quality))
    if not ok:  # pragma: no cover - OpenCV fails only on impossible input
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes | memoryview) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's frame header, without decoding; FieldError if none."""
    data = bytes(data[:1 << 16]) if len(data) > 1 << 16 else bytes(data)
    if data[:2] != b"\xff\xd8":
        raise FieldError("not a JPEG (no SOI marker)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise FieldError(f"damaged JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF:
            if pos + 10 > len(data):
                break
            h, w = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            return h, w, data[pos + 9]
        if marker == 0xDA or length < 2:  # scan data before any frame header
            break
        pos += 2 + length
    raise FieldError("damaged JPEG: no frame header")


def decode_jpeg(data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] of JPEG bytes (a new writable array); FieldError for bad or oversized data."""
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    h, w, _ = jpeg_size(buf.data)  # numpy types an array as a buffer only for Python >= 3.12
    if h * w > MAX_JPEG_PIXELS or not h or not w:
        raise FieldError(f"JPEG of {w}x{h} pixels refused (at most {MAX_JPEG_PIXELS:,} pixels)")
    if _DECODE_RGB is not None:  # straight to RGB, and no EXIF orientation: a stored frame is its pixels
        img = cv2.imdecode(buf, _DECODE_RGB)
        if img is None:
            raise FieldError("undecodable JPEG")
        return img
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise FieldError("undecodable JPEG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# OpenCV >= 4.10 decodes to RGB itself (the same pixels as decoding to BGR and converting, tested)
_DECODE_RGB = (cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION) if hasattr(cv2, "IMREAD_COLOR_RGB") else None


@lru_cache(maxsize=None)
def encoder() -> str:
    """What produced the JPEG bytes, for the manifest: OpenCV's version and its libjpeg build."""
    jpeg = next((m.group(1) for m in (re.match(r"\s*JPEG:\s*(.+)$", line)
                                      for line in cv2.getBuildInformation().splitlines()) if m), "unknown")
    return f"OpenCV {cv2.__version__} cv2.imencode, JPEG library: {jpeg.strip()}; baseline, 4:2:0, standard tables"
