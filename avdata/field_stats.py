"""What `avdata inspect` reports of one sample field over the samples it reads (`avdata.summary`).

Inspect decodes only what it shows: JPEG frames are sized from their headers (`jpeg_size`) and only the
first frame of a sample is decoded, its values standing for the sample's, so a sample of many large frames
costs one decode, not K (and the decoder refuses a frame over `MAX_JPEG_PIXELS`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from avdata.errors import FieldError
from avdata.shards.frames import JPEG_FRAMES
from avdata.shards.jpeg import decode_jpeg, jpeg_size
from avdata.shards.npy import decode_npy

__all__ = ["FieldStats", "NUMERIC_KINDS"]

NUMERIC_KINDS = "biuf"


class FieldStats:
    """One field's statistics over the samples read: count, bytes, dtypes, shape and value ranges."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = "npy" if name.endswith(".npy") else "jpeg" if name == JPEG_FRAMES else ("cls" if name == "cls" else
                                                            "json" if name.endswith("json") else "bytes")
        self.count = 0
        self.bytes = 0
        self.dtypes: Counter[str] = Counter()
        self.ndims: Counter[int] = Counter()
        self.shape_min: list[int] | None = None
        self.shape_max: list[int] | None = None
        self.vmin: float | None = None
        self.vmax: float | None = None
        self.nonfinite = 0
        self.errors = 0

    def add(self, data: Any) -> Any:
        """One sample's member: bytes, or for the frames (kind "jpeg") the list of its K members' bytes; which
        one follows from `kind`, a run-time fact, so `data` is Any rather than a union each branch narrows."""
        self.count += 1
        self.bytes += sum(map(len, data)) if self.kind == "jpeg" else len(data)  # jpeg: the K frames' members
        if self.kind == "npy":
            try:
                arr = decode_npy(data)
            except Exception:
                self.errors += 1
                return None
            self._add_array(arr)
            return arr
        if self.kind == "jpeg":
            return self._add_jpeg(data)
        if self.kind == "cls":
            try:
                v = int(data.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                self.errors += 1
                return None
            self._add_range(v, v)
            return v
        if self.kind == "json":
            try:
                return json.loads(data)
            except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
                self.errors += 1
        return None

    def _add_jpeg(self, frames: list[bytes]) -> None:
        """The K frames' shape from their headers; the values of the first frame only (one decode)."""
        try:
            sizes = {jpeg_size(d) for d in frames}
            if len(sizes) != 1:
                raise FieldError("frames of different sizes")
            first = decode_jpeg(frames[0])
        except Exception:
            self.errors += 1
            return None
        self._add_shape([len(frames), *first.shape], str(first.dtype))
        self._add_values(first)

    def _add_range(self, lo: float, hi: float) -> None:
        self.vmin = lo if self.vmin is None else min(self.vmin, lo)
        self.vmax = hi if self.vmax is None else max(self.vmax, hi)

    def _add_array(self, arr: np.ndarray) -> None:
        self._add_shape(list(arr.shape), str(arr.dtype))
        self._add_values(arr)

    def _add_shape(self, shape: list[int], dtype: str) -> None:
        self.dtypes[dtype] += 1
        self.ndims[len(shape)] += 1
        if self.shape_min is None or len(shape) > len(self.shape_min):
            # first array, or more dimensions than before: the range restarts there (ndim_varies tells)
            self.shape_min, self.shape_max = list(shape), list(shape)
        elif len(shape) == len(self.shape_min):
            self.shape_min = [min(a, b) for a, b in zip(self.shape_min, shape)]
            self.shape_max = [max(a, b) for a, b in zip(self.shape_max or shape, shape)]

    def _add_values(self, arr: np.ndarray) -> None:
        if arr.size and arr.dtype.kind in NUMERIC_KINDS:
            if arr.dtype.kind == "f":
                finite = np.isfinite(arr)
                bad = int(arr.size - np.count_nonzero(finite))
                self.nonfinite += bad
                if bad:
                    arr = arr[finite]
                if not arr.size:
                    return
            self._add_range(arr.min().item(), arr.max().item())

    def to_dict(self, samples: int) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "count": self.count, "missing": samples - self.count,
                             "bytes": self.bytes, "mean_bytes": round(self.bytes / self.count, 1) if self.count else 0}
        if self.kind in ("npy", "jpeg"):
            dtypes = sorted(self.dtypes)
            d.update({"dtype": dtypes[0] if len(dtypes) == 1 else ",".join(dtypes), "dtypes": dtypes,
                      "ndim": max(self.ndims) if self.ndims else None,
                      "ndim_varies": len(self.ndims) > 1,
                      "shape_min": self.shape_min, "shape_max": self.shape_max,
                      "nonfinite": self.nonfinite})
        if self.kind in ("npy", "jpeg", "cls"):
            d.update({"value_min": self.vmin, "value_max": self.vmax})
        d["errors"] = self.errors
        return d
