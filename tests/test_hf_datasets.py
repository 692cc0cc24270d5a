"""Hugging Face `datasets`, stock webdataset, plain `tarfile` and the trainer read every field of every
sample the same.

Shards are prepared by the real recipes from the real samples in ../shared/datasets/ (the six CREMA-D VP6
clips with JPEG and with npy frames; the ten UrbanSound8K excerpts, with generated images; the 23
MNIST-DVS recordings, with generated N-TIDIGITS digits, binned and with the raw events; the three AVE
clips with their real annotation rows) and from generated data (CREMA-D clips of 2-4 per-second frames,
as the demo makes; UrbanSound8K-AV, AVE and event data), then loaded with `datasets` three ways
(map-style from the folder's card, `load_dataset("webdataset", data_files=...)`, streaming), with stock
webdataset (`.decode("rgb8")`, and the card's own snippet), with `tarfile`, and with the trainer's
reader and frame choice; every field of every sample is compared, and every array's dtype and shape,
and the columns `datasets` infers, against the manifest's `features`. Offline, with every `datasets`
cache under tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds

from avdata.datasets.cremad.recipe import EMOTIONS, CremadOptions
from avdata.datasets.registry import get_recipe
from avdata.errors import AvdataError, FieldError
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.shards.frames import frame_counts, frame_fields, real_frame_count
from avdata.shards.jpeg import decode_jpeg
from avdata.shards.npy import decode_npy, encode_npy
from avdata.shards.reader import iter_shard
from scmrl.data.config import StreamConfig
from scmrl.data.decode import StaticAdapter, choose_frames, frame_reader
from tests.manifests import load_manifest
from tests.test_card_hf import card_header, check_header

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

datasets = pytest.importorskip("datasets")

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cremad" / "sample"
REAL_CLIPS = [f"1001_DFA_{e}_XX" for e in EMOTIONS]


def _prepare(recipe: str, raw: Path, out: Path, options: Any, per_shard: int = 4) -> Path:
    prepare(get_recipe(recipe), raw, out, options, PrepareSettings(samples_per_shard=per_shard, jobs=1,
                                                                  overwrite=True))
    return out


@pytest.fixture(scope="module")
def synth_cremad(tmp_path_factory) -> Path:
    """The demo's kind of data: generated CREMA-D clips of 1.5-4 s, so 2-4 frames each."""
    from avdata.datasets.cremad.synth import make_cremad_raw

    root = tmp_path_factory.mktemp("hf_synth")
    make_cremad_raw(root / "raw", n_clips=8, seed=3, width=96, height=72)
    return _prepare("cremad", root / "raw", root / "shards", CremadOptions(val_fraction=0.3, short_side=48))


@pytest.fixture(scope="module")
def real_cremad_raw(tmp_path_factory) -> Path:
    """The six real CREMA-D clips (genuine FLVs, WAVs derived from them) in the dataset's layout."""
    if not (SAMPLE / "VideoFlash").is_dir():
        pytest.skip(f"real CREMA-D sample not found at {SAMPLE}")
    raw = tmp_path_factory.mktemp("hf_real") / "raw"
    for src, dst, ext in (("VideoFlash", "VideoFlash", "flv"), ("AudioWAV-derived", "AudioWAV", "wav")):
        (raw / dst).mkdir(parents=True)
        for clip in REAL_CLIPS:
            shutil.copyfile(SAMPLE / src / f"{clip}.{ext}", raw / dst / f"{clip}.{ext}")
    return raw


@pytest.fixture(scope="module")
def real_cremad(real_cremad_raw) -> Path:
    return _prepare("cremad", real_cremad_raw, real_cremad_raw.parent / "shards", CremadOptions(), per_shard=3)


def shard_paths(folder: Path) -> dict[str, list[str]]:
    m = load_manifest(folder)
    return {split: [str(folder / s["file"]) for s in entry["shards"]] for split, entry in m["splits"].items()}


def our_samples(folder: Path) -> dict[str, list[tuple[str, dict[str, bytes]]]]:
    """Every split's samples as the one shard reader gives them, in shard order."""
    return {split: [s for p in paths for s in iter_shard(p)] for split, paths in shard_paths(folder).items()}


