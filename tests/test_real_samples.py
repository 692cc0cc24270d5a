"""The event and audio paths on real recordings: the 23 MNIST-DVS AEDAT 2.0 files (digit 0, scale 4, recorded
in 2008) and ten real UrbanSound8K excerpts (one in its original 44.1 kHz stereo 16-bit encoding, nine
re-encoded by their publisher to 22,050 Hz mono float32), from `../shared/datasets/*/sample/` beside the
repository (see each folder's README). Every file is also read by an independent parse written here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from avdata.errors import AvdataError
from avdata.media.audio import SPEC_PRESETS, audio_features, load_audio, resample, spectrogram
from avdata.media.events import bin_dvs, read_aedat2, reduce_to_sensor
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.datasets.registry import get_recipe
from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions
from avdata.datasets.urbansound8k_av.recipe import CLASSES as US_CLASSES
from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions
from avdata.datasets.mnistdvs_ntidigits.synth_mnistdvs import REAL_DURATION_US, REAL_EVENTS, SENSOR_CENTRE, dvs_events
from avdata.datasets.mnistdvs_ntidigits.synth_ntidigits import make_ntidigits_h5
from avdata.cli.avdata_app import app

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MNISTDVS = SHARED / "mnistdvs" / "sample"
URBANSOUND = SHARED / "urbansound8k" / "sample"

#: events and last timestamp (us) of each real recording mnist_0_scale04_<n>.aedat
AEDAT_FACTS = {
    "0001": (15744, 2210588), "0002": (16738, 2381690), "0003": (12596, 2070750), "0004": (13530, 2211004),
    "0005": (17498, 2287672), "0006": (15959, 2152672), "0007": (15574, 2244078), "0008": (20501, 2301297),
    "0009": (14663, 2301721), "0010": (15331, 2319509), "0011": (15308, 2247473), "0012": (17062, 2184518),
    "0013": (13921, 2056345), "0014": (19076, 2280631), "0015": (16892, 2280558), "0016": (17383, 2273787),
    "0017": (14702, 2054896), "0018": (19539, 2389748), "0019": (17817, 2247043), "0020": (14763, 2341171),
    "0216": (16373, 2117678), "0550": (16244, 2372209), "1000": (21357, 2396154),
}


def _need(folder: Path, pattern: str, count: int) -> list[Path]:
    files = sorted(folder.glob(pattern))
    if len(files) != count:
        pytest.skip(f"real samples not found: {folder} should hold {count} {pattern} files (shared/ beside the repo)")
    return files


@pytest.fixture(scope="module")
def aedat_files() -> list[Path]:
    return _need(MNISTDVS, "mnist_0_scale04_*.aedat", 23)


@pytest.fixture(scope="module")
def wav_files() -> list[Path]:
    return _need(URBANSOUND, "*.wav", 10)


# --- MNIST-DVS -------------------------------------------------------------------------------------------


def parse_aedat_by_hand(path: Path) -> tuple[int, np.ndarray]:
    """(header bytes, [n, 4] int64 rows t, x, y, p) straight from the bytes: lines starting with '#', then
    big-endian (address, timestamp) uint32 pairs; x = bits 1-7, y = bits 8-14, p = bit 0."""
    data = path.read_bytes()
    pos = 0
    while data[pos:pos + 1] == b"#":
        pos = data.index(b"\n", pos) + 1
    pairs = np.frombuffer(data, dtype=np.dtype([("a", ">u4"), ("t", ">u4")]), offset=pos)
    a = pairs["a"].astype(np.int64)
    assert not np.any(a & 0x8000), "no external (special) events in these files"
    rows = np.stack([pairs["t"].astype(np.int64), (a >> 1) & 0x7F, (a >> 8) & 0x7F, a & 1], axis=1)
    return pos, rows


def test_aedat_reader_on_every_real_recording(aedat_files):
    counts = []
    for path in aedat_files:
        n_expected, t_last = AEDAT_FACTS[path.stem[-4:]]
        header, rows = parse_aedat_by_hand(path)
        ev = read_aedat2(path)
        assert header == 216 and path.stat().st_size == 216 + 8 * n_expected
        assert len(ev) == len(rows) == n_expected
        # the recorded timestamps start at 0, so the reader's relative times are the file's own
        assert rows[0, 0] == 0 and np.all(np.diff(rows[:, 0]) >= 0)
        for i, field in enumerate(("t", "x", "y", "p")):
            assert np.array_equal(ev[field].astype(np.int64), rows[:, i]), (path.name, field)
        assert ev["t"][-1] == t_last and 2.05e6 < t_last < 2.40e6
        assert ev["x"].min() == 0 and ev["x"].max() >= 126 and ev["y"].min() == 1 and ev["y"].max() == 127
        assert 0.48 < ev["p"].mean() < 0.51  # about half ON
        # the digit: small and near the centre at scale 4
        x5, x50, x95 = np.percentile(ev["x"], [5, 50, 95])
        y5, y50, y95 = np.percentile(ev["y"], [5, 50, 95])
        assert 50 <= x5 <= 56 and 65 <= x50 <= 69 and 77 <= x95 <= 83, (path.name, x5, x50, x95)
        assert 50 <= y5 <= 54 and 62 <= y50 <= 66 and 72 <= y95 <= 76, (path.name, y5, y50, y95)
        counts.append(len(ev))
    assert (min(counts), int(np.median(counts)), max(counts)) == (12596, 16244, 21357)


def test_binned_real_recordings_keep_every_event(aedat_files):
    for path in aedat_files[:8] + aedat_files[-3:]:
        ev = read_aedat2(path)
        _, rows = parse_aedat_by_hand(path)
        full = bin_dvs(ev, 16, 128)  # the whole sensor: every event in exactly one cell
        assert full.sum() == len(ev)
        image = np.zeros((2, 128, 128), dtype=np.int64)
        np.add.at(image, (rows[:, 3], rows[:, 2], rows[:, 1]), 1)
        assert np.array_equal(full.sum(axis=0), image)
        # bins are equal windows over [0, t_last], the last one closed
        t_last = rows[-1, 0]
        per_bin = np.bincount(np.minimum(rows[:, 0] * 16 // t_last, 15), minlength=16)
        assert np.array_equal(full.sum(axis=(1, 2, 3)), per_bin)
        down = bin_dvs(reduce_to_sensor(ev, 28, "downsample"), 16, 28)
        assert down.shape == (16, 2, 28, 28) and down.sum() == len(ev)
        assert np.array_equal(down.sum(axis=(1, 2, 3)), per_bin)


def test_central_crop_keeps_80_to_90_percent_at_scale_4(aedat_files):
    kept = []
    for path in aedat_files:
        ev = read_aedat2(path)
        crop = reduce_to_sensor(ev, 28, "crop")
        inside = (ev["x"] >= 50) & (ev["x"] < 78) & (ev["y"] >= 50) & (ev["y"] < 78)
        assert len(crop) == int(inside.sum())
        assert bin_dvs(crop, 16, 28).sum() == len(crop)
        kept.append(len(crop) / len(ev))
    assert 0.80 < min(kept) and max(kept) < 0.91 and 0.85 < np.median(kept) < 0.87


def test_generator_takes_its_realism_from_the_real_recordings(aedat_files):
    """The MNIST-DVS generator's counts, durations, position and size are the real files' (see its docstring)."""
    real = [read_aedat2(p) for p in aedat_files]
    assert (min(map(len, real)), max(map(len, real))) == REAL_EVENTS
    assert (min(int(e["t"][-1]) for e in real), max(int(e["t"][-1]) for e in real)) == REAL_DURATION_US
    assert SENSOR_CENTRE == (np.median(np.concatenate([e["x"] for e in real])),
                             np.median(np.concatenate([e["y"] for e in real])))
    q = [5, 50, 95]
    real_x = np.median([np.percentile(e["x"], q) for e in real], axis=0)
    real_y = np.median([np.percentile(e["y"], q) for e in real], axis=0)
    real_kept = [len(reduce_to_sensor(e, 28, "crop")) / len(e) for e in real]
    rng = np.random.default_rng(5)
    spans = {}
    for scale in (4, 8, 16):
        for _ in range(3):
            ev = dvs_events(0, rng, scale=scale)
            assert REAL_EVENTS[0] <= len(ev) <= REAL_EVENTS[1] and ev["t"][0] == 0
            assert REAL_DURATION_US[0] <= ev["t"][-1] <= REAL_DURATION_US[1]
            gx, gy = np.percentile(ev["x"], q), np.percentile(ev["y"], q)
            spans.setdefault(scale, []).append((gx[2] - gx[0], gy[2] - gy[0]))
            if scale == 4:  # the same zero as the real ones, within two pixels, and as much cropped away
                assert np.abs(gx - real_x).max() <= 2 and np.abs(gy - real_y).max() <= 2, (gx, gy, real_x, real_y)
                assert min(real_kept) - 0.02 <= len(reduce_to_sensor(ev, 28, "crop")) / len(ev) <= max(real_kept)
                assert abs(ev["p"].mean() - np.mean([e["p"].mean() for e in real])) < 0.02
    w4, h4 = np.mean(spans[4], axis=0)
    for scale in (8, 16):  # larger scales: proportionally larger digits
        w, h = np.mean(spans[scale], axis=0)
        assert abs(w / w4 - scale / 4) < 0.2 * scale / 4 and abs(h / h4 - scale / 4) < 0.2 * scale / 4, \
            (scale, w / w4, h / h4)


def _real_mnistdvs_raw(tmp_path: Path, files: list[Path]) -> Path:
    """The real recordings in the unpacked MNIST-DVS layout, with a generated N-TIDIGITS file (no real one here)."""
    raw = tmp_path / "raw"
    folder = raw / "grabbed_data0" / "scale4"
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    make_ntidigits_h5(raw, per_class=2)
    return raw


@pytest.mark.slow
def test_crop_records_the_share_dropped_on_real_recordings(tmp_path, aedat_files):
    raw = _real_mnistdvs_raw(tmp_path, aedat_files)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out), "--bins", "8",
                                   "--scale", "4", "--sensor", "crop", "--per-class", "23", "--val-fraction", "0",
                                   "--samples-per-shard", "8"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 11 and m["splits"]["test"]["num_samples"] == 11
    import webdataset as wds

    by_split: dict[str, list[float]] = {}
    for split in ("train", "test"):
        urls = [str(out / s["file"]) for s in m["splits"][split]["shards"]]
        for s in wds.WebDataset(urls, shardshuffle=False).decode():
            meta = s["json"]
            ev = read_aedat2(raw / meta["visual_file"])
            kept = len(reduce_to_sensor(ev, 28, "crop"))
            assert meta["visual_events"] == len(ev) and meta["visual_events_kept"] == kept
            assert s["visual.npy"].sum() == kept
            assert meta["crop_dropped_share"] == round(1 - kept / len(ev), 6)
            assert 0.09 < meta["crop_dropped_share"] < 0.20
            by_split.setdefault(split, []).append(meta["crop_dropped_share"])
        st = m["splits"][split]["sample_stats"]["crop_dropped_share"]
        v = sorted(by_split[split])
        assert st["samples"] == 11 and st["min"] == v[0] and st["max"] == v[-1] and st["median"] == v[5]
        assert st["mean"] == round(sum(v) / 11, 6)
        assert 0.10 < st["median"] < 0.20
        # the summary shows the distribution
        assert (f"{split} crop_dropped_share: min {st['min']:.4f}, median {st['median']:.4f}, max {st['max']:.4f} "
                f"(mean {st['mean']:.4f}) over 11 samples") in res.output
        # and so does the dataset card
        assert (f"- {split} `crop_dropped_share`: min {st['min']}, median {st['median']}, mean {st['mean']}, "
                f"max {st['max']}") in (out / "README.md").read_text()
    # downsampling drops nothing, so it records nothing
    out2 = tmp_path / "out2"
    prepare(get_recipe("mnistdvs-ntidigits"), raw, out2, EventOptions(bins=8, scale=4, per_class=4, val_fraction=0.0),
            PrepareSettings(progress=False))
    m2 = load_manifest(out2)
    assert all("sample_stats" not in e for e in m2["splits"].values())


# --- UrbanSound8K ----------------------------------------------------------------------------------------


def parse_wav_by_hand(path: Path) -> tuple[np.ndarray, int, int]:
    """([n, channels] float64, rate, bits) from the RIFF chunks: 16-bit PCM / 32768, or IEEE float."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[pos + 8:pos + 24])
        elif cid == b"data":
            body = data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    tag, channels, rate, _, _, bits = fmt
    if tag == 1 and bits == 16:
        x = np.frombuffer(body, dtype="<i2").astype(np.float64) / 32768.0
    elif tag == 3 and bits == 32:
        x = np.frombuffer(body, dtype="<f4").astype(np.float64)
    else:
        raise AssertionError(f"{path.name}: format tag {tag}, {bits} bits not expected in the sample")
    return x.reshape(-1, channels), rate, bits


