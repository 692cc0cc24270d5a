"""N-TIDIGITS18's HDF5 file, the one reader (the recipe's plan and process and the tests use it): the
layout is `{split}_labels` (byte-string sample ids), `{split}_addresses/<id>` (cochlea channel 0..63) and
`{split}_timestamps/<id>` (seconds), as tonic's NTIDIGITS18 reads it.

Why every object is checked before its data is read: an HDF5 file can make a read fetch another file's
bytes (an external link, a dataset kept in external storage, a virtual dataset mapping other files), which
with `--keep-events` would land in shards the user publishes; and a file of a few hundred KB can declare
a chunked dataset of billions of elements that were never written, which a read allocates in full. So the
link class (only hard links inside the file are followed), the dataset's creation property list (no
external storage, no virtual layout), its dtype, its declared shape and its chunk shape are checked through
h5py's metadata API against `avdata.media.budget` first. h5py has no switch to stop HDF5 following
external links on access, hence the link checks on every name this reader looks up (`get(getlink=True)`
does not follow a link). A failed check is MediaError naming the file and the object: the clip is skipped
and recorded, or, for the label list the plan needs, the run stops with that message.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from avdata.errors import AvdataError, MediaError
from avdata.media import budget

SPLITS = ("train", "test")
N_CHANNELS = 64


def ntidigits_label(sample_id: str) -> str:
    """The spoken digit string of an N-TIDIGITS18 id: its last '-' field ('o' = oh, 'z' = zero)."""
    return sample_id.split("-")[-1]


class NTidigitsFile:
    """An open N-TIDIGITS18 file: `ids(split)` lists a split's samples, `sample(split, id)` reads one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if not stat.S_ISREG(os.stat(self.path).st_mode):  # a FIFO would block the open
                raise MediaError(self.path, "not a regular file")
            self.file = h5py.File(self.path, "r")
        except (OSError, ValueError) as exc:
            raise MediaError(self.path, f"not a readable HDF5 file ({exc}); download it again") from exc

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> NTidigitsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ids(self, split: str) -> list[str]:
        """The sample ids of a split's label list, in its order (its size and dtype checked first)."""
        ds = self._dataset(self.file, f"{split}_labels", f"{split}_labels", budget.MAX_H5_LABELS)
        text = h5py.check_string_dtype(ds.dtype)  # fixed-length or variable-length strings
        if text is None or (text.length or 0) > budget.MAX_H5_LABEL_BYTES:
            raise MediaError(self.path, f"'{split}_labels' holds {ds.dtype} values, not sample id strings of at "
                                        f"most {budget.MAX_H5_LABEL_BYTES} bytes")
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                for x in self._read(ds, f"{split}_labels")]

    def _read(self, ds: h5py.Dataset, shown: str) -> np.ndarray:
        """A checked dataset's values; HDF5's own errors (a corrupt chunk, a failed filter) name the object."""
        try:
            return np.asarray(ds[()])
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise MediaError(self.path, f"'{shown}' cannot be read ({exc}); download the file again") from exc

    def group(self, split: str, part: str) -> h5py.Group:
        """`{split}_{part}`, the group of every sample's addresses or timestamps."""
        name = f"{split}_{part}"
        group = self._follow(self.file, name, name)
        if not isinstance(group, h5py.Group):
            raise MediaError(self.path, f"not the N-TIDIGITS18 layout: '{name}' is not a group")
        return group

    def sample(self, split: str, sid: str) -> tuple[np.ndarray, np.ndarray]:
        """int64 channel addresses (0..63) and float64 timestamps (s, finite) of one sample."""
        where = f"sample {sid!r} of the {split} split"
        if "/" in sid or sid in ("", ".", ".."):  # a path: its first parts' links would be followed
            raise MediaError(self.path, f"{where}: the id is not a plain name; refused")
        a_ds = self._sample_dataset(split, "addresses", sid, where)
        t_ds = self._sample_dataset(split, "timestamps", sid, where)
        if a_ds.shape != t_ds.shape:
            raise MediaError(self.path, f"{where}: {a_ds.size} addresses but {t_ds.size} timestamps")
        addresses = self._read(a_ds, f"{split}_addresses/{sid}").astype(np.int64)
        timestamps = self._read(t_ds, f"{split}_timestamps/{sid}").astype(np.float64)
        if addresses.size and (addresses.min() < 0 or addresses.max() >= N_CHANNELS):
            bad = int(addresses.max() if addresses.max() >= N_CHANNELS else addresses.min())
            raise MediaError(self.path, f"{where}: channel {bad} outside the cochlea's {N_CHANNELS} channels "
                                        f"0..{N_CHANNELS - 1}")
        if not np.isfinite(timestamps).all():
            raise MediaError(self.path, f"{where}: a timestamp is NaN or infinite")
        return addresses, timestamps

    def _sample_dataset(self, split: str, part: str, sid: str, where: str) -> h5py.Dataset:
        group = self.group(split, part)
        link = group.get(sid, getlink=True)
        if link is None:
            raise MediaError(self.path, f"{where} lacks addresses or timestamps (no '{split}_{part}/{sid}')")
        ds = self._dataset(group, sid, f"{split}_{part}/{sid}", budget.MAX_EVENTS_PER_FILE)
        if ds.dtype.kind not in "iuf" or ds.dtype.itemsize > 8:
            raise MediaError(self.path, f"'{split}_{part}/{sid}' holds {ds.dtype} values, not numbers")
        return ds

    def _follow(self, group: h5py.Group, name: str, shown: str) -> h5py.Group | h5py.Dataset:
        """group[name] when it is a hard link inside this file (never following a soft or external link)."""
        link = group.get(name, getlink=True)
        if link is None:
            raise MediaError(self.path, f"not the N-TIDIGITS18 layout: no '{shown}'")
        if isinstance(link, h5py.ExternalLink):
            raise MediaError(self.path, f"'{shown}' is an external link to {link.filename}:{link.path}; refused "
                                        "because reading it would copy another file's bytes")
        if not isinstance(link, h5py.HardLink):
            raise MediaError(self.path, f"'{shown}' is a {type(link).__name__} to {getattr(link, 'path', '?')}, "
                                        "not an object of its own; refused")
        return group[name]

    def _dataset(self, group: h5py.Group, name: str, shown: str, max_elements: int) -> h5py.Dataset:
        """group[name], a 1-D dataset stored in this file within the element and chunk budgets."""
        ds = self._follow(group, name, shown)
        if not isinstance(ds, h5py.Dataset):
            raise MediaError(self.path, f"not the N-TIDIGITS18 layout: '{shown}' is not a dataset")
        dcpl = ds.id.get_create_plist()
        if dcpl.get_layout() == h5py.h5d.VIRTUAL:
            raise MediaError(self.path, f"'{shown}' is a virtual dataset (its data comes from other datasets "
                                        "or files); refused")
        if dcpl.get_external_count() > 0:
            outside = dcpl.get_external(0)[0].decode("utf-8", "replace")
            raise MediaError(self.path, f"'{shown}' keeps its data in an external file ({outside}); refused "
                                        "because reading it would copy another file's bytes")
        if ds.shape is None or len(ds.shape) != 1:
            raise MediaError(self.path, f"'{shown}' has shape {ds.shape}, not a 1-D list")
        if ds.shape[0] > max_elements:
            raise MediaError(self.path, f"'{shown}' declares {ds.shape[0]:,} elements, over the budget of "
                                        f"{max_elements:,} (a real file holds far fewer); not read")
        if ds.chunks is not None:
            chunk_bytes = math.prod(ds.chunks) * ds.dtype.itemsize
            if chunk_bytes > budget.MAX_H5_CHUNK_BYTES:
                raise MediaError(self.path, f"'{shown}' has {chunk_bytes:,}-byte chunks, over the budget of "
                                            f"{budget.MAX_H5_CHUNK_BYTES:,}; not read")
        return ds


def read_ntidigits(h5_path: str | Path, split: str) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """(sample id, digit string, int64 channel addresses, float64 timestamps in s) of every sample of a
    split, in the order of `{split}_labels`."""
    if split not in SPLITS:
        raise AvdataError(f"N-TIDIGITS split must be 'train' or 'test', got {split!r}")
    with NTidigitsFile(h5_path) as f:
        for part in ("addresses", "timestamps"):
            f.group(split, part)
        for sid in f.ids(split):
            addresses, timestamps = f.sample(split, sid)
            yield sid, ntidigits_label(sid), addresses, timestamps