def as_array(value: Any, dtype: str) -> np.ndarray:
    """A `datasets` value (a PIL image or nested lists) as a numpy array."""
    if hasattr(value, "convert"):
        return np.asarray(value.convert("RGB"))
    return np.asarray(value, dtype=dtype)


def assert_same_row(row: dict[str, Any], key: str, fields: dict[str, bytes], features: dict) -> None:
    """`row` (from `datasets` or stock webdataset, decoded) holds exactly the sample's fields, each equal
    to its own decoding of the stored bytes."""
    assert row["__key__"] == key
    assert set(row) - {"__key__", "__url__", "__local_path__"} == set(fields), key
    for name, data in fields.items():
        if name == "cls":
            assert row[name] == int(data)
        elif name == "json":
            assert row[name] == json.loads(data), key  # every key and value, none turned into None
        elif name.endswith(".jpg"):
            np.testing.assert_array_equal(as_array(row[name], "uint8"), decode_jpeg(data), err_msg=f"{key}.{name}")
        elif name.endswith(".npy"):
            want = decode_npy(data)
            got = as_array(row[name], str(want.dtype))
            assert got.shape == want.shape, (key, name)
            np.testing.assert_array_equal(got, want, err_msg=f"{key}.{name}")
        else:
            raise AssertionError(f"unexpected field {name}")


def check_tarfile(folder: Path, samples: dict[str, list[tuple[str, dict[str, bytes]]]]) -> None:
    """Plain `tarfile`: every member, in order, a regular file holding our reader's bytes, with the fixed
    metadata the shard format promises."""
    for split, paths in shard_paths(folder).items():
        members = []
        for path in paths:
            with tarfile.open(path) as tar:
                for member in tar:
                    assert member.isfile(), member.name
                    assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644), member.name
                    assert member.uname == member.gname == "", member.name
                    members.append((member.name, tar.extractfile(member).read()))
        assert members == [(f"{key}.{name}", data) for key, fields in samples[split] for name, data in fields.items()]


def manifest_feature(features: dict, name: str) -> dict:
    return features["frames.<i>.jpg"] if re.fullmatch(r"frames\.\d+\.jpg", name) else features[name]


def check_features(folder: Path, samples: dict[str, list[tuple[str, dict[str, bytes]]]],
                   inferred: list[Any]) -> None:
    """Every stored array has the manifest's dtype and shape (named dimensions free), every label its class
    name, and the columns `datasets` infers (`inferred`, one Features per load) the manifest's dtypes and
    number of dimensions."""
    m = load_manifest(folder)
    features = m["features"]
    for key, fields in (s for split in samples.values() for s in split):
        meta = json.loads(fields["json"])
        assert meta["label"] == int(fields["cls"]) and meta["label_name"] == m["classes"][int(fields["cls"])], key
        for name, data in fields.items():
            feature = manifest_feature(features, name)
            if name.endswith(".jpg"):
                array, shape = decode_jpeg(data), feature["shape"][1:]
            elif name.endswith(".npy"):
                array, shape = decode_npy(data), feature["shape"]
            else:
                continue
            assert str(array.dtype) == feature["dtype"] and array.ndim == len(shape), (key, name, array.dtype)
            assert all(isinstance(want, str) or want == got for want, got in zip(shape, array.shape)), (key, name)
    for columns in inferred:
        assert set(columns) - {"__key__", "__url__"} == set(samples[next(iter(samples))][0][1])
        assert columns["cls"] == datasets.Value("int64")
        for name, column in columns.items():
            if name.endswith(".jpg"):
                assert isinstance(column, datasets.Image), name
            elif name.endswith(".npy"):
                depth = 0
                while isinstance(column, datasets.List):
                    column, depth = column.feature, depth + 1
                feature = manifest_feature(features, name)
                assert (column, depth) == (datasets.Value(feature["dtype"]), len(feature["shape"])), name


