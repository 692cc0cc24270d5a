"""Hostile event inputs (issue #23): N-TIDIGITS18 HDF5 files that pull in another file's bytes (external
storage, an external link, a virtual dataset) or declare huge never-written datasets, AEDAT files far over
the events budget or with more events in one bin than a uint16 count holds, out-of-range cochlea channels,
and UrbanSound8K-AV names that map to one key. Each file is built for real (h5py, struct, numpy); `prepare`
runs as the CLI runs it and must skip that clip with its reason in manifest.json, finish the run, keep the
outside bytes out of the shards and keep memory bounded."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from avdata.cli.avdata_app import app
from typer.testing import CliRunner

from avdata.datasets.mnistdvs_ntidigits.synth import (
    make_mnistdvs_raw,
    make_ntidigits_h5,
)
from avdata.datasets.urbansound8k_av.recipe import (
    UrbanSound8kAVRecipe,
    UrbanSoundOptions,
)
from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw
from avdata.errors import MediaError
from avdata.media import budget
from avdata.media.events import (
    DVS_EVENT,
    EventRangeError,
    bin_channels,
    bin_dvs,
    read_aedat2,
    reduce_to_sensor,
    time_bins,
    write_aedat2,
)
from avdata.media.ntidigits import NTidigitsFile, read_ntidigits
from tests.manifests import load_manifest

# sample ids of make_ntidigits_h5(per_class=1): '<m|w><split[:2]><k>-<digit>'
TRAIN_3, TEST_5 = "mtr00-3", "mte00-5"
# traced peak of a whole in-process `prepare` of event_raw(): a clean run peaks at about 70 MB (the engine,
# first imports); reading any of the hostile files below would take 0.4 to 40 GB
RUN_PEAK = 200 << 20



def traced_peak(run):
    """(what run() returns, the peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        return run(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

def event_raw(tmp_path: Path) -> Path:
    """20 MNIST-DVS recordings (2 per digit, scale 8, unpacked) and an N-TIDIGITS18 file of 1 per digit."""
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=2, scales=(8,), as_zips=False, n_events=300)
    make_ntidigits_h5(raw, per_class=1)
    return raw


def prepare(raw: Path, out: Path, *extra: str) -> dict:
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out),
                                   "--scale", "8", "--bins", "4", "--per-class", "2", "--val-fraction", "0",
                                   *extra])
    assert res.exit_code == 0, res.output
    return load_manifest(out)


def shard_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.glob("*.tar")))


def written(m: dict) -> int:
    return sum(s["num_samples"] for s in m["splits"].values())


def replace_dataset(h5: Path, name: str, make) -> None:
    """Delete `name` and let make(parent_group, last_name) create what takes its place."""
    with h5py.File(h5, "a") as f:
        parent, _, last = name.rpartition("/")
        del f[name]
        make(f[parent or "/"], last)


def test_external_storage_external_link_and_virtual_dataset_are_refused(tmp_path):
    raw = event_raw(tmp_path)
    h5 = raw / "n-tidigits.hdf5"
    with h5py.File(h5) as f:
        n = f[f"train_addresses/{TRAIN_3}"].shape[0]
    # a file outside the raw folder whose bytes must never reach a shard: plausible timestamps and channels
    secret_ts = np.linspace(0.123456789, 0.4, n).astype("<f8")
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(secret_ts.tobytes())
    other = tmp_path / "outside" / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.full(n, 61, dtype="<i2"))
        f.create_dataset("ts", data=secret_ts)
    replace_dataset(h5, f"train_timestamps/{TRAIN_3}", lambda g, k: g.create_dataset(
        k, shape=(n,), dtype="<f8", external=[(str(secret), 0, n * 8)]))
    replace_dataset(h5, f"test_addresses/{TEST_5}",
                    lambda g, k: g.__setitem__(k, h5py.ExternalLink(str(other), "/data")))
    layout = h5py.VirtualLayout(shape=(n,), dtype="<f8")
    layout[:] = h5py.VirtualSource(str(other), "ts", shape=(n,))
    replace_dataset(h5, "test_timestamps/mte00-7", lambda g, k: g.create_virtual_dataset(k, layout))

    out = tmp_path / "out"
    m = prepare(raw, out, "--keep-events")
    reasons = {s["reason"] for s in m["skipped"]}
    assert written(m) == 17 and len(m["skipped"]) == 3
    assert all(s["path"] == "n-tidigits.hdf5" for s in m["skipped"])
    assert (f"'train_timestamps/{TRAIN_3}' keeps its data in an external file ({secret}); refused because reading "
            "it would copy another file's bytes") in reasons
    assert f"'test_addresses/{TEST_5}' is an external link to {other}:/data; refused because reading it would " \
           "copy another file's bytes" in reasons
    assert ("'test_timestamps/mte00-7' is a virtual dataset (its data comes from other datasets or files); "
            "refused") in reasons
    data = shard_bytes(out)
    assert data and secret_ts[:1].tobytes() not in data and secret_ts[-1:].tobytes() not in data


