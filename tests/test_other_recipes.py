"""UrbanSound8K-AV and MNISTDVS-NTIDIGITS prepared from generated files in the real layouts."""

from __future__ import annotations

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from tests.manifests import load_manifest
from avdata.cli.avdata_app import app
from avdata.media.events import bin_dvs, reduce_to_sensor
from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5
from avdata.datasets.mnistdvs_ntidigits.synth_mnistdvs import REAL_DURATION_US, REAL_EVENTS, dvs_events
from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw


def read_all(out, m, split):
    urls = [str(out / s["file"]) for s in m["splits"][split]["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))


@pytest.mark.slow
def test_urbansound_from_zip_pairs_splits_and_skips(tmp_path):
    zpath = make_urbansound_raw(tmp_path / "raw", per_class=10, as_zip=True, unpaired=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "urbansound8k-av", "--raw", str(zpath), "--out", str(out),
                                   "--val-fraction", "0.15", "--short-side", "32", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    # 10 pairs per class: first 7 (by name) train+val, last 3 test; val = round(0.15 * 7) = 1 per class
    assert m["splits"]["test"]["num_samples"] == 30
    assert m["splits"]["val"]["num_samples"] == 10 and m["splits"]["train"]["num_samples"] == 60
    assert all(v == 3 for v in m["splits"]["test"]["class_counts"].values())
    assert len(m["skipped"]) == 20 and all(s["reason"].startswith("unpaired") for s in m["skipped"])
    test = read_all(out, m, "test")
    names = sorted(s["json"]["name"] for s in test if s["cls"] == 0)
    assert names == ["100000-0-0-7", "100000-0-0-8", "100000-0-0-9"] or len(names) == 3
    s = test[0]
    assert s["frames.0.jpg"].shape == (32, 43, 3) and "frames.1.jpg" not in s and s["spec.npy"].shape[0] == 257
    # varied rates and channels were resampled to 22,050 Hz and mixed down: 0.5 s -> 1 + 11025 // 353 frames
    assert all(abs(x["spec.npy"].shape[1] - 32) <= 1 for x in test)
    assert {x["json"]["audio"]["source_channels"] for x in test} == {1, 2}
    # every source file's sha256 is recorded so two copies can be compared
    assert len(m["sources"]["sha256"]) == 200


@pytest.mark.slow
def test_mnistdvs_ntidigits_binned_pairs(tmp_path):
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=5, scales=(8, 16))
    make_ntidigits_h5(raw, per_class=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out),
                                   "--bins", "8", "--per-class", "4", "--val-fraction", "0"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 20 and m["splits"]["test"]["num_samples"] == 20
    assert m["features"]["visual.npy"]["shape"] == [8, 2, 28, 28]
    rng = np.random.default_rng(99)  # each digit's look on the 28x28 sensor, from fresh recordings
    templates = np.stack([bin_dvs(reduce_to_sensor(dvs_events(d, rng, 20000, scale=16), 28), 1, 28).sum(axis=(0, 1))
                          .ravel().astype(np.float64) for d in range(10)])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    for split in ("train", "test"):
        samples = read_all(out, m, split)
        for s in samples:
            v, a, meta = s["visual.npy"], s["audio.npy"], s["json"]
            assert v.shape == (8, 2, 28, 28) and v.dtype == np.uint16 and a.shape == (8, 64)
            assert v.sum() == meta["visual_events"] and a.sum() == meta["audio_events"]
            assert REAL_EVENTS[0] <= meta["visual_events"] <= REAL_EVENTS[1]  # as many as a real recording
            assert REAL_DURATION_US[0] / 1e6 <= meta["visual_duration_s"] <= REAL_DURATION_US[1] / 1e6
            assert "scale16" in meta["visual_file"] and meta["audio_split"] == split
            # the audio is an isolated digit of the same class ('z' is 0, 'o' never appears)
            word = meta["audio_id"].split("-")[-1]
            assert len(word) == 1 and word != "o" and (0 if word == "z" else int(word)) == s["cls"]
            # the digit is drawn at the sensor's centre, as in the real recordings; its shape gives the class
            image = v.sum(axis=(0, 1)).astype(np.float64)
            for axis, centre in ((0, 67), (1, 63)):  # middle of the 5th-95th percentile span, x then y
                cdf = np.cumsum(image.sum(axis=axis)) / image.sum()
                mid = (np.searchsorted(cdf, 0.05) + np.searchsorted(cdf, 0.95)) / 2
                assert abs(mid - centre * 28 / 128) <= 2.5, (s["cls"], axis, mid)
            image = image.ravel() / np.linalg.norm(image)
            assert int(np.argmax(templates @ image)) == s["cls"]
        # tiling: 2 isolated samples per class and split are reused for 2 visual samples each
        ids = [s["json"]["audio_id"] for s in samples if s["cls"] == 3]
        assert len(ids) == 2 and len(set(ids)) == 2


@pytest.mark.slow
def test_crop_share_survives_parts_and_jobs(tmp_path):
    """The per-split crop figures come from the shards' records, so --jobs and --part runs give the same
    manifest; at scale 16 (digits four times the real scale-4 size) the central crop drops most events."""
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=4, scales=(16,), n_events=1500)
    make_ntidigits_h5(raw, per_class=2)
    base = ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--bins", "4", "--per-class", "4",
            "--val-fraction", "0", "--sensor", "crop", "--samples-per-shard", "6"]
    runner = CliRunner()
    for out, extra in (("one", []), ("two", ["--jobs", "2"])):
        assert runner.invoke(app, base + ["--out", str(tmp_path / out)] + extra).exit_code == 0
    for i in range(2):
        assert runner.invoke(app, base + ["--out", str(tmp_path / "parts"), "--part", f"{i}/2"]).exit_code == 0
    texts = {(tmp_path / d / "manifest.json").read_text() for d in ("one", "two", "parts")}
    assert len(texts) == 1
    m = load_manifest(tmp_path / "one")
    for split in ("train", "test"):
        st = m["splits"][split]["sample_stats"]["crop_dropped_share"]
        shares = sorted(s["json"]["crop_dropped_share"] for s in read_all(tmp_path / "one", m, split))
        assert st["samples"] == 20 == len(shares) and st["min"] == shares[0] and st["max"] == shares[-1]
        assert st["median"] == round((shares[9] + shares[10]) / 2, 6) and st["median"] > 0.5


