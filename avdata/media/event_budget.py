"""Budgets for event recordings (AEDAT files, N-TIDIGITS18 HDF5 samples), decided from a file's size or an
HDF5 dataset's declared shape before anything is allocated: one hostile file then costs one skipped clip
(recorded in the manifest with the reason), not the worker's memory or the run.

Why these numbers: a real MNIST-DVS recording holds 10,000-23,000 events and an N-TIDIGITS18 utterance a few
thousand; the budgets allow about 200 times that. Reading, reducing and binning a recording peaks at
about 75 bytes per event (the AEDAT bytes, the event table, its reduced copy, the int64 bin indices), an
N-TIDIGITS18 sample at about 50, so at `MAX_EVENTS_PER_FILE` one pair costs a worker about 0.5 GB: with
`--jobs N`, plan on 1 GB per worker (`tests/test_budgets_events.py` measures it).
"""

from __future__ import annotations

from pathlib import Path

from avdata.errors import MediaError

#: events in one AEDAT file or one N-TIDIGITS18 sample (a 32 MB AEDAT body)
MAX_EVENTS_PER_FILE = 4_000_000
#: sample ids in one split's label list of the N-TIDIGITS18 file (the real file has about 10,000 per split)
MAX_H5_LABELS = 1_000_000
#: bytes of one fixed-length sample id (real ids such as b"ar-1z3" are a few bytes)
MAX_H5_LABEL_BYTES = 256
#: bytes of one HDF5 chunk, which HDF5 decompresses whole even for a short read
MAX_H5_CHUNK_BYTES = 64 << 20
#: what one event count of a bin can hold: the shards store counts as uint16 (see the manifest's features)
MAX_COUNT_PER_BIN = 65535


def check_event_count(path: str | Path, events: int, where: str = "") -> None:
    """Raise MediaError (a skipped clip) when a recording holds more events than `MAX_EVENTS_PER_FILE`."""
    if events > MAX_EVENTS_PER_FILE:
        raise MediaError(path, f"{where}{events:,} events, over the budget of {MAX_EVENTS_PER_FILE:,} per "
                               "recording (about 0.5 GB of memory per worker); real recordings hold under "
                               "30,000, so this file is not a usable recording")