def test_an_id_that_is_a_path_through_an_external_link_is_refused(tmp_path):
    """'ext/data-3' looked up in train_addresses would follow the link 'ext' (only a path's last part can
    be checked without following it), so an id holding '/' is refused."""
    raw = event_raw(tmp_path)
    h5 = raw / "n-tidigits.hdf5"
    secret_ts = np.linspace(0.123456789, 0.4, 800)
    other = tmp_path / "outside" / "other.h5"
    other.parent.mkdir()
    with h5py.File(other, "w") as f:
        f.create_dataset("data-3", data=np.full(800, 61, dtype="<i2"))
        f.create_dataset("ts/data-3", data=secret_ts)
    with h5py.File(h5, "a") as f:
        ids = [*f["train_labels"][()], b"ext/data-3"]
        del f["train_labels"]
        f.create_dataset("train_labels", data=np.array(ids))
        f["train_addresses/ext"] = h5py.ExternalLink(str(other), "/")
        f["train_timestamps/ext"] = h5py.ExternalLink(str(other), "/ts")
    out = tmp_path / "out"
    m = prepare(raw, out, "--keep-events")
    (skip,) = m["skipped"]
    assert written(m) == 19 and skip["path"] == "n-tidigits.hdf5"
    assert skip["reason"] == "sample 'ext/data-3' of the train split: the id is not a plain name; refused"
    assert secret_ts[:1].tobytes() not in shard_bytes(out)


def test_huge_unallocated_datasets_are_refused_before_reading(tmp_path):
    raw = event_raw(tmp_path)
    h5 = raw / "n-tidigits.hdf5"
    huge = 4_000_000_000  # 8 GB of int16 and 32 GB of float64 declared by a file of a few hundred KB
    for part, dtype in (("addresses", "<i2"), ("timestamps", "<f8")):
        replace_dataset(h5, f"train_{part}/{TRAIN_3}", lambda g, k, dt=dtype: g.create_dataset(
            k, shape=(huge,), maxshape=(None,), chunks=(4096,), dtype=dt))
    # a dataset within the element budget but one chunk of 1 GB, which HDF5 would decompress whole
    replace_dataset(h5, f"test_addresses/{TEST_5}", lambda g, k: g.create_dataset(
        k, shape=(100,), maxshape=(None,), chunks=(2 ** 27,), dtype="<i8"))
    assert h5.stat().st_size < 1 << 20
    m, peak = traced_peak(lambda: prepare(raw, tmp_path / "out"))
    assert written(m) == 18 and peak < RUN_PEAK
    reasons = sorted(s["reason"] for s in m["skipped"])
    assert reasons == [
        f"'test_addresses/{TEST_5}' has 1,073,741,824-byte chunks, over the budget of 67,108,864; not read",
        (f"'train_addresses/{TRAIN_3}' declares 4,000,000,000 elements, over the budget of 4,000,000 (a real "
         "file holds far fewer); not read")]


def test_a_label_list_over_budget_stops_planning_with_the_file_named(tmp_path):
    raw = event_raw(tmp_path)
    h5 = raw / "n-tidigits.hdf5"
    replace_dataset(h5, "train_labels", lambda g, k: g.create_dataset(
        k, shape=(200_000_000,), maxshape=(None,), chunks=(65536,), dtype="S8"))
    res, peak = traced_peak(lambda: CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw),
                                                             "--out", str(tmp_path / "out"), "--scale", "8",
                                                             "--per-class", "2"]))
    assert res.exit_code == 2 and "Traceback" not in res.output and peak < RUN_PEAK, res.output
    assert f"{h5}: 'train_labels' declares 200,000,000 elements, over the budget of 1,000,000" in \
           " ".join(res.output.split())


