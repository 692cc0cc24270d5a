"""Audio loading and spectrogram presets.

`audio_features(path, preset)` is what recipes call: load (any rate, any channel count), mix down,
resample, and compute the preset's log spectrogram, deterministically.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .errors import MediaError
from .lfs import is_lfs_pointer


SPEC_PRESETS: dict[str, dict[str, Any]] = {
    # The reference: 22,050 Hz, STFT n_fft 512, hop 353, zero padding, log(|X| + 1e-7): 257 linear bins.
    "reference": {"sr": 22050, "n_fft": 512, "hop": 353, "eps": 1e-7, "mel": None},
    # Log-mel alternative: 128 mel bins, n_fft 1024, hop 353, log(mel power + 1e-6).
    "logmel": {"sr": 22050, "n_fft": 1024, "hop": 353, "eps": 1e-6, "mel": 128},
}
RESAMPLE_QUALITY = "HQ"  # soxr, as librosa's default "soxr_hq"


def _wav_declared_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared data-chunk size, bytes actually present) of a RIFF/WAVE file, or None if not RIFF."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                start = f.tell()
                end = f.seek(0, 2)
                return size, end - start
            f.seek(size + (size & 1), 1)


def load_audio(path: str | Path, target_sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """float32 samples (mixed down by mean when mono) and their rate; MediaError for unusable files."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if is_lfs_pointer(path):
        raise MediaError(path, "Git LFS pointer stub, not the audio: run `git lfs pull` in the clone "
                               "or download with `avdata download cremad`")
    declared = _wav_declared_data_bytes(path)
    if declared is not None and declared[0] not in (0, 0xFFFFFFFF) and declared[1] < declared[0]:
        raise MediaError(path, f"truncated WAV: header declares {declared[0]} bytes of audio, file holds {declared[1]}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise MediaError(path, "not a readable sound file (" + str(exc).replace(str(path), "<file>") + ")") from exc
    if data.shape[0] == 0:
        raise MediaError(path, "no audio samples (empty WAV)")
    wave = data.mean(axis=1) if mono else data.T
    if not np.isfinite(wave).any():
        raise MediaError(path, "audio is all NaN/inf")
    wave = np.nan_to_num(wave).astype(np.float32)
    if target_sr is not None and target_sr != sr:
        wave = soxr.resample(wave, sr, target_sr, quality=RESAMPLE_QUALITY).astype(np.float32)
        sr = target_sr
    return wave, int(sr)


def spectrogram(wave: np.ndarray, sr: int, preset: str = "reference") -> np.ndarray:
    """float32 [F, T] log spectrogram of `wave`, which must already be at the preset's rate."""
    if preset not in SPEC_PRESETS:
        raise ValueError(f"unknown spectrogram preset {preset!r}; choose one of {', '.join(SPEC_PRESETS)}")
    p = SPEC_PRESETS[preset]
    if sr != p["sr"]:
        raise ValueError(f"preset {preset!r} expects {p['sr']} Hz audio, got {sr} Hz")
    x = np.clip(wave, -1.0, 1.0)
    mag = stft_magnitude(x, p["n_fft"], p["hop"])
    if p["mel"]:
        import librosa  # only the log-mel preset needs its filter bank

        mel = librosa.filters.mel(sr=sr, n_fft=p["n_fft"], n_mels=p["mel"])
        return np.log(mel @ (mag**2) + p["eps"]).astype(np.float32)
    return np.log(mag + p["eps"]).astype(np.float32)


def stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| [1 + n_fft // 2, 1 + len(x) // hop] with a periodic Hann window, centred frames and zero
    padding: the same numbers as librosa.stft(center=True, pad_mode="constant"), without importing
    librosa in every worker process (its lazy imports cost seconds per process)."""
    x = np.asarray(x, dtype=np.float32)
    pad = n_fft // 2
    padded = np.pad(x, (pad, pad), mode="constant")
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, n_fft), strides=(padded.strides[0] * hop, padded.strides[0]), writeable=False)
    return np.abs(np.fft.rfft(frames * window, axis=1)).T.astype(np.float32)


def audio_features(path: str | Path, preset: str = "reference") -> tuple[np.ndarray, dict[str, Any]]:
    """Load, mix down, resample and transform one file; also return facts for the sample's json."""
    path = Path(path)
    wave, sr = load_audio(path, target_sr=SPEC_PRESETS[preset]["sr"] if preset in SPEC_PRESETS else None)
    info = sf.info(str(path))
    spec = spectrogram(wave, sr, preset)
    facts = {"duration_s": float(len(wave) / sr), "source_sample_rate": int(info.samplerate),
             "source_channels": int(info.channels), "preset": preset}
    return spec, facts