def check_card_snippet(folder: Path, samples: dict[str, list[tuple[str, dict[str, bytes]]]]) -> None:
    """The card's own reading snippet, run beside the shards as printed: its sample is our first one."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    code = text.split("## Reading it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    here, secure = os.getcwd(), os.environ.get("WDS_SECURE")
    os.chdir(folder)
    try:
        exec(code, scope)
    finally:  # the snippet sets WDS_SECURE for its reader: not for the tests after this one
        os.chdir(here)
        if secure is None:
            os.environ.pop("WDS_SECURE", None)
        else:
            os.environ["WDS_SECURE"] = secure
    shard = re.search(r'wds\.WebDataset\("([^"]+)"', code).group(1)
    assert shard == card_header(folder)["configs"][0]["data_files"][0]["path"][0]  # the first split's first shard
    key, fields = next(iter_shard(folder / shard))
    assert_same_row(scope["sample"], key, fields, {})


def check_uniform(folder: Path, samples: dict[str, list[tuple[str, dict[str, bytes]]]]) -> int | None:
    """Every sample has the same members (the manifest's K frame members, where it has frames) and the
    same json keys, sources as [{file, sha256, ...}]; padding repeats the last real frame. Returns K."""
    m = load_manifest(folder)
    frames = m["features"].get("frames.<i>.jpg") or m["features"].get("frames.npy") or {"shape": [None]}
    k = frames["shape"][0]
    members, json_keys = set(), set()
    for key, fields in (s for split in samples.values() for s in split):
        members.add(tuple(sorted(fields)))
        meta = json.loads(fields["json"])
        json_keys.add(tuple(sorted(meta)))
        files = [s["file"] for s in meta["sources"]]
        assert files and files == sorted(files) and all(len(s["sha256"]) == 64 for s in meta["sources"])
        if k is None:
            continue
        real = meta["num_frames"]
        assert 1 <= real <= k and meta["frames_dropped"] == 0
        assert len(meta.get("video", {"frame_times_s": [0.0]})["frame_times_s"]) == real
        stored = [decode_jpeg(fields[f"frames.{i}.jpg"]) for i in range(k)] if "frames.0.jpg" in fields else \
            decode_npy(fields["frames.npy"])
        assert len(stored) == k
        for i in range(real, k):
            np.testing.assert_array_equal(stored[i], stored[real - 1], err_msg=key)
    assert len(members) == 1 and len(json_keys) == 1
    jpegs = {f"frames.{i}.jpg" for i in range(k)} if "frames.<i>.jpg" in m["features"] else set()
    want = {"cls", "json", *m["features"]} - {"frames.<i>.jpg"} | jpegs
    assert set(members.pop()) == want
    return k


def check_all_readers(folder: Path, cache_dir: str) -> dict[str, list[tuple[str, dict[str, bytes]]]]:
    ours = our_samples(folder)
    counts = {split: len(s) for split, s in ours.items()}
    features = load_manifest(folder)["features"]
    check_header(folder)
    check_tarfile(folder, ours)
    check_card_snippet(folder, ours)
    inferred = []
    # map-style from the folder (the card's configs), and from explicit data_files
    for ds in (datasets.load_dataset(str(folder), cache_dir=cache_dir),
               datasets.load_dataset("webdataset", data_files=shard_paths(folder), cache_dir=cache_dir)):
        assert {split: ds[split].num_rows for split in ds} == counts
        inferred += [ds[split].features for split in ds]
        for split in ds:
            for row, (key, fields) in zip(ds[split], ours[split], strict=True):
                assert_same_row(row, key, fields, features)
    streamed = datasets.load_dataset(str(folder), streaming=True, cache_dir=cache_dir)
    inferred += [streamed[split].features for split in streamed]
    check_features(folder, ours, inferred)
    for split in ours:
        rows = list(streamed[split])
        assert len(rows) == counts[split]
        for row, (key, fields) in zip(rows, ours[split], strict=True):
            assert_same_row(row, key, fields, features)
    for split, paths in shard_paths(folder).items():  # stock webdataset, as the card prints it
        rows = list(wds.WebDataset(paths, shardshuffle=False).decode("rgb8"))
        assert len(rows) == counts[split]
        for row, (key, fields) in zip(rows, ours[split], strict=True):
            assert_same_row(row, key, fields, features)
    return ours


def check_trainer(samples: dict[str, list[tuple[str, dict[str, bytes]]]], k: int, side: int) -> None:
    """The trainer's reader: K stored frames, the real ones chosen only, as before padding existed."""
    for key, fields in (s for split in samples.values() for s in split):
        stored, frame = frame_reader(fields)
        real = real_frame_count(fields["json"], stored)
        assert (stored, real) == (k, json.loads(fields["json"])["num_frames"])
        for i in range(stored):
            np.testing.assert_array_equal(frame(i), frame(min(i, real - 1)))
        for epoch in range(6):
            cfg = StreamConfig(kind="static", train=True, seed=7, base_size=side, image_size=32)
            spec, visual = StaticAdapter.decode(fields, key, cfg, epoch)
            (want,) = choose_frames(real, key, 7, epoch, True, None)
            side = cfg.frame_side
            img = frame(want)
            h, w = img.shape[:2]
            s = min(h, w)
            assert visual.shape == (side, side, 3) and s == side
            np.testing.assert_array_equal(visual.numpy(),
                                          img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
            assert spec.shape == (1, cfg.image_size, cfg.image_size)


def check_dataset(folder: Path, cache_dir: str) -> dict[str, list[int]]:
    """Every check above; returns each split's real frame counts."""
    samples = check_all_readers(folder, cache_dir)
    k = check_uniform(folder, samples)
    if k is not None:
        check_trainer(samples, k, load_manifest(folder)["options"]["short_side"])
    return {split: [json.loads(f["json"]).get("num_frames", 0) for _, f in rows] for split, rows in samples.items()}


def test_generated_cremad_reads_the_same_everywhere(synth_cremad, hf_offline):
    reals = sorted(n for split in check_dataset(synth_cremad, hf_offline).values() for n in split)
    m = load_manifest(synth_cremad)
    assert m["options"]["frame_slots"] == m["features"]["frames.<i>.jpg"]["shape"][0] == 5
    assert reals[0] == 2 and reals[-1] == 4  # clips of 2 to 4 frames, each padded to 5 members
    header = card_header(synth_cremad)
    assert header["license"] == "odbl" and "license_name" not in header


def test_the_cards_reading_snippet_runs_and_says_what_it_gives(synth_cremad, monkeypatch):
    text = (synth_cremad / "README.md").read_text(encoding="utf-8")
    code = text.split("## Reading it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(synth_cremad)  # the card sits beside its shards
    monkeypatch.setenv("WDS_SECURE", "1")  # (the snippet sets it: undone after the test)
    scope: dict[str, Any] = {}
    exec(code, scope)
    sample = scope["sample"]
    assert isinstance(sample["json"], dict) and isinstance(sample["cls"], int)
    assert sample["frames.0.jpg"].dtype == np.uint8 and sample["frames.0.jpg"].ndim == 3  # decoded, not bytes
    assert isinstance(sample["spec.npy"], np.ndarray)


def test_real_cremad_clips_read_the_same_everywhere(real_cremad, hf_offline):
    reals = check_dataset(real_cremad, hf_offline)
    # 56-70 frames at 29.97 fps: frames at 0, 1.001 and (when the clip reaches it) 2.002 s, padded to 5
    assert sorted(n for split in reals.values() for n in split) == [2, 2, 3, 3, 3, 3]


def test_real_cremad_clips_with_npy_frames_read_the_same_everywhere(real_cremad_raw, hf_offline):
    folder = _prepare("cremad", real_cremad_raw, real_cremad_raw.parent / "shards_npy",
                      CremadOptions(frame_format="npy", short_side=96), per_shard=4)  # `datasets`: nested lists
    reals = check_dataset(folder, hf_offline)
    assert sorted(n for split in reals.values() for n in split) == [2, 2, 3, 3, 3, 3]
    assert load_manifest(folder)["features"]["frames.npy"]["shape"] == [5, "H", "W", 3]
    frames = {decode_npy(f["frames.npy"]).shape for split in our_samples(folder).values() for _, f in split}
    assert frames == {(5, 96, 128, 3)}  # the real 480x360 clips


def test_real_urbansound_sounds_read_the_same_everywhere(tmp_path, hf_offline):
    from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions
    from tests.test_real_samples import URBANSOUND, _need, real_urbansound_raw

    def image(stem: str) -> np.ndarray:  # detailed pictures, so that JPEG decoding differences would show
        return np.random.default_rng(int(stem.split("-")[0])).integers(0, 256, (48, 64, 3), dtype=np.uint8)

    real_urbansound_raw(tmp_path / "raw", _need(URBANSOUND, "*.wav", 10), image)
    folder = _prepare("urbansound8k-av", tmp_path / "raw", tmp_path / "out",
                      UrbanSoundOptions(short_side=32, val_fraction=0), per_shard=3)
    reals = check_dataset(folder, hf_offline)
    assert sum(len(n) for n in reals.values()) == 10 and {n for split in reals.values() for n in split} == {1}
    specs = {decode_npy(f["spec.npy"]).shape for split in our_samples(folder).values() for _, f in split}
    assert specs == {(257, 141), (257, 250)}  # the original recording and the re-encoded ones


@pytest.mark.parametrize("options", [{}, {"sensor": "crop", "keep_events": True}], ids=["downsample", "crop-raw"])
def test_real_mnistdvs_recordings_read_the_same_everywhere(tmp_path, hf_offline, options):
    from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions
    from tests.test_real_samples import MNISTDVS, _need, _real_mnistdvs_raw

    raw = _real_mnistdvs_raw(tmp_path, _need(MNISTDVS, "mnist_0_scale04_*.aedat", 23))
    folder = _prepare("mnistdvs-ntidigits", raw, tmp_path / "out",
                      EventOptions(bins=8, scale=4, per_class=23, val_fraction=0, **options), per_shard=8)
    check_dataset(folder, hf_offline)
    samples = [f for split in our_samples(folder).values() for _, f in split]
    assert len(samples) == 22  # 23 real recordings paired with the generated N-TIDIGITS digits
    for fields in samples:
        meta = json.loads(fields["json"])
        kept = meta.get("visual_events_kept", meta["visual_events"])
        assert decode_npy(fields["visual.npy"]).sum() == kept and 12_596 <= meta["visual_events"] <= 21_357
        if options:
            assert len(decode_npy(fields["visual_events.t.npy"])) == meta["visual_events"]


def test_real_ave_clips_read_the_same_everywhere(tmp_path, hf_offline):
    from avdata.datasets.ave.recipe import AveOptions
    from tests.test_ave_real import CLIPS, REAL, make_raw

    if not (REAL / "sample").is_dir():
        pytest.skip(f"real AVE material not found at {REAL}")
    make_raw(tmp_path / "raw", header=False)
    folder = _prepare("ave", tmp_path / "raw", tmp_path / "out", AveOptions(short_side=64))
    reals = check_dataset(folder, hf_offline)
    assert {split: len(n) for split, n in reals.items()} == {"train": 1, "val": 1, "test": 1}
    assert {json.loads(f["json"])["clip"] for split in our_samples(folder).values() for _, f in split} == set(CLIPS)


def test_urbansound8k_av_reads_the_same_everywhere(tmp_path, hf_offline):
    from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions
    from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw

    raw = make_urbansound_raw(tmp_path / "raw", per_class=2, unpaired=0)
    # the other layout: frames in one npy array, a float16 spectrogram
    folder = _prepare("urbansound8k-av", raw, tmp_path / "out", UrbanSoundOptions(
        short_side=32, val_fraction=0, frame_format="npy", spec_dtype="float16"))
    reals = check_dataset(folder, hf_offline)
    assert load_manifest(folder)["features"]["frames.npy"]["shape"][0] == 1
    assert {n for split in reals.values() for n in split} == {1}


def test_ave_short_clips_padded_to_ten_frames(tmp_path, hf_offline):
    from avdata.datasets.ave.recipe import AveOptions
    from avdata.datasets.ave.synth import make_ave_raw

    make_ave_raw(tmp_path / "raw", labels=[0, 1], per_class=2, duration=3.0, width=64, height=48)
    folder = _prepare("ave", tmp_path / "raw", tmp_path / "out", AveOptions(short_side=32))
    reals = check_dataset(folder, hf_offline)
    assert load_manifest(folder)["features"]["frames.<i>.jpg"]["shape"][0] == 10
    assert {n for split in reals.values() for n in split} == {3}
    header = card_header(folder)  # "other" names its terms, as the Hub's card template asks
    assert (header["license"], header["license_name"]) == ("other", "ave-research-use")
    assert header["license_link"].startswith("https://")


def test_events_read_the_same_everywhere(tmp_path, hf_offline):
    from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions
    from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5

    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=2, scales=(16,), n_events=300)
    make_ntidigits_h5(raw, per_class=1)
    folder = _prepare("mnistdvs-ntidigits", raw, tmp_path / "out",
                      EventOptions(bins=4, per_class=2, val_fraction=0, keep_events=True), per_shard=8)
    check_dataset(folder, hf_offline)
    # the raw events, one plain column per member (a structured array is no type `datasets` knows)
    (key, fields), *_ = our_samples(folder)["train"]
    meta = json.loads(fields["json"])
    t, x = decode_npy(fields["visual_events.t.npy"]), decode_npy(fields["visual_events.x.npy"])
    assert t.dtype == np.int64 and x.dtype == np.int16 and len(t) == len(x) == meta["visual_events"] == 300
    assert len(decode_npy(fields["audio_events.channel.npy"])) == meta["audio_events"]
    header = card_header(folder)
    assert header["license"] == "other" and header["license_name"] and header["license_link"].startswith("http")


def test_frame_slots_pad_and_drop_in_both_formats():
    frames = np.stack([np.full((8, 10, 3), 40 * i, np.uint8) for i in range(3)])
    jpeg = frame_fields(frames, "jpeg", slots=5)
    assert list(jpeg) == [f"frames.{i}.jpg" for i in range(5)]
    assert jpeg["frames.3.jpg"] == jpeg["frames.4.jpg"] == jpeg["frames.2.jpg"] != jpeg["frames.1.jpg"]
    padded = decode_npy(frame_fields(frames, "npy", slots=5)["frames.npy"])
    assert padded.shape == (5, 8, 10, 3) and [int(f[0, 0, 0]) for f in padded] == [0, 40, 80, 80, 80]
    cut = decode_npy(frame_fields(frames, "npy", slots=2)["frames.npy"])
    assert [int(f[0, 0, 0]) for f in cut] == [0, 40]
    assert frame_counts(3, 5) == {"num_frames": 3, "frames_dropped": 0}
    assert frame_counts(7, 5) == {"num_frames": 5, "frames_dropped": 2}
    with pytest.raises(AvdataError, match="at least one frame"):
        frame_fields(frames[:0], "jpeg", slots=5)


def test_real_frame_count_from_json():
    assert real_frame_count(b'{"num_frames": 2}', 5) == 2
    assert real_frame_count(b'{"clip": "x"}', 4) == 4  # shards made before padding: every frame is real
    assert real_frame_count(None, 3) == 3
    for bad in (b'{"num_frames": 0}', b'{"num_frames": 6}', b'{"num_frames": 2.0}', b'{"num_frames": true}'):
        with pytest.raises(FieldError, match="num_frames .* is not a count of 1..5"):
            real_frame_count(bad, 5)
    with pytest.raises(FieldError, match="not valid JSON"):
        real_frame_count(b"{", 5)


def test_trainer_draws_only_real_frames_and_matches_unpadded_choice():
    """The same frame indices as an unpadded sample of the clip's own frames, for every seed and epoch."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    meta = json.dumps({"num_frames": 3, "frames_dropped": 0}).encode()
    spec = {"spec.npy": encode_npy(np.zeros((16, 20), np.float32))}
    padded = {"cls": b"1", "json": meta, **frame_fields(frames, "npy", slots=5), **spec}
    old = {"cls": b"1", "json": b"{}", **frame_fields(frames, "npy"), **spec}
    for train in (True, False):
        for per_step in (False, True):
            cfg = StreamConfig(kind="static", train=train, seed=3, base_size=16, image_size=16, time_steps=4,
                               frames_per_step=per_step)
            for epoch in range(8):
                for key in ("a", "b", "c"):
                    got = StaticAdapter.decode(padded, key, cfg, epoch)[1].numpy()
                    want = StaticAdapter.decode(old, key, cfg, epoch)[1].numpy()
                    np.testing.assert_array_equal(got, want)
