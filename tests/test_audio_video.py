"""Audio and video decoding on generated real-format files, checked against known values."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from avdata.audio import audio_features, load_audio, stft_magnitude
from avdata.errors import MediaError
from avdata.synth.cremad import write_flv
from avdata.video import probe_video, read_frames


def test_stft_matches_librosa_and_tone_peak(tmp_path):
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(0).standard_normal(22050 + 101).astype(np.float32) * 0.3
    ours = stft_magnitude(x, 512, 353)
    ref = np.abs(librosa.stft(x, n_fft=512, hop_length=353, pad_mode="constant"))
    assert ours.shape == ref.shape == (257, 1 + len(x) // 353)
    assert np.allclose(ours, ref, atol=1e-4)
    # a 1 kHz tone in a 16 kHz stereo WAV: resampled to 22,050 Hz and mixed down, peak at bin 1000/(22050/512)
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "a.wav", np.stack([tone, tone], 1).astype(np.float32), 16000, subtype="PCM_16")
    spec, info = audio_features(tmp_path / "a.wav")
    assert spec.shape == (257, 1 + 22050 // 353) and info["source_channels"] == 2 and info["source_sample_rate"] == 16000
    assert int(np.median(spec.argmax(axis=0))) == round(1000 / (22050 / 512))
    wave, sr = load_audio(tmp_path / "a.wav", target_sr=22050)
    assert sr == 22050 and wave.ndim == 1 and abs(len(wave) - 22050) <= 1
    logmel, _ = audio_features(tmp_path / "a.wav", preset="logmel")
    assert logmel.shape == (128, 1 + 22050 // 353)


def test_wav_problems(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:5000])
    with pytest.raises(MediaError, match="truncated WAV: header declares 16000 bytes"):
        load_audio(tmp_path / "cut.wav")
    (tmp_path / "text.wav").write_text("hello, not audio at all" * 10)
    with pytest.raises(MediaError, match="not a readable sound file"):
        load_audio(tmp_path / "text.wav")


def test_frames_per_second_and_even(tmp_path):
    path = tmp_path / "v.flv"
    write_flv(path, label=2, duration=3.2, width=160, height=120, fps=30, seed=0)
    info = probe_video(path)
    assert info.codec == "flv" and (info.width, info.height) == (160, 120) and info.fps == 30 and info.has_audio
    frames, times, _ = read_frames(path, short_side=60)
    assert frames.shape == (4, 60, 80, 3) and times == [0.0, 1.0, 2.0, 3.0]
    # the class colour (FEA: purple square) is visible in the decoded frame
    r, g, b = frames[0, 2:15, -15:-2].reshape(-1, 3).mean(0)
    assert b > 150 and r > 100 and g < 110
    even, etimes, _ = read_frames(path, mode="even", k=5, short_side=60)
    assert even.shape[0] == 5 and etimes[0] == 0.0 and etimes[-1] == pytest.approx(95 / 30, abs=0.04)
    again, _, _ = read_frames(path, short_side=60)
    assert np.array_equal(frames, again)