def test_aedat_over_the_events_budget_is_skipped_without_reading_it(tmp_path):
    raw = event_raw(tmp_path)
    victim = min(raw.glob("grabbed_data4/scale8/*.aedat"))
    header = b"#!AER-DAT2.0\r\n# 100 MB of events\r\n"
    with open(victim, "wb") as f:  # 100 MB of events (12.5 million, sparse on disk): the budget is 4 million
        f.write(header)
        f.truncate(len(header) + 100_000_000)
    m, peak = traced_peak(lambda: prepare(raw, tmp_path / "out"))
    assert written(m) == 19 and peak < RUN_PEAK
    (skip,) = m["skipped"]
    assert skip["path"] == victim.relative_to(raw).as_posix()
    assert skip["reason"].startswith("12,500,000 events, over the budget of 4,000,000 per recording")


def test_a_bin_over_uint16_and_channel_64_skip_their_clips(tmp_path):
    raw = event_raw(tmp_path)
    victim = min(raw.glob("grabbed_data6/scale8/*.aedat"))
    ev = np.zeros(70_000, DVS_EVENT)  # one pixel, one instant: 70,000 counts in one bin
    ev["x"], ev["y"], ev["p"] = 64, 64, 1
    write_aedat2(victim, ev)
    replace_dataset(raw / "n-tidigits.hdf5", f"train_addresses/{TRAIN_3}", lambda g, k: g.create_dataset(
        k, data=np.r_[np.zeros(799, np.int16), [64]].astype(np.int16)))
    m = prepare(raw, tmp_path / "out")
    assert written(m) == 18
    by_path = {s["path"]: s["reason"] for s in m["skipped"]}
    assert by_path == {
        victim.relative_to(raw).as_posix(): "MNIST-DVS recording: 70,000 events in one bin, over the uint16 count "
                                            "of 65535; more --bins may fit them",
        "n-tidigits.hdf5": f"sample '{TRAIN_3}' of the train split: channel 64 outside the cochlea's 64 channels 0..63"}