def test_sample_stats_summary_and_schema():
    from avdata.errors import AvdataError
    from avdata.shards.manifest import Manifest, SplitEntry, summarize_stat
    from avdata.shards.schema import validate

    assert summarize_stat([0.3, 0.1, 0.2, 0.4]) == {"samples": 4, "min": 0.1, "median": 0.25, "mean": 0.25, "max": 0.4}
    assert summarize_stat([0.5])["median"] == 0.5
    m = Manifest("x", ["a"], {},
                 {"train": SplitEntry.of_shards([], {"a": 0}, {"crop_dropped_share": summarize_stat([0.1])})})
    m.check()
    m = m.to_dict()
    m["splits"]["train"]["sample_stats"]["crop_dropped_share"] = {"min": 0.1}
    with pytest.raises(AvdataError, match=r"sample_stats.crop_dropped_share: lacks 'samples'"):
        validate(m)


@pytest.mark.slow
def test_a_smaller_subset_than_asked_is_said_not_silent(tmp_path):
    """--per-class beyond the recordings there are, and a --val-fraction too small to hold out one sample,
    each give a note in manifest.json and in the summary (the run itself goes on)."""
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=3, scales=(8,))
    make_ntidigits_h5(raw, per_class=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out),
                                   "--bins", "4", "--scale", "8", "--per-class", "10", "--val-fraction", "0.05"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 10  # 3 recordings a digit: 1 train, 1 test (one left over)
    warnings = m["notes"]["warnings"]
    assert len(warnings) == 2 and "val" not in m["splits"]
    assert "--per-class 10: only 3 (digit 0)" in warnings[0] and "3 (digit 9)" in warnings[0]
    assert "--val-fraction 0.05 held out no sample" in warnings[1]
    flat = " ".join(res.output.split())
    assert "note: --per-class 10: only 3 (digit 0)" in flat and "--val-fraction 0.05 held out no sample" in flat
    # asking for no more than there is gives no note
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out),
                                   "--bins", "4", "--scale", "8", "--per-class", "2", "--val-fraction", "0",
                                   "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "warnings" not in load_manifest(out)["notes"] and "note:" not in res.output


