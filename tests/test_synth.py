"""The generators write real formats: read every file back with the real decoders and check the values."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from avdata.media.audio import audio_features, load_audio
from avdata.errors import MediaError
from avdata.media.events import read_aedat2
from avdata.media.ntidigits import read_ntidigits
from avdata.hashing import sha256_file
from avdata.datasets.cremad.sources import LISTS
from avdata.datasets.cremad.synth import COLOURS, EMOTIONS, TONES_HZ, make_cremad_raw, pick_clips, write_source_list
from avdata.datasets.mnistdvs_ntidigits.synth_mnistdvs import REAL_DURATION_US, REAL_EVENTS, make_mnistdvs_raw
from avdata.datasets.mnistdvs_ntidigits.synth_ntidigits import make_ntidigits_h5
from avdata.datasets.urbansound8k_av.synth import CLASSES, make_urbansound_raw
from avdata.media.video import probe_video, read_frames

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

SMALL = dict(width=96, height=72, fps=30, duration_range=(1.2, 2.2))


@pytest.fixture(scope="module")
def cremad(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cremad")
    return root, make_cremad_raw(root, n_clips=6, seed=5, with_bad=True, **SMALL)


def published() -> dict[str, str]:
    out = {}
    for name in ("train", "test"):
        with open(LISTS / f"{name}.csv", newline="") as f:
            out.update({row[0]: name for row in csv.reader(f) if row})
    return out


def test_cremad_good_clips_carry_the_class(cremad):
    root, made = cremad
    good = made["good"]
    split = published()
    # real clip names: 6 clips cover every emotion and both published splits, several actors
    assert len(good) == 6 and {c.split("_")[2] for c in good} == set(EMOTIONS)
    assert {split[c] for c in good} == {"train", "test"} and len({c.split("_")[0] for c in good}) >= 3
    for clip in good:
        label = EMOTIONS.index(clip.split("_")[2])
        flv, wav = root / "VideoFlash" / f"{clip}.flv", root / "AudioWAV" / f"{clip}.wav"
        info = probe_video(flv)
        assert (info.codec, info.width, info.height, info.fps, info.has_audio) == ("flv", 96, 72, 30.0, True)
        with av.open(str(flv)) as c:
            assert c.format.name == "flv" and c.streams.audio[0].codec_context.name in ("mp3", "mp3float")
            assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        frames, times, _ = read_frames(flv, short_side=None)
        dur = made["durations"][clip]
        n = round(dur * 30)  # frames written, at i / 30 s: one kept per started second
        assert times == [float(s) for s in range((n - 1) // 30 + 1)]
        # the square's colour is the class colour
        side = 72 // 3
        x0, y0 = (label % 3) * (96 - side) // 2, (label // 3) * (72 - side)
        patch = frames[0, y0 + 5:y0 + side - 5, x0 + 5:x0 + side - 5].reshape(-1, 3).mean(0)
        assert np.abs(patch - COLOURS[label]).max() < 40, (clip, patch)
        # 16 kHz mono 16-bit PCM whose tone is the class tone
        sinfo = sf.info(str(wav))
        assert (sinfo.samplerate, sinfo.channels, sinfo.subtype, sinfo.format) == (16000, 1, "PCM_16", "WAV")
        assert sinfo.frames == int(dur * 16000)
        spec, _ = audio_features(wav)
        peak_hz = np.median(spec.argmax(axis=0)) * 22050 / 512
        assert abs(peak_hz - TONES_HZ[label]) < 22050 / 512


def test_cremad_bad_clips_fail_as_intended(cremad):
    root, made = cremad
    expected = {"truncated FLV": ("video", "truncated"), "corrupt FLV (random bytes)": ("video", "not a readable"),
                "Git LFS pointer stub FLV": ("video", "Git LFS pointer stub"),
                "truncated WAV": ("audio", "truncated WAV"), "empty WAV": ("audio", "no audio samples"),
                "WAV missing": ("audio", "file not found")}
    assert sorted(made["bad"].values()) == sorted(expected)
    for clip, kind in made["bad"].items():
        which, reason = expected[kind]
        with pytest.raises(MediaError) as err:
            if which == "video":
                read_frames(root / "VideoFlash" / f"{clip}.flv")
            else:
                load_audio(root / "AudioWAV" / f"{clip}.wav")
        assert reason in err.value.reason, (kind, err.value.reason)
        # the other modality of a bad clip is fine
        if which == "video":
            load_audio(root / "AudioWAV" / f"{clip}.wav")
        else:
            read_frames(root / "VideoFlash" / f"{clip}.flv", short_side=32)


def test_cremad_source_rows_and_list(cremad, tmp_path):
    root, made = cremad
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert [r[0] for r in made["rows"]] == files and len(files) == 12 * 2 - 1  # one WAV missing
    for rel, size, digest in made["rows"][:3]:
        assert (root / rel).stat().st_size == size and sha256_file(root / rel) == digest
    out = write_source_list(root, tmp_path / "files.tsv")
    lines = out.read_text().splitlines()
    assert lines[0] == "path\tsize\tsha256" and len(lines) == len(files) + 1
    assert lines[1].split("\t") == [str(v) for v in made["rows"][0]]


def test_cremad_defaults_copy_the_real_clips_structure(tmp_path):
    """By default: 480x360, 29.97 fps, a single key frame, an MP3 track at 44.1 kHz mono inside the FLV,
    as the real VideoFlash files (tests/test_cremad_real.py); only the codec differs (FLV1, not VP6)."""
    made = make_cremad_raw(tmp_path, n_clips=1, seed=2, duration_range=(1.2, 1.2))
    flv = tmp_path / "VideoFlash" / f"{made['good'][0]}.flv"
    info = probe_video(flv)
    assert (info.codec, info.width, info.height) == ("flv", 480, 360)
    assert info.fps == pytest.approx(30000 / 1001, abs=1e-3)
    with av.open(str(flv)) as c:
        keys = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]
        audio = c.streams.audio[0]
        assert audio.codec_context.name in ("mp3", "mp3float") and audio.rate == 44100
        assert audio.codec_context.layout.name == "mono"
    assert keys == [True] + [False] * 35  # round(1.2 * 29.97) frames
    _, times, _ = read_frames(flv)
    assert times == [0.0, 1.001]


def test_cremad_is_deterministic(tmp_path):
    kw = dict(n_clips=2, seed=9, width=64, height=48, fps=30, duration_range=(1.0, 1.1))
    a = make_cremad_raw(tmp_path / "a", **kw)
    b = make_cremad_raw(tmp_path / "b", **kw)
    assert a["rows"] == b["rows"] and a["good"] == pick_clips(2, 9)
    c = make_cremad_raw(tmp_path / "c", clips=["1001_DFA_ANG_XX"], **{**kw, "n_clips": 1})
    assert c["good"] == ["1001_DFA_ANG_XX"]


@pytest.mark.parametrize("top", ["urbansound8k-av", None])
def test_urbansound_layout_rates_channels_and_zip(tmp_path, top):
    base = make_urbansound_raw(tmp_path / "f", per_class=4, unpaired=2, top=top)
    assert base == (tmp_path / "f" / top if top else tmp_path / "f")
    for label, cls in enumerate(CLASSES):
        imgs = sorted(p.stem for p in (base / "Dataset_v3_vision" / cls).glob("*.jpg"))
        wavs = sorted(p.stem for p in (base / "Dataset_v3_sound" / cls).glob("*.wav"))
        assert len(set(imgs) & set(wavs)) == 4 and len(set(imgs) ^ set(wavs)) == 2
        assert all(re.fullmatch(rf"\d+-{label}-0-\d+", s) for s in imgs + wavs)
        img = np.asarray(Image.open(base / "Dataset_v3_vision" / cls / f"{imgs[0]}.jpg"))
        assert img.shape == (48, 64, 3) and img[:, label * 6:label * 6 + 6].mean() > 180
    infos = [sf.info(str(p)) for p in sorted(base.glob("Dataset_v3_sound/*/*.wav"))]
    # the real excerpts' encodings (44.1 kHz stereo 16-bit original, 22,050 Hz mono float re-encoding) and two more
    assert {(i.samplerate, i.channels, i.subtype) for i in infos} == {
        (44100, 2, "PCM_16"), (22050, 1, "FLOAT"), (48000, 2, "PCM_24"), (16000, 1, "PCM_U8")}
    # float WAVs laid out as the real re-encoded excerpts: an 18-byte fmt chunk (IEEE float), then a fact chunk
    head = next(p for p, i in zip(sorted(base.glob("Dataset_v3_sound/*/*.wav")), infos)
                if i.subtype == "FLOAT").read_bytes()[:44]
    assert head[12:24] == b"fmt \x12\x00\x00\x00\x03\x00\x01\x00" and head[38:42] == b"fact"
    wave, sr = load_audio(next(base.glob("Dataset_v3_sound/siren/*.wav")), target_sr=22050)
    assert sr == 22050 and wave.ndim == 1
    z1 = make_urbansound_raw(tmp_path / "z1", per_class=2, unpaired=1, as_zip=True, top=top)
    z2 = make_urbansound_raw(tmp_path / "z2", per_class=2, unpaired=1, as_zip=True, top=top)
    assert z1.suffix == ".zip" and z1.read_bytes() == z2.read_bytes()  # reproducible bytes
    with zipfile.ZipFile(z1) as zf:
        names = zf.namelist()
        prefix = f"{top}/" if top else ""
        assert all(n.startswith(prefix + "Dataset_v3_") for n in names) and len(names) == 10 * 5
        data, sr = sf.read(io.BytesIO(zf.read(next(n for n in names if n.endswith(".wav")))))
        assert sr in (44100, 22050, 48000, 16000) and len(data) > 0


def test_mnistdvs_zips_read_back(tmp_path):
    root = make_mnistdvs_raw(tmp_path / "z", per_class=2, scales=(4, 16), seed=1)
    assert sorted(p.name for p in root.iterdir()) == [f"grabbed_data{d}.zip" for d in range(10)]
    with zipfile.ZipFile(root / "grabbed_data7.zip") as zf:
        names = zf.namelist()
        assert names == sorted(f"grabbed_data7/scale{s}/mnist_7_scale{s:02d}_{n:04d}.aedat"
                               for s in (4, 16) for n in (1, 2))
        data = zf.read("grabbed_data7/scale4/mnist_7_scale04_0001.aedat")
    assert data.startswith(b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n")
    (tmp_path / "one.aedat").write_bytes(data)
    ev = read_aedat2(tmp_path / "one.aedat")
    assert REAL_EVENTS[0] <= len(ev) <= REAL_EVENTS[1] and ev["t"][0] == 0 and np.all(np.diff(ev["t"]) >= 0)
    assert REAL_DURATION_US[0] <= ev["t"][-1] <= REAL_DURATION_US[1]
    # a scale-4 seven near the centre of the sensor, as the real digits (x 51-82, y 51-75)
    assert 50 <= np.percentile(ev["x"], 5) and np.percentile(ev["x"], 95) <= 84
    assert 50 <= np.percentile(ev["y"], 5) and np.percentile(ev["y"], 95) <= 77
    assert 0.45 < ev["p"].mean() < 0.53
    again = make_mnistdvs_raw(tmp_path / "z2", per_class=2, scales=(4, 16), seed=1)
    assert (again / "grabbed_data7.zip").read_bytes() == (root / "grabbed_data7.zip").read_bytes()
    loose = make_mnistdvs_raw(tmp_path / "loose", per_class=1, scales=(8,), as_zips=False, n_events=500)
    assert len(list(loose.glob("grabbed_data*/scale8/mnist_*_scale08_0001.aedat"))) == 10


def test_ntidigits_file_layout(tmp_path):
    path = make_ntidigits_h5(tmp_path, per_class=3, seed=2)
    assert path.name == "n-tidigits.hdf5"
    for split in ("train", "test"):
        rows = list(read_ntidigits(path, split))
        assert len(rows) == 10 * 3 + 2
        labels = [lab for _, lab, _, _ in rows]
        assert sorted(set(labels)) == sorted(["z", "1", "2", "3", "4", "5", "6", "7", "8", "9", "o", "1z3"])
        for sid, lab, addr, ts in rows:
            # the channel band follows the digit: centre 4 + 5.5 * d (z = 0, o = 10)
            if len(lab) == 1:
                d = 10 if lab == "o" else 0 if lab == "z" else int(lab)
                assert abs(np.median(addr) - (4 + 5.5 * d)) <= 2
            assert ts.max() < 0.5 * len(lab)
