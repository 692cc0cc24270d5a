"""The one .npy codec of shard fields: encode, decode, and a zero-copy view decoder for the trainer.

Shards come from other people, so decoding never unpickles (object arrays are refused) and never
believes a header beyond MAX_NPY_HEADER bytes.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from avdata.errors import FieldError

#: numpy writes headers of a few hundred bytes; a larger one is a damaged or hostile field.
MAX_NPY_HEADER = 4096

_NPY_HEADER_RE = re.compile(
    rb"^\x93NUMPY\x01\x00(..)\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), "
    rb"'shape': \(([\d, ]*)\), \}", re.S)


def encode_npy(array: np.ndarray) -> bytes:
    """np.save bytes: a deterministic, self-describing encoding that webdataset's decoder reads."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """A writable array of .npy bytes (a copy; see `decode_npy_view` for a zero-copy one)."""
    return np.load(io.BytesIO(data), allow_pickle=False, max_header_size=MAX_NPY_HEADER)


def npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the array data) of .npy bytes (at least the header).

    The header numpy writes is matched directly (numpy's own parser evaluates it as Python source,
    a quarter of the per-sample time of the input pipeline); anything else goes to numpy, which refuses
    object dtypes here since `allow_pickle` is not given to the view."""
    m = _NPY_HEADER_RE.match(data)
    if m:
        shape = tuple(int(d) for d in m.group(4).split(b",") if d.strip())
        offset = 10 + int.from_bytes(m.group(1), "little")
        return shape, m.group(3) == b"True", np.dtype(m.group(2).decode()), offset
    bio = io.BytesIO(data)
    version = np.lib.format.read_magic(bio)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(bio, max_header_size=MAX_NPY_HEADER)
    if dtype.hasobject:
        raise FieldError("object arrays in .npy fields are refused (they would be unpickled)")
    return shape, fortran, dtype, bio.tell()


def decode_npy_view(data: bytes | memoryview) -> np.ndarray:
    """A read-only, zero-copy array over .npy bytes (only the picked frame gets copied later)."""
    shape, fortran, dtype, offset = npy_header(bytes(data[:MAX_NPY_HEADER]) if isinstance(data, memoryview)
                                               else data)
    count = math.prod(shape)  # Python ints: a header's shape may overflow numpy's int64 product
    if offset + count * dtype.itemsize > len(data):
        raise FieldError(f".npy header declares an array of shape {shape} ({dtype}), more than the "
                         f"{len(data):,} bytes of the field hold")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")