def test_peak_memory_per_event_keeps_a_worker_under_1_gb(tmp_path):
    """Reading and binning costs a fixed number of bytes per event, so the events budget bounds a worker:
    both modalities measured at 200,000 events and scaled to the budget."""
    n = 200_000
    rng = np.random.default_rng(0)
    ev = np.zeros(n, DVS_EVENT)
    ev["t"] = np.sort(rng.integers(0, 2_000_000, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    write_aedat2(tmp_path / "a.aedat", ev)
    del ev
    h5 = make_ntidigits_h5(tmp_path, per_class=1)
    replace_dataset(h5, f"train_addresses/{TRAIN_3}", lambda g, k: g.create_dataset(
        k, data=rng.integers(0, 64, n).astype(np.int16)))
    replace_dataset(h5, f"train_timestamps/{TRAIN_3}", lambda g, k: g.create_dataset(k, data=rng.uniform(0, 1, n)))
    peaks = []
    for read_and_bin in (lambda: bin_dvs(reduce_to_sensor(read_aedat2(tmp_path / "a.aedat"), 28), 16, 28),
                         lambda: bin_channels(*NTidigitsFile(h5).sample("train", TRAIN_3)[::-1], 16, 64)):
        tracemalloc.start()
        try:
            assert read_and_bin().sum() == n
            peaks.append(tracemalloc.get_traced_memory()[1] / n * budget.MAX_EVENTS_PER_FILE)
        finally:
            tracemalloc.stop()
    assert peaks[0] < 0.4e9 and peaks[1] < 0.3e9 and sum(peaks) < 0.6e9


def test_event_readers_refuse_what_cannot_be_binned(tmp_path):
    with pytest.raises(EventRangeError, match="NaN or infinite"):
        time_bins(np.array([0.0, np.nan, 1.0]), 4)
    # integer spans too long for (t - lo) * bins in int64 are binned in float64, never wrapped negative
    assert time_bins(np.array([0, 1 << 61, 1 << 62]), 1024).tolist() == [0, 512, 1023]
    os.mkfifo(tmp_path / "fifo.aedat")  # opening it would wait for a writer forever
    (tmp_path / "dir.aedat").symlink_to(tmp_path, target_is_directory=True)
    # named as the other media readers name them (avdata.media.files), not a bare "not a regular file"
    for name, what in (("fifo.aedat", "a FIFO"), ("dir.aedat", "a folder, through a symbolic link")):
        with pytest.raises(MediaError) as err:
            read_aedat2(tmp_path / name)
        assert str(err.value) == f"{tmp_path / name}: not a regular file ({what})"
    path = tmp_path / "long.aedat"
    path.write_bytes(b"#!AER-DAT2.0\r\n" + b"#" * (2 << 20))
    with pytest.raises(MediaError, match="header longer than 1,048,576 bytes"):
        read_aedat2(path)
    h5 = make_ntidigits_h5(tmp_path, per_class=1)
    replace_dataset(h5, f"train_timestamps/{TRAIN_3}", lambda g, k: g.create_dataset(k, data=np.full(800, np.inf)))
    replace_dataset(h5, "test_addresses", lambda g, k: g.__setitem__(k, h5py.SoftLink("/train_addresses")))
    with NTidigitsFile(h5) as f:
        with pytest.raises(MediaError, match="a timestamp is NaN or infinite"):
            f.sample("train", TRAIN_3)
        with pytest.raises(MediaError, match="'test_addresses' is a SoftLink to /train_addresses"):
            f.sample("test", TEST_5)
        assert len(f.ids("train")) == 12
    with pytest.raises(MediaError, match="a timestamp is NaN"):
        list(read_ntidigits(h5, "train"))


def test_urbansound_names_that_map_to_one_key_are_skipped_naming_both(tmp_path):
    root = make_urbansound_raw(tmp_path / "raw", per_class=3, unpaired=0, top=None)
    vis, snd = root / "Dataset_v3_vision" / "dog_bark", root / "Dataset_v3_sound" / "dog_bark"
    first = min(vis.glob("*.jpg")).stem
    for name in ("1 2", "1_2"):
        shutil.copy(vis / f"{first}.jpg", vis / f"{name}.jpg")
        shutil.copy(snd / f"{first}.wav", snd / f"{name}.wav")
    shutil.copy(vis / f"{first}.jpg", vis / f"{first}.png")  # two images for one sound
    plan = UrbanSound8kAVRecipe().plan(root, UrbanSoundOptions())
    assert len(plan.items) == 31 and len({it.key for it in plan.items}) == 31
    assert sorted(plan.skipped, key=lambda s: s["path"]) == [
        {"key": f"dog_bark-{first}", "split": "", "path": f"Dataset_v3_vision/dog_bark/{first}.png",
         "reason": f"a second file named '{first}': Dataset_v3_vision/dog_bark/{first}.jpg is used"},
        {"key": "dog_bark-1_2", "split": "", "path": "Dataset_v3_vision/dog_bark/1_2.jpg",
         "reason": "duplicate sample key: Dataset_v3_vision/dog_bark/1_2.jpg and Dataset_v3_vision/dog_bark/1 2.jpg "
                   "both map to 'dog_bark-1_2'; rename one of them to keep both"}]
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "urbansound8k-av", "--raw", str(root), "--out", str(out),
                                   "--short-side", "16", "--val-fraction", "0"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert written(m) == 31 and len(m["skipped"]) == 2


def test_a_corrupt_chunk_skips_its_clip(tmp_path):
    raw = event_raw(tmp_path)
    h5 = raw / "n-tidigits.hdf5"
    replace_dataset(h5, f"test_timestamps/{TEST_5}", lambda g, k: g.create_dataset(
        k, data=np.linspace(0, 0.45, 800), chunks=(800,), compression="gzip"))
    with h5py.File(h5) as f:
        chunk = f[f"test_timestamps/{TEST_5}"].id.get_chunk_info(0)
    with open(h5, "r+b") as f:  # the deflate stream's bytes overwritten: its filter fails on reading
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    m = prepare(raw, tmp_path / "out")
    (skip,) = m["skipped"]
    assert written(m) == 19 and skip["path"] == "n-tidigits.hdf5"
    assert skip["reason"].startswith(f"'test_timestamps/{TEST_5}' cannot be read (")
    assert skip["reason"].endswith("); download the file again")
