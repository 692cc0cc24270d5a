"""Raw-file budgets: what one clip may decode to, decided from its header and size before anything is allocated.

Why: a small hostile file can declare a huge decode (a 12 KB WAV at 1 Hz resampled to 22,050 Hz, an FLV of
43-byte skip frames one second apart, a 13000x13000 PNG of 493 KB). Every media reader estimates the bytes a
file will decode to from what its header says (samples x channels and the resampled length for audio, kept
frames x pixels for video, pixels x bands for images, demuxed packets) and refuses the file with
`OverBudget` (a `MediaError`: the recipe's clip is skipped and recorded in the manifest, the run goes on)
when the estimate passes the budget: `--max-decoded-mb` of `avdata prepare` (`DEFAULT_MAX_DECODED_MB`), so
one worker process's decoded arrays stay within about that many MB. Estimates are upper bounds of the
arrays a reader makes, not of the interpreter or libraries around them.

Event recordings (AEDAT files, N-TIDIGITS18 HDF5 samples) are budgeted by count instead, from a file's
size or an HDF5 dataset's declared shape. Why those numbers: a real MNIST-DVS recording holds 10,000-23,000
events and an N-TIDIGITS18 utterance a few thousand; the budgets allow about 200 times that. Reading,
reducing and binning a recording peaks at about 75 bytes per event (the AEDAT bytes, the event table, its
reduced copy, the int64 bin indices), an N-TIDIGITS18 sample at about 50, so at `MAX_EVENTS_PER_FILE` one
pair costs a worker about 0.5 GB: with `--jobs N`, plan on 1 GB per worker (`tests/test_budgets_events.py`
measures it).
"""

from __future__ import annotations

from pathlib import Path

from avdata.errors import MediaError

__all__ = ["DEFAULT_MAX_DECODED_MB", "DEFAULT_MAX_DECODED_BYTES", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE",
           "PACKET_BYTES", "OverBudget", "mb_bytes", "check_decoded", "check_sample_rate", "audio_bytes",
           "video_bytes", "image_bytes", "max_packets", "MAX_EVENTS_PER_FILE", "MAX_H5_LABELS",
           "MAX_H5_LABEL_BYTES", "MAX_H5_CHUNK_BYTES", "MAX_COUNT_PER_BIN", "check_event_count"]

#: The default budget of one clip's decoded arrays, in MB (2**20 bytes): a real clip of any dataset here
#: needs under 100 MB (a 10 s AVE clip's 10 kept frames and spectrogram: about 10 MB).
DEFAULT_MAX_DECODED_MB = 1024
DEFAULT_MAX_DECODED_BYTES = DEFAULT_MAX_DECODED_MB * 2**20

#: Sample rates a recording can have (telephone audio is 8 kHz, studio masters reach 768 kHz); outside this a
#: header is broken or hostile (at 1 Hz, 12 KB of samples resample to 132 million at 22,050 Hz).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000

#: Bytes one demuxed packet costs besides its payload (the Python and FFmpeg objects that hold it).
PACKET_BYTES = 512


class OverBudget(MediaError):
    """A file whose header declares more decoded data than the budget allows (the clip is skipped)."""


def mb_bytes(mb: int | float) -> int:
    """A budget in MB (as `--max-decoded-mb` takes it) in bytes."""
    return int(mb * 2**20)


def check_decoded(path: str | Path, what: str, nbytes: int, max_bytes: int) -> None:
    """Raise OverBudget naming the file, the estimate and the option that raises the limit."""
    if nbytes > max_bytes:
        raise OverBudget(path, f"over the decoded-size budget: {what} would decode to {nbytes / 2**20:,.0f} MB, "
                               f"more than --max-decoded-mb {max_bytes / 2**20:,.0f}; raise --max-decoded-mb "
                               "if the file is genuine")


def check_sample_rate(path: str | Path, sr: int) -> None:
    """Raise OverBudget for a sample rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise OverBudget(path, f"over the decoded-size budget: sample rate {sr:,} Hz is outside the "
                               f"{MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz of a real recording (a broken or "
                               "hostile header)")


def audio_bytes(frames: int, channels: int, sr: int, target_sr: int | None, n_fft: int = 1024,
                hop: int = 353) -> int:
    """Bytes `avdata.media.audio` holds at its peak for `frames` x `channels` samples at `sr`: the float32
    read and its mono mix, the resampled float32 signal, and the STFT's working arrays (windowed frames as
    float32 and float64, the complex128 spectrum: about 40 bytes per n_fft / hop per output sample)."""
    out = frames if not target_sr else -(-frames * target_sr // max(sr, 1))
    return 4 * frames * (channels + 1) + out * (8 + 40 * n_fft // hop)


def video_bytes(kept: int, out_w: int, out_h: int, width: int, height: int, packets: int = 0) -> int:
    """Bytes of a clip's `kept` frames at the output size, plus the working frames at the native size (the
    decoder's YUV frames and their RGB conversion) and the demuxed packets' bookkeeping."""
    return kept * out_w * out_h * 3 + 8 * width * height + packets * PACKET_BYTES


def image_bytes(width: int, height: int, bands: int, out_w: int, out_h: int) -> int:
    """Bytes of an image decoded in its own mode (`bands` channels of up to 4 bytes), converted to RGB and
    resized to out_w x out_h (a 1-pixel-wide strip enlarged to a short side of 256 is huge too)."""
    return width * height * (4 * bands + 3) + out_w * out_h * 3


def max_packets(max_bytes: int) -> int:
    """How many packets a demuxer may hold before their bookkeeping alone passes the budget."""
    return max_bytes // PACKET_BYTES


# Event recordings (counts rather than bytes; see the module docstring)

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
    """Raise OverBudget (a skipped clip) when a recording holds more events than `MAX_EVENTS_PER_FILE`."""
    if events > MAX_EVENTS_PER_FILE:
        raise OverBudget(path, f"{where}{events:,} events, over the budget of {MAX_EVENTS_PER_FILE:,} per "
                               "recording (about 0.5 GB of memory per worker); real recordings hold under "
                               "30,000, so this file is not a usable recording")