def test_urbansound_class_folders_in_other_spellings_and_strays_are_not_dropped_unseen(tmp_path):
    """A class folder spelt `Dog Bark` or `dog-bark` is that class (its pairs were silently dropped, the
    class left empty); a folder naming no class is recorded with its path, and a class left without pairs
    is a plan warning, not just a 0 in the summary table."""
    from avdata.datasets.registry import get_recipe
    from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions

    raw = tmp_path / "raw"
    make_urbansound_raw(raw, per_class=2, top=None, seconds=0.1)
    (raw / "Dataset_v3_vision" / "dog_bark").rename(raw / "Dataset_v3_vision" / "Dog Bark")
    (raw / "Dataset_v3_sound" / "dog_bark").rename(raw / "Dataset_v3_sound" / "dog-bark")
    (raw / "Dataset_v3_sound" / "siren").rename(raw / "Dataset_v3_sound" / "sirens")
    (raw / "Dataset_v3_vision" / "empty").mkdir()
    plan = get_recipe("urbansound8k-av").plan(raw, UrbanSoundOptions(val_fraction=0.0))
    per_class = {c: sum(1 for it in plan.items if it.meta["class"] == c) for c in ("dog_bark", "siren", "car_horn")}
    assert per_class == {"dog_bark": 2, "siren": 0, "car_horn": 2}
    assert [(s["path"], s["reason"].split(":")[0]) for s in plan.skipped if s["key"].startswith("folder-")] == [
        ("Dataset_v3_sound/sirens/", "not a class folder")]
    assert plan.notes["warnings"] == ["no image/sound pairs for class siren (no Dataset_v3_vision/<class>/ and "
                                      "Dataset_v3_sound/<class>/ files of the same name)"]


def test_mnistdvs_val_pairs_hold_out_whole_spoken_digit_recordings(tmp_path):
    """N-TIDIGITS samples are tiled over a class's pairs, so one recording sits in several train pairs; the
    val part carved from train holds out whole recordings (it drew pairs, so the network trained on the
    very sound of most val pairs, beside another digit picture)."""
    from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions
    from avdata.datasets.registry import get_recipe

    raw = make_mnistdvs_raw(tmp_path / "raw", per_class=20, scales=(4,), as_zips=False, n_events=50)
    make_ntidigits_h5(raw, per_class=3)
    plan = get_recipe("mnistdvs-ntidigits").plan(raw, EventOptions(scale=4, per_class=20, val_fraction=0.2))
    sounds: dict[str, set[str]] = {"train": set(), "val": set()}
    for it in plan.items:
        if it.split in sounds:
            sounds[it.split].add(it.meta["audio_id"])
    counts = {s: sum(1 for it in plan.items if it.split == s) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 30, "test": 100}  # 10 train pairs a class: one recording's 3 or 4
    assert sounds["val"] and not sounds["train"] & sounds["val"]


def test_an_odd_mnistdvs_count_records_the_recording_left_out(tmp_path):
    """Half train, half test: of 5 recordings of a digit, one is in neither split. It is recorded as skipped
    with its path (it was dropped without a word, under a warning that said all were used)."""
    from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions
    from avdata.datasets.registry import get_recipe

    raw = make_mnistdvs_raw(tmp_path / "raw", per_class=5, scales=(4,), as_zips=False, n_events=20)
    make_ntidigits_h5(raw, per_class=2)
    plan = get_recipe("mnistdvs-ntidigits").plan(raw, EventOptions(scale=4, per_class=5, val_fraction=0.0))
    used = {it.sources["visual"] for it in plan.items}
    left = [s for s in plan.skipped if s["reason"].startswith("odd one out")]
    assert len(plan.items) == 40 and len(left) == 10
    assert {s["key"] for s in left} == {f"unpaired_{d}" for d in range(10)}
    assert all(s["path"] not in used and f"grabbed_data{s['key'][-1]}/" in s["path"] for s in left)
    assert len(used) + len(left) == 50  # every recording is either paired or said to be left out