@pytest.mark.slow
def test_original_encoding_mixdown_resampling_and_spectrogram(wav_files):
    path = URBANSOUND / "7061-6-0-0.wav"
    hand, rate, bits = parse_wav_by_hand(path)
    assert (rate, bits, hand.shape) == (44100, 16, (99180, 2))  # 2.249 s of stereo
    assert not np.array_equal(hand[:, 0], hand[:, 1])  # truly two channels
    stereo, sr = load_audio(path, mono=False)
    assert sr == 44100 and np.array_equal(stereo, hand.T.astype(np.float32))
    mono, _ = load_audio(path)
    assert np.allclose(mono, hand.mean(axis=1), atol=1e-7)
    at22, sr22 = load_audio(path, target_sr=22050)
    assert sr22 == 22050 and len(at22) == 49590 and np.array_equal(at22, resample(mono, 44100, 22050))
    # half the rate keeps what lies below 11 kHz: the low-passed energy is nearly all of a gun shot's
    assert abs(np.sqrt(np.mean(at22 ** 2)) / np.sqrt(np.mean(mono ** 2)) - 1) < 0.1
    spec, facts = audio_features(path)
    assert spec.shape == (257, 1 + 49590 // 353) == (257, 141) and spec.dtype == np.float32
    assert np.array_equal(spec, spectrogram(at22, 22050, "reference"))
    assert np.array_equal(spec, spectrogram(mono, 44100, "reference"))  # the contract: resampled first
    assert facts == {"duration_s": 49590 / 22050, "source_sample_rate": 44100, "source_channels": 2,
                     "preset": "reference"}
    mel, _ = audio_features(path, preset="logmel")
    assert mel.shape == (128, 141)


def test_reencoded_excerpts_need_no_resampling(wav_files):
    reencoded = [p for p in wav_files if p.name.startswith("resampled-")]
    assert len(reencoded) == 9
    classes = set()
    for path in reencoded:
        hand, rate, bits = parse_wav_by_hand(path)
        assert (rate, bits, hand.shape) == (22050, 32, (88200, 1))  # 4.0 s, zero padded by the publisher
        wave, sr = load_audio(path, target_sr=22050)
        assert sr == 22050 and np.array_equal(wave, hand[:, 0].astype(np.float32))
        spec, facts = audio_features(path)
        assert spec.shape == (257, 250) and facts["source_sample_rate"] == 22050 and facts["source_channels"] == 1
        assert np.array_equal(spec, spectrogram(wave, 22050))
        assert np.isfinite(spec).all() and spec.max() > np.log(1e-7) + 5  # real sound, not silence
        classes.add(int(path.stem.split("-")[2]))
    assert classes == set(range(1, 10))


def test_original_in_other_urbansound_encodings(tmp_path, wav_files):
    """UrbanSound8K mixes 8/16/24-bit and float WAVs: the original written again in those encodings (by
    libsndfile) gives the same spectrogram, exactly where the encoding is lossless."""
    path = URBANSOUND / "7061-6-0-0.wav"
    data, sr = sf.read(str(path), dtype="float32")  # k / 32768: exact in 24-bit and float
    ref, _ = audio_features(path)
    for subtype, exact in (("PCM_24", True), ("FLOAT", True), ("PCM_U8", False)):
        other = tmp_path / f"7061-6-0-0.{subtype}.wav"
        sf.write(str(other), data, sr, subtype=subtype)
        spec, facts = audio_features(other)
        assert spec.shape == ref.shape and facts["source_channels"] == 2
        if exact:
            assert np.array_equal(spec, ref), subtype
        else:  # 8 bits: quantisation noise, but the loud part of the spectrogram stays
            loud = ref > np.percentile(ref, 75)
            assert np.median(np.abs(spec[loud] - ref[loud])) < 0.5


def real_urbansound_raw(base: Path, wav_files: list[Path], image=lambda stem: np.full((48, 64, 3), 128, np.uint8)
                        ) -> dict[str, Path]:
    """The real sounds in the UrbanSound8K-AV layout under `base`, each paired with a generated image
    (`image(stem)`; no real UrbanSound8K-AV image is at hand). Returns each stem's real file."""
    stems = {}
    for path in wav_files:
        stem = path.stem.removeprefix("resampled-")
        cls = US_CLASSES[int(stem.split("-")[1])]
        snd = base / "Dataset_v3_sound" / cls / f"{stem}.wav"
        img = base / "Dataset_v3_vision" / cls / f"{stem}.jpg"
        snd.parent.mkdir(parents=True, exist_ok=True)
        img.parent.mkdir(parents=True, exist_ok=True)
        snd.symlink_to(path)
        Image.fromarray(image(stem)).save(img)
        stems[stem] = path
    return stems


def test_urbansound_recipe_on_the_real_sounds(tmp_path, wav_files):
    base = tmp_path / "raw"
    stems = real_urbansound_raw(base, wav_files)
    out = tmp_path / "out"
    prepare(get_recipe("urbansound8k-av"), base, out, UrbanSoundOptions(val_fraction=0.0, short_side=32),
            PrepareSettings(progress=False))
    m = load_manifest(out)
    assert sum(e["num_samples"] for e in m["splits"].values()) == 10 and not m["skipped"]
    import webdataset as wds

    seen = set()
    for split, entry in m["splits"].items():
        urls = [str(out / s["file"]) for s in entry["shards"]]
        for s in wds.WebDataset(urls, shardshuffle=False).decode():
            meta = s["json"]
            src = stems[meta["name"]]
            original = not src.name.startswith("resampled-")
            assert meta["label_name"] == US_CLASSES[int(meta["name"].split("-")[1])]
            assert meta["audio"]["source_sample_rate"] == (44100 if original else 22050)
            assert meta["audio"]["source_channels"] == (2 if original else 1)
            assert meta["audio"]["duration_s"] == (round(49590 / 22050, 4) if original else 4.0)
            assert s["spec.npy"].shape == ((257, 141) if original else (257, 250))
            assert np.array_equal(s["spec.npy"], audio_features(src)[0])
            seen.add(meta["name"])
    assert len(seen) == 10
    assert SPEC_PRESETS["reference"]["sr"] == 22050
    assert json.loads((out / "manifest.json").read_text())["dataset"] == "urbansound8k-av"


def test_real_recordings_at_scales_8_and_16_grow_the_digit_and_the_crops_loss():
    """The one real recording of each scale (`../shared/datasets/mnistdvs/scales/`, trimmed by its publisher
    to the first ~0.2 s): the digit's width grows about 2x and 4x with the scale, so the central 28x28
    crop drops about 11%, 62% and 92% of the events at scales 4, 8 and 16 (README, MNISTDVS-NTIDIGITS)."""
    files = _need(SHARED / "mnistdvs" / "scales", "mnist_0_scale*_0001_qt1.aedat", 3)
    facts = {}
    for path in files:
        ev = read_aedat2(path)
        assert ev["t"][0] >= 0 and (np.diff(ev["t"]) >= 0).all() and ev["t"][-1] - ev["t"][0] < 200_000
        lo, hi = np.percentile(ev["x"], [5, 95])
        facts[int(path.name.split("scale")[1][:2])] = (len(ev), lo, hi, len(reduce_to_sensor(ev, 28, "crop")) / len(ev))
    assert [facts[s][0] for s in (4, 8, 16)] == [1782, 5078, 11209]
    assert [(facts[s][1], facts[s][2]) for s in (4, 8, 16)] == [(58, 79), (46, 89), (26, 108)]
    assert [round(1 - facts[s][3], 2) for s in (4, 8, 16)] == [0.11, 0.62, 0.92]


def test_urbansound_split_keeps_each_recording_on_one_side(tmp_path, wav_files):
    """UrbanSound8K's excerpts are slices of Freesound recordings (`<fsID>-...`); its authors warn that
    slices of one recording in train and test inflate accuracy. On the real file list of car_horn (429
    slices), a plain 70% cut put 43 of its 129 test slices beside 30 slices of the same recording in train:
    the cut now moves to the nearest recording boundary (270 / 159), and across all ten classes no
    recording is on both sides (nor in both train and val)."""
    import csv
    from collections import defaultdict

    from avdata.datasets.splits import first_fraction
    from avdata.datasets.urbansound8k_av.recipe import recording_of, sample_key

    table = SHARED / "urbansound8k" / "UrbanSound8K.csv"
    if not table.is_file():
        pytest.skip(f"real metadata not found: {table}")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    by_class: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_class[r["class"]].append(r["slice_file_name"].removesuffix(".wav"))
    sizes = {}
    for cls, stems in by_class.items():
        train, test = first_fraction([sample_key(cls, s) for s in stems], 0.7, group=recording_of)
        assert not {recording_of(k) for k in train} & {recording_of(k) for k in test}, cls
        sizes[cls] = (len(train), len(test))
    assert sum(a for a, _ in sizes.values()) == 6042 and sum(b for _, b in sizes.values()) == 2690
    plain = [first_fraction([sample_key(c, s) for s in stems], 0.7) for c, stems in by_class.items()]  # the authors'
    assert sum(len(a) for a, _ in plain) == 6111 and sum(len(b) for _, b in plain) == 2621
    assert sum(recording_of(k) in {recording_of(x) for x in a} for a, b in plain for k in b) == 146
    # the validation part carved from train holds whole recordings too (a per-slice draw put 574 of its 604
    # slices beside a slice of their recording left in train: the epoch chosen on it was chosen on train)
    from avdata.datasets.splits import stratified_holdout

    train_keys = [(k, cls) for cls, stems in by_class.items()
                  for k in first_fraction([sample_key(cls, s) for s in stems], 0.7, group=recording_of)[0]]
    val = stratified_holdout(train_keys, 0.1, 42, group=recording_of)
    left = {recording_of(k) for k, _ in train_keys if k not in val}
    assert len(val) == 627 and not {recording_of(k) for k in val} & left
    assert len(stratified_holdout(train_keys, 0.1, 42, group=lambda k: k)) == 604  # singletons: per-slice draw
    # the recipe's own plan on a car_horn tree of real files (every name linked to one real excerpt)
    base = tmp_path / "raw"
    snd_dir, img_dir = base / "Dataset_v3_sound" / "car_horn", base / "Dataset_v3_vision" / "car_horn"
    snd_dir.mkdir(parents=True)
    img_dir.mkdir(parents=True)
    picture = tmp_path / "picture.jpg"
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(picture)
    for stem in by_class["car_horn"]:
        (snd_dir / f"{stem}.wav").symlink_to(wav_files[0])
        (img_dir / f"{stem}.jpg").symlink_to(picture)
    plan = get_recipe("urbansound8k-av").plan(base, UrbanSoundOptions(val_fraction=0.0))
    sides: dict[str, set[str]] = defaultdict(set)
    for item in plan.items:
        sides[item.split].add(item.meta["name"].split("-")[0])
    assert {s: len([i for i in plan.items if i.split == s]) for s in sides} == {"train": 270, "test": 159}
    assert not sides["train"] & sides["test"]
    plan = get_recipe("urbansound8k-av").plan(base, UrbanSoundOptions(val_fraction=0.2))
    sides = defaultdict(set)
    for item in plan.items:
        sides[item.split].add(item.meta["name"].split("-")[0])
    assert sides["val"] and not sides["train"] & sides["val"] and not sides["val"] & sides["test"]
    # --train-cut file (--protocol reference sets it): the reference's plain cut, its 43 shared slices included
    plan = get_recipe("urbansound8k-av").plan(base, UrbanSoundOptions(val_fraction=0.0, train_cut="file"))
    assert [len([i for i in plan.items if i.split == s]) for s in ("train", "test")] == [300, 129]
    assert get_recipe("urbansound8k-av").reference["train_cut"] == "file"


def test_mnistdvs_recordings_under_their_own_names_in_a_flat_folder(tmp_path, aedat_files):
    """The real recordings as a mirror serves them, flat under their own names (`mnist_0_scale04_0001.aedat`,
    as shared/ holds them) and not in the zips' `grabbed_data0/scale4/`: planned as digit 0 at scale 4 (they
    were refused as "no recordings"); a second copy of one (the zip's folder beside the flat files) is
    recorded as skipped, not paired twice."""
    raw = tmp_path / "raw"
    (raw / "flat").mkdir(parents=True)
    for f in aedat_files:
        (raw / "flat" / f.name).symlink_to(f)
    (raw / "grabbed_data0" / "scale4").mkdir(parents=True)
    (raw / "grabbed_data0" / "scale4" / aedat_files[0].name).symlink_to(aedat_files[0])
    make_ntidigits_h5(raw, per_class=2)
    recipe = get_recipe("mnistdvs-ntidigits")
    plan = recipe.plan(raw, EventOptions(scale=4, per_class=23, val_fraction=0.0))
    visual = [it.sources["visual"] for it in plan.items]
    assert len(plan.items) == 22 and {it.label for it in plan.items} == {0}  # 23 recordings: 11 + 11
    assert len(set(visual)) == 22
    assert [(s["path"], s["reason"]) for s in plan.skipped if not s["reason"].startswith("odd one out")] == [
        (f"flat/{aedat_files[0].name}",
         f"a second copy of {aedat_files[0].name}: grabbed_data0/scale4/{aedat_files[0].name} is used")]
    with pytest.raises(AvdataError, match="no MNIST-DVS scale8 recordings"):  # the names say scale 4
        recipe.plan(raw, EventOptions(scale=8, per_class=23, val_fraction=0.0))
