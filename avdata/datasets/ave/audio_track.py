"""The audio of a video file: AVE's clips carry their sound only as the AAC track of the MP4.

The track is decoded with PyAV (FFmpeg's decoder, which also drops the encoder's priming samples the MP4
declares), mixed down by the channel mean and handed to `avdata.media.audio`'s resampler and spectrogram
presets, so the result is computed exactly as for a WAV file holding the same samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from avdata.errors import AvdataError, MediaError
from avdata.media.audio import SPEC_PRESETS, resample, spectrogram
from avdata.media.budget import DEFAULT_MAX_DECODED_BYTES, audio_bytes, check_decoded, check_sample_rate

_INT_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2147483648.0, "s32p": 2147483648.0}


def _planar(frame) -> np.ndarray:
    """[channels, n] float32 of one decoded frame, whatever its sample format."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # interleaved: one row of n * channels samples
        arr = arr.reshape(-1, channels).T
    name = frame.format.name
    if name in _INT_SCALE:
        return arr.astype(np.float32) / np.float32(_INT_SCALE[name])
    if name in ("u8", "u8p"):
        return (arr.astype(np.float32) - 128.0) / 128.0
    return arr.astype(np.float32, copy=False)


def read_audio_track(path: str | Path, max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
                     stft: tuple[int | None, int, int] = (None, 0, 1)) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Mono float32 samples of the first audio stream (channel mean), its rate, and facts for the
    sample's json (codec, source_sample_rate, source_channels). MediaError when there is none or it
    cannot be decoded; OverBudget (a MediaError) as soon as the samples decoded so far, resampled and
    transformed as `stft` (target rate, n_fft, hop) says, would pass `max_bytes` (`avdata.media.budget`)."""
    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise MediaError(path, f"not a readable media container ({exc.__class__.__name__})") from exc
    try:
        if not container.streams.audio:
            raise MediaError(path, "no audio track in the video (AVE's sound is the MP4's AAC track)")
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        chunks, rate, channels = [], stream.codec_context.sample_rate, stream.codec_context.channels
        total = 0
        try:
            for frame in container.decode(stream):
                check_sample_rate(path, frame.sample_rate)
                total += frame.samples
                check_decoded(path, f"an audio track of {total:,}+ samples at {frame.sample_rate:,} Hz",
                              audio_bytes(total, 1, frame.sample_rate, *stft), max_bytes)
                data = _planar(frame)
                rate, channels = frame.sample_rate, data.shape[0]
                chunks.append(data.mean(axis=0, dtype=np.float32))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError(path, f"undecodable audio track ({exc.__class__.__name__})") from exc
            raise MediaError(path, f"audio track breaks off after {sum(map(len, chunks))} samples "
                                   f"({exc.__class__.__name__})") from exc
        codec = stream.codec_context.name
    finally:
        container.close()
    if not chunks or not rate:
        raise MediaError(path, "audio track holds no samples")
    wave = np.nan_to_num(np.concatenate(chunks), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)
    return wave, int(rate), {"codec": codec, "source_sample_rate": int(rate), "source_channels": int(channels)}


def audio_track_features(path: str | Path, preset: str = "reference",
                         max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> tuple[np.ndarray, dict[str, Any]]:
    """The preset's log spectrogram of a video's audio track, and facts for the sample's json (the same
    keys as `avdata.media.audio.audio_features`, plus the codec); OverBudget past `max_bytes`."""
    if preset not in SPEC_PRESETS:
        raise AvdataError(f"--spectrogram must be one of {', '.join(SPEC_PRESETS)}, got {preset!r}")
    p = SPEC_PRESETS[preset]
    wave, src_sr, facts = read_audio_track(path, max_bytes, (p["sr"], p["n_fft"], p["hop"]))
    sr = p["sr"]
    wave = resample(wave, src_sr, sr)
    spec = spectrogram(wave, sr, preset)
    return spec, {**facts, "duration_s": float(len(wave) / sr), "preset": preset}
