"""How large each member of a shard may be, from what the manifest's features say the field is.

Shards come from other people: a tar header may declare a member of any size, and a reader that holds a
member in memory (inspect, the trainer over http) would allocate it. The one tar reader
(`avdata.shards.reader`) asks a :class:`MemberCaps` before reading a member's body and refuses a member
over its cap (`TarBoundsError`), so the memory a sample takes is bounded by what the manifest declares:

* ``cls``: CLS_CAP bytes (a class index as text); ``json`` (any field ending in json): JSON_CAP;
* a feature with a numeric dtype and a shape of whole numbers: that many bytes plus NPY_SLACK for the
  .npy header (a JPEG frame of ``frames.<i>.jpg``: its [H, W, 3] raw bytes twice plus the slack, since a
  JPEG of noise can be larger than the pixels);
* anything else (symbolic dimensions such as ``"K"`` or ``"T"``, no dtype, a field the manifest does not
  list): VARIABLE_CAP, far above any real sample field, and no declared field gets more (the manifest
  comes from the same stranger as the shards: it can tighten the bound, never loosen it);
* and a whole sample (all its members together, `avdata.shards.reader.iter_shard`): SAMPLE_CAP.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from avdata.shards.frames import JPEG_FRAMES, is_jpeg_frame
from avdata.shards.npy import MAX_NPY_HEADER

__all__ = ["MemberCaps", "CLS_CAP", "JSON_CAP", "VARIABLE_CAP", "SAMPLE_CAP", "NPY_SLACK"]

#: A class index as decimal text, with room for a newline: "123\n".
CLS_CAP = 64
#: A sample's json metadata is a few kilobytes.
JSON_CAP = 4 << 20
#: A field whose size the manifest does not pin: real ones are at most a few megabytes (AVE's frames).
VARIABLE_CAP = 64 << 20
#: All members of one sample together.
SAMPLE_CAP = 256 << 20
#: The .npy header numpy writes (a few hundred bytes; the npy codec refuses more than MAX_NPY_HEADER).
NPY_SLACK = MAX_NPY_HEADER


def _declared_bytes(spec: Mapping[str, Any], frame: bool) -> int | None:
    """The bytes of the array a feature declares (one frame of it when `frame`), or None when not pinned."""
    shape = spec.get("shape")
    try:
        itemsize = np.dtype(str(spec.get("dtype"))).itemsize
    except (TypeError, ValueError):  # "json", "int" spelled otherwise, a structured description
        return None
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in (shape[1:] if frame else shape)):
        return None
    dims = shape[1:] if frame else shape
    return math.prod(dims) * itemsize


class MemberCaps:
    """``caps(member name) -> most bytes it may hold`` for the shards of one manifest's features."""

    def __init__(self, features: Mapping[str, Any] | None = None) -> None:
        self._caps: dict[str, int] = {}
        for name, spec in (features or {}).items():
            if name == "cls" or not isinstance(spec, Mapping):
                continue
            frame = name == JPEG_FRAMES
            raw = _declared_bytes(spec, frame)
            if raw is not None and not name.endswith("json"):  # a manifest can only tighten the bound
                self._caps[name] = min((2 * raw if frame else raw) + NPY_SLACK, VARIABLE_CAP)

    def field_cap(self, field: str) -> int:
        """The cap of a sample field (``frames.npy``, ``frames.3.jpg``, ``cls``)."""
        if field == "cls":
            return CLS_CAP
        if field.endswith("json"):
            return JSON_CAP
        if is_jpeg_frame(field):
            field = JPEG_FRAMES
        return self._caps.get(field, VARIABLE_CAP)

    def __call__(self, member: str) -> int:
        return self.field_cap(member.partition(".")[2])
