"""How stored video frames and spectrograms are laid out in a sample, in either frame format.

Every sample of a dataset holds the same members, so tools that take the first samples' fields as the
schema (Hugging Face `datasets`) read every frame of every sample: K, the frame slots, is fixed per
dataset (the manifest's frames shape). A clip with fewer frames repeats its last one in the remaining
slots, and its json says how many are its own (``num_frames``) and how many past K it lost
(``frames_dropped``); the trainer chooses among the ``num_frames`` real ones only (`real_frame_count`).

* ``--frame-format jpeg`` (default): one member per frame, ``<key>.frames.<i>.jpg`` for i = 0..K-1, each a
  baseline JPEG of the RGB frame (`avdata.shards.jpeg`). Stock webdataset's ``.decode("rgb8")`` decodes
  each to an [H, W, 3] array (sample fields ``frames.0.jpg``, ``frames.1.jpg``, ...), and the trainer
  reads and decodes only the frame it picks. The manifest lists them as one feature, ``frames.<i>.jpg``,
  with its shape [K, H, W, 3], the quality and the encoder that made the bytes.
* ``--frame-format npy``: one member ``<key>.frames.npy``, uint8 [K, H, W, 3] (the earlier layout; shards
  made before the option existed are of this kind and read the same).
* ``--spec-dtype float32`` (default) or ``float16``: the ``spec.npy`` member's dtype.

Defaults chosen by measurement (BENCHMARKS.md, "Compact shards"): JPEG quality 95 keeps the mean
absolute error at about 1.1-1.3 grey levels (99th percentile 6-7) at about 8% of the npy bytes;
float16 changes the spectrogram by at most 0.008 (mean 0.0006) after the trainer's 128x128 resize.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import numpy as np

from avdata.errors import AvdataError, FieldError
from avdata.shards.jpeg import decode_jpeg, encode_jpeg, encoder
from avdata.shards.npy import decode_npy, encode_npy

__all__ = ["FRAME_FORMATS", "SPEC_DTYPES", "DEFAULT_JPEG_QUALITY", "JPEG_FRAMES", "frame_fields",
           "frames_feature", "frame_counts", "real_frame_count", "spec_field", "spec_feature", "jpeg_frame_names",
           "is_jpeg_frame", "read_all_frames", "has_frames"]

FRAME_FORMATS = ("jpeg", "npy")
SPEC_DTYPES = ("float32", "float16")
DEFAULT_JPEG_QUALITY = 95
#: The manifest's name for the K frame members of the JPEG layout.
JPEG_FRAMES = "frames.<i>.jpg"
NPY_FRAMES = "frames.npy"
_JPEG_MEMBER = re.compile(r"frames\.(\d{1,6})\.jpg")


def frame_fields(frames: np.ndarray, frame_format: str, quality: int = DEFAULT_JPEG_QUALITY,
                 slots: int | None = None) -> dict[str, bytes]:
    """The members holding uint8 [K, H, W, 3] frames, in index order: exactly `slots` of them when given
    (the clip's first `slots` frames, then its last frame repeated; see `frame_counts`)."""
    if slots is not None:
        if slots < 1 or frames.shape[0] < 1:
            raise AvdataError(f"need at least one frame and one slot, got {frames.shape[0]} frame(s), {slots} slot(s)")
        frames = frames[:slots]
    pad = 0 if slots is None else slots - frames.shape[0]
    if frame_format == "npy":
        if pad:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        return {NPY_FRAMES: encode_npy(frames)}
    if frame_format == "jpeg":
        out = {f"frames.{i}.jpg": encode_jpeg(frame, quality) for i, frame in enumerate(frames)}
        last = out[f"frames.{frames.shape[0] - 1}.jpg"]
        out.update({f"frames.{i}.jpg": last for i in range(frames.shape[0], frames.shape[0] + pad)})
        return out
    raise AvdataError(f"--frame-format must be one of {', '.join(FRAME_FORMATS)}, got {frame_format!r}")


def frame_counts(clip_frames: int, slots: int) -> dict[str, int]:
    """The json's account of a sample's frame slots: ``num_frames`` real ones (the rest repeat the last),
    ``frames_dropped`` of the clip's frames past the slots (not stored)."""
    return {"num_frames": min(clip_frames, slots), "frames_dropped": max(0, clip_frames - slots)}


def real_frame_count(meta_json: bytes | None, stored: int) -> int:
    """How many of a sample's `stored` frames are its own: the json's ``num_frames``; all of them for
    shards made before padding existed (no ``num_frames``). FieldError when it is not 1..stored."""
    if meta_json is None:
        return stored
    try:
        meta = json.loads(meta_json)
    except ValueError as exc:
        raise FieldError(f"json field is not valid JSON ({exc})") from None
    except RecursionError:  # a stranger's "[[[[..." is no sample's metadata
        raise FieldError("json field is nested too deeply to be a sample's metadata") from None
    real = meta.get("num_frames", stored) if isinstance(meta, dict) else stored
    if type(real) is not int or not 1 <= real <= stored:
        raise FieldError(f"json num_frames {real!r:.40} is not a count of 1..{stored} (the stored frames)")
    return real


def frames_feature(frame_format: str, quality: int, shape: list[Any], meaning: str) -> dict[str, dict[str, Any]]:
    """The manifest's features entry for the frames (shape [K, H, W, 3], K the fixed slots); JPEG names
    its encoder."""
    padded = "; a clip with fewer than K frames repeats its last one (json num_frames: how many are real)"
    if frame_format == "npy":
        return {NPY_FRAMES: {"dtype": "uint8", "shape": shape, "meaning": meaning + padded}}
    return {JPEG_FRAMES: {"dtype": "uint8", "shape": shape, "format": "jpeg", "quality": quality,
                          "encoder": encoder(),
                          "meaning": f"{meaning}; one JPEG member per frame, <key>.frames.<i>.jpg, i = 0..K-1"
                                     + padded}}


def spec_field(spec: np.ndarray, dtype: str) -> dict[str, bytes]:
    if dtype not in SPEC_DTYPES:
        raise AvdataError(f"--spec-dtype must be one of {', '.join(SPEC_DTYPES)}, got {dtype!r}")
    return {"spec.npy": encode_npy(spec.astype(dtype))}


def spec_feature(dtype: str, bins: int, meaning: str) -> dict[str, dict[str, Any]]:
    return {"spec.npy": {"dtype": dtype, "shape": [bins, "T"], "meaning": meaning}}


def is_jpeg_frame(field: str) -> bool:
    """Whether a sample field (``frames.3.jpg``) or a member name (``<key>.frames.3.jpg``) is a JPEG frame."""
    return _JPEG_MEMBER.fullmatch(".".join(field.split(".")[-3:])) is not None


def jpeg_frame_names(fields: Mapping[str, Any]) -> list[str]:
    """The JPEG frame fields of a sample in frame order (0, 1, ..., K-1); FieldError when one is missing."""
    found = {int(m.group(1)): name for name in fields if (m := _JPEG_MEMBER.fullmatch(name))}
    if sorted(found) != list(range(len(found))):
        raise FieldError(f"JPEG frames {sorted(found)} are not numbered 0..K-1")
    return [found[i] for i in range(len(found))]


def has_frames(features: Mapping[str, Any]) -> bool:
    """Whether a manifest's features hold stored frames, in either format."""
    return NPY_FRAMES in features or JPEG_FRAMES in features


def read_all_frames(fields: Mapping[str, bytes]) -> tuple[str, np.ndarray] | None:
    """(feature name, uint8 [K, H, W, 3]) of a sample's frames in either format, or None (inspect and the
    contact sheet; the trainer decodes only the frame it picks)."""
    if NPY_FRAMES in fields:
        return NPY_FRAMES, decode_npy(fields[NPY_FRAMES])
    names = jpeg_frame_names(fields)
    if not names:
        return None
    return JPEG_FRAMES, np.stack([decode_jpeg(fields[n]) for n in names])


def group_jpeg_frames(fields: Mapping[str, bytes]) -> dict[str, Any]:
    """A sample's fields with its JPEG frame members gathered, in frame order, into one list under
    ``frames.<i>.jpg`` (where they first appear), so tools that look at fields see one frames field."""
    try:
        names = set(jpeg_frame_names(fields))
    except FieldError:  # frames missing from the numbering: shown as they are, one field each
        names = set()
    if not names:
        return dict(fields)
    out: dict[str, Any] = {}
    for name, data in fields.items():
        if name not in names:
            out[name] = data
        elif JPEG_FRAMES not in out:
            out[JPEG_FRAMES] = [fields[n] for n in jpeg_frame_names(fields)]
    return out
