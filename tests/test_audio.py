"""Audio loading, resampling and spectrogram presets on real WAV files, checked against librosa and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from avdata.media.audio import (SPEC_PRESETS, audio_features, load_audio, resample, spectrogram, stft_magnitude,
                          wav_data_sizes)
from avdata.errors import AvdataError, MediaError

librosa = pytest.importorskip("librosa")


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.slow
def test_stft_matches_librosa():
    x = np.random.default_rng(0).standard_normal(22050 + 101).astype(np.float32) * 0.3
    ours = stft_magnitude(x, 512, 353)
    ref = np.abs(librosa.stft(x, n_fft=512, hop_length=353, window="hann", center=True, pad_mode="constant"))
    assert ours.shape == ref.shape == (257, 1 + len(x) // 353)
    assert np.allclose(ours, ref, atol=1e-4)
    # bit for bit what numpy's float32 transform gives (the bytes of prepared spectrograms depend on it)
    padded = np.pad(x, (256, 256))
    frames = np.stack([padded[i * 353:i * 353 + 512] for i in range(ours.shape[1])])
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)).astype(np.float32)
    assert np.array_equal(ours, np.abs(np.fft.rfft(frames * window, axis=1)).T.astype(np.float32))


@pytest.mark.slow
def test_resample_is_librosa_soxr_hq_exactly():
    rng = np.random.default_rng(1)
    for n, sr in ((16000, 16000), (16001, 48000), (12345, 44100), (7777, 8000)):
        x = (0.2 * rng.standard_normal(n)).astype(np.float32)
        ours = resample(x, sr, 22050)
        ref = librosa.resample(x, orig_sr=sr, target_sr=22050, res_type="soxr_hq")
        assert ours.dtype == np.float32 and ours.shape == ref.shape and np.array_equal(ours, ref)
    assert np.array_equal(resample(x, 8000, 8000), x)  # same rate: untouched


def test_reference_preset_on_a_tone(tmp_path):
    # 1 kHz in a 16 kHz stereo WAV: resampled to 22,050 Hz and mixed down; peak bin = 1000 / (22050 / 512)
    x = tone(1000, 16000, 1.0)
    sf.write(tmp_path / "a.wav", np.stack([x, x], 1), 16000, subtype="PCM_16")
    spec, info = audio_features(tmp_path / "a.wav")
    n = 22050  # ceil(16000 * 22050 / 16000)
    assert spec.dtype == np.float32 and spec.shape == (257, 1 + n // 353)
    assert info == {"duration_s": 1.0, "source_sample_rate": 16000, "source_channels": 2, "preset": "reference"}
    assert set(spec.argmax(axis=0)[1:-1].tolist()) == {round(1000 / (22050 / 512))}
    # value at the peak: |X| of a Hann-windowed sinusoid of amplitude a is about a * n_fft / 4
    peak = float(np.exp(np.median(spec.max(axis=0))))
    assert peak == pytest.approx(0.5 * 512 / 4, rel=0.1)
    # silence: log(0 + 1e-7)
    z = spectrogram(np.zeros(1000, np.float32), 22050)
    assert z.shape == (257, 1 + 1000 // 353) and np.allclose(z, np.log(np.float32(1e-7)))
    # by hand: load, resample, clamp, STFT, log
    wave, sr = load_audio(tmp_path / "a.wav", target_sr=22050)
    hand = np.log(np.abs(librosa.stft(np.clip(wave, -1, 1), n_fft=512, hop_length=353, pad_mode="constant")) + 1e-7)
    assert np.allclose(np.exp(spec), np.exp(hand), atol=1e-3)  # in |X|: the log magnifies rounding near 0


def test_spectrogram_contract_resamples_when_needed():
    x = tone(440, 16000, 0.5) + 0.01
    direct = spectrogram(x, 16000)
    via = spectrogram(resample(x, 16000, 22050), 22050)
    assert np.array_equal(direct, via)
    clipped = spectrogram(np.full(2000, 3.0, np.float32), 22050)  # clamped to 1.0 first
    assert np.array_equal(clipped, spectrogram(np.ones(2000, np.float32), 22050))
    with pytest.raises(AvdataError, match="--spectrogram must be one of .*got 'nope'"):
        spectrogram(x, 16000, preset="nope")
    with pytest.raises(ValueError):
        spectrogram(np.zeros((2, 100), np.float32), 22050)


def test_logmel_preset(tmp_path):
    x = tone(2000, 22050, 0.8)
    spec = spectrogram(x, 22050, preset="logmel")
    assert spec.shape == (SPEC_PRESETS["logmel"]["mel"], 1 + len(x) // 353) and spec.dtype == np.float32
    ref = librosa.feature.melspectrogram(y=x, sr=22050, n_fft=1024, hop_length=353, n_mels=128, pad_mode="constant",
                                         power=2.0)
    assert np.allclose(np.exp(spec), ref + 1e-6, rtol=1e-3, atol=1e-3)
    mel_hz = librosa.mel_frequencies(n_mels=128, fmax=11025)
    assert abs(mel_hz[int(np.median(spec.argmax(axis=0)))] - 2000) < 150


def test_mixdown_and_channels(tmp_path):
    left, right = np.full(4410, 0.5, np.float32), np.full(4410, -0.25, np.float32)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 44100, subtype="FLOAT")
    mono, sr = load_audio(tmp_path / "st.wav")
    assert sr == 44100 and mono.shape == (4410,) and np.allclose(mono, 0.125)
    both, _ = load_audio(tmp_path / "st.wav", mono=False)
    assert both.shape == (2, 4410) and np.allclose(both[0], 0.5) and np.allclose(both[1], -0.25)
    down, sr = load_audio(tmp_path / "st.wav", target_sr=22050)
    assert sr == 22050 and down.shape == (2205,) and down.dtype == np.float32


def test_unusable_audio(tmp_path):
    sf.write(tmp_path / "ok.wav", tone(300, 16000, 0.5), 16000, subtype="PCM_16")
    data = (tmp_path / "ok.wav").read_bytes()
    assert wav_data_sizes(tmp_path / "ok.wav") == (16000, 16000)
    (tmp_path / "cut.wav").write_bytes(data[:5000])
    with pytest.raises(MediaError, match="truncated WAV: header declares 16000 bytes of audio, file holds 4956"):
        load_audio(tmp_path / "cut.wav")
    with pytest.raises(MediaError, match="truncated WAV"):
        audio_features(tmp_path / "cut.wav")
    part, _ = load_audio(tmp_path / "cut.wav", allow_truncated=True)
    assert len(part) == 4956 // 2
    cases = {
        "missing.wav": "file not found",
        "zero.wav": "empty file",
        "text.wav": "not a readable sound file",
        "stub.wav": "Git LFS pointer stub, not the audio: run `git lfs pull` in the clone or download the real "
                    "files (`avdata download DATASET`; `avdata download --help` lists them)",  # not only CREMA-D's
        "empty.wav": "no audio samples",
        "nan.wav": "all NaN",
    }
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello, not audio at all" * 10)
    (tmp_path / "stub.wav").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64
                                       + "\nsize 99\n")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    for name, reason in cases.items():
        with pytest.raises(MediaError) as err:
            load_audio(tmp_path / name)
        assert reason in err.value.reason and str(tmp_path) not in err.value.reason, (name, err.value.reason)
    # a few NaN samples are zeroed, not fatal
    bad = tone(300, 16000, 0.1)
    bad[::7] = np.nan
    sf.write(tmp_path / "somenan.wav", bad, 16000, subtype="FLOAT")
    wave, _ = load_audio(tmp_path / "somenan.wav")
    assert np.isfinite(wave).all() and wave[0] == 0.0
