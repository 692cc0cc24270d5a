"""AEDAT 2.0 reading and writing, sensor reduction, binning against counts computed by hand, N-TIDIGITS."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from avdata.errors import AvdataError, MediaError
from avdata.media.events import (AEDAT2_HEADER, DVS_EVENT, EventRangeError, bin_channels, bin_dvs, dvs128_address,
                                 read_aedat2, reduce_to_sensor, time_bins, write_aedat2)
from avdata.media.ntidigits import read_ntidigits
from avdata.datasets.mnistdvs_ntidigits.synth_ntidigits import make_ntidigits_h5


def events(rows):
    ev = np.zeros(len(rows), dtype=DVS_EVENT)
    for i, (t, x, y, p) in enumerate(rows):
        ev[i] = (t, x, y, p)
    return ev


def raw_aedat(pairs, header=b"#!AER-DAT2.0\r\n# hand made\r\n") -> bytes:
    return header + b"".join(a.to_bytes(4, "big") + t.to_bytes(4, "big") for a, t in pairs)


def test_address_bits_by_hand(tmp_path):
    # x = 5, y = 7, ON: y << 8 | x << 1 | 1 = 0x070B; x = 127, y = 0, OFF: 0x00FE; x = 0, y = 127, ON: 0x7F01
    (tmp_path / "h.aedat").write_bytes(raw_aedat([(0x070B, 1000), (0x00FE, 1050), (0x7F01, 1300)]))
    back = read_aedat2(tmp_path / "h.aedat")
    assert back.dtype == DVS_EVENT
    assert back["x"].tolist() == [5, 127, 0] and back["y"].tolist() == [7, 0, 127] and back["p"].tolist() == [1, 0, 1]
    assert back["t"].tolist() == [0, 50, 300]  # relative to the first event
    assert dvs128_address(np.array([5]), np.array([7]), np.array([1])).tolist() == [0x070B]


def test_round_trip_and_header(tmp_path):
    rng = np.random.default_rng(0)
    ev = np.zeros(500, dtype=DVS_EVENT)
    ev["t"] = np.sort(rng.integers(0, 3_000_000, 500))
    ev["t"] -= ev["t"][0]
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 128, 500), rng.integers(0, 128, 500), rng.integers(0, 2, 500)
    path = tmp_path / "a.aedat"
    write_aedat2(path, ev)
    data = path.read_bytes()
    lines = data.split(b"\r\n")
    assert lines[0] == b"#!AER-DAT2.0" and b"# Timestamps tick is 1 us" in lines and b"# created" in data
    body = data[len("\r\n".join(AEDAT2_HEADER)) + 2:]  # after the last header line
    assert len(body) == 8 * 500
    a0, t0 = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
    assert a0 == (int(ev["y"][0]) << 8) | (int(ev["x"][0]) << 1) | int(ev["p"][0]) and t0 == ev["t"][0]
    back = read_aedat2(path)
    assert np.array_equal(back, ev)


def test_external_events_and_timestamp_wrap(tmp_path):
    # bit 15 marks an external (special) event: not a pixel, dropped unless asked for
    (tmp_path / "x.aedat").write_bytes(raw_aedat([(0x0102, 10), (0x8000, 20), (0x0203, 30)]))
    assert len(read_aedat2(tmp_path / "x.aedat")) == 2
    assert len(read_aedat2(tmp_path / "x.aedat", drop_external=False)) == 3
    # the 32-bit microsecond counter wraps: times keep increasing
    (tmp_path / "w.aedat").write_bytes(raw_aedat([(0x0102, 2**32 - 100), (0x0102, 2**32 - 1), (0x0102, 50)]))
    assert read_aedat2(tmp_path / "w.aedat")["t"].tolist() == [0, 99, 150]


def test_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "a.aedat"
    write_aedat2(path, events([(0, 1, 1, 1), (10, 2, 2, 0)]))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(MediaError, match="truncated: 5 trailing bytes after 1 whole events"):
        read_aedat2(path)
    assert len(read_aedat2(path, allow_truncated=True)) == 1
    (tmp_path / "b.aedat").write_bytes(b"hello")
    with pytest.raises(MediaError, match="not an AEDAT"):
        read_aedat2(tmp_path / "b.aedat")
    (tmp_path / "c.aedat").write_bytes(b"#!AER-DAT3.1\r\n")
    with pytest.raises(MediaError, match="only 2.0"):
        read_aedat2(tmp_path / "c.aedat")
    (tmp_path / "d.aedat").write_bytes(b"#!AER-DAT2.0\r\n# cut in the hea")
    with pytest.raises(MediaError, match="header never ends"):
        read_aedat2(tmp_path / "d.aedat")
    with pytest.raises(MediaError, match="file not found"):
        read_aedat2(tmp_path / "none.aedat")
    (tmp_path / "e.aedat").write_bytes(b"#!AER-DAT2.0\r\n")
    assert len(read_aedat2(tmp_path / "e.aedat")) == 0


def test_binning_matches_hand_counts():
    # times 0..100: 4 bins of width 25, t = 25 opens bin 1, the last event (t=100) falls in the last bin
    ev = events([(0, 0, 0, 1), (10, 0, 0, 1), (25, 1, 2, 0), (60, 1, 2, 1), (100, 27, 27, 0)])
    assert time_bins(ev["t"], 4).tolist() == [0, 0, 1, 2, 3]
    out = bin_dvs(ev, 4, 28)
    assert out.shape == (4, 2, 28, 28) and out.dtype == np.uint16 and out.sum() == 5
    # [bin, polarity (0 = OFF), y, x]
    assert out[0, 1, 0, 0] == 2 and out[1, 0, 2, 1] == 1 and out[2, 1, 2, 1] == 1 and out[3, 0, 27, 27] == 1
    aud = bin_channels(np.array([0.0, 0.1, 0.5, 1.0]), np.array([3, 3, 63, 0]), 2, 64)
    assert aud.shape == (2, 64) and aud.dtype == np.uint16
    assert aud[0, 3] == 2 and aud[1, 63] == 1 and aud[1, 0] == 1 and aud.sum() == 4


def test_binning_edges():
    # integer times are binned exactly: (t - lo) * bins // (hi - lo), e.g. 3 bins over 0..9: 3 | 6 open bins
    assert time_bins(np.array([0, 2, 3, 5, 6, 8, 9]), 3).tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert time_bins(np.array([7, 7, 7]), 4).tolist() == [0, 0, 0]  # one instant: all in bin 0
    assert bin_dvs(np.zeros(0, DVS_EVENT), 3, 28).sum() == 0
    with pytest.raises(EventRangeError, match="outside"):
        bin_dvs(events([(0, 100, 0, 1)]), 2, 28)
    with pytest.raises(EventRangeError, match="outside"):
        bin_channels(np.array([0.0]), np.array([64]), 2, 64)
    many = events([(0, 1, 1, 1)] * 70000)
    with pytest.raises(EventRangeError, match="65535"):
        bin_dvs(many, 1, 28)


def test_sensor_reduction():
    ev = events([(0, 0, 0, 1), (1, 127, 127, 0), (2, 64, 64, 1), (3, 49, 50, 1)])
    down = reduce_to_sensor(ev, 28, "downsample")
    assert down["x"].tolist() == [0, 27, 14, 10] and down["y"].tolist() == [0, 27, 14, 10]
    crop = reduce_to_sensor(ev, 28, "crop")  # window 50..77
    assert crop["x"].tolist() == [14] and crop["y"].tolist() == [14] and crop["t"].tolist() == [2]
    with pytest.raises(AvdataError, match="--sensor must be 'downsample' or 'crop', got 'squash'"):
        reduce_to_sensor(ev, 28, "squash")


def test_ntidigits_reader(tmp_path):
    path = make_ntidigits_h5(tmp_path, per_class=2)
    rows = list(read_ntidigits(path, "train"))
    assert len(rows) == 22
    labels = [r[1] for r in rows]
    assert "o" in labels and "z" in labels and "1z3" in labels
    with h5py.File(path) as f:
        ids = [x.decode() for x in f["train_labels"][()]]
        assert [r[0] for r in rows] == ids
        first = ids[0]
        assert np.array_equal(rows[0][2], f["train_addresses"][first][()])
    for sid, lab, addr, ts in rows:
        assert lab == sid.split("-")[-1] and addr.dtype == np.int64 and ts.dtype == np.float64
        assert addr.shape == ts.shape and 0 <= addr.min() and addr.max() < 64 and np.all(np.diff(ts) >= 0)
    with pytest.raises(AvdataError, match="'train' or 'test', got 'val'"):
        next(read_ntidigits(path, "val"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(MediaError, match="not the N-TIDIGITS18 layout"):
        next(read_ntidigits(tmp_path / "other.h5", "train"))
