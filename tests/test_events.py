"""AEDAT 2.0 reading, sensor reduction and binning against counts computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from avdata.errors import MediaError
from avdata.events import DVS_EVENT, bin_channels, bin_dvs, read_aedat2, reduce_to_sensor, time_bins, write_aedat2
from avdata.synth.events import make_ntidigits_h5
from avdata.events import read_ntidigits


def events(rows):
    ev = np.zeros(len(rows), dtype=DVS_EVENT)
    for i, (t, x, y, p) in enumerate(rows):
        ev[i] = (t, x, y, p)
    return ev


def test_aedat_round_trip_and_address_bits(tmp_path):
    ev = events([(100, 5, 7, 1), (150, 127, 0, 0), (400, 0, 127, 1)])
    path = tmp_path / "a.aedat"
    write_aedat2(path, ev)
    data = path.read_bytes()
    assert data.startswith(b"#!AER-DAT2.0\r\n")
    # first event's address by hand: y << 8 | x << 1 | p = 7*256 + 5*2 + 1
    body = data[data.rfind(b"\r\n") + 2:]
    assert int.from_bytes(body[:4], "big") == 7 * 256 + 10 + 1 and int.from_bytes(body[4:8], "big") == 100
    back = read_aedat2(path)
    assert back["x"].tolist() == [5, 127, 0] and back["y"].tolist() == [7, 0, 127] and back["p"].tolist() == [1, 0, 1]
    assert back["t"].tolist() == [0, 50, 300]  # relative to the first event


def test_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "a.aedat"
    write_aedat2(path, events([(0, 1, 1, 1), (10, 2, 2, 0)]))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(MediaError, match="truncated"):
        read_aedat2(path)
    assert len(read_aedat2(path, allow_truncated=True)) == 1
    (tmp_path / "b.aedat").write_bytes(b"hello")
    with pytest.raises(MediaError, match="not an AEDAT"):
        read_aedat2(tmp_path / "b.aedat")


def test_binning_matches_hand_counts():
    # times 0..100: 4 bins of width 25; the last event (t=100) falls in the last bin
    ev = events([(0, 0, 0, 1), (10, 0, 0, 1), (30, 1, 2, 0), (60, 1, 2, 1), (100, 27, 27, 0)])
    assert time_bins(ev["t"], 4).tolist() == [0, 0, 1, 2, 3]
    out = bin_dvs(ev, 4, 28)
    assert out.shape == (4, 2, 28, 28) and out.dtype == np.uint16 and out.sum() == 5
    assert out[0, 1, 0, 0] == 2 and out[1, 0, 2, 1] == 1 and out[2, 1, 2, 1] == 1 and out[3, 0, 27, 27] == 1
    aud = bin_channels(np.array([0.0, 0.1, 0.5, 1.0]), np.array([3, 3, 63, 0]), 2, 64)
    assert aud.shape == (2, 64) and aud[0, 3] == 2 and aud[1, 63] == 1 and aud[1, 0] == 1 and aud.sum() == 4


def test_sensor_reduction():
    ev = events([(0, 0, 0, 1), (1, 127, 127, 0), (2, 64, 64, 1), (3, 49, 50, 1)])
    down = reduce_to_sensor(ev, 28, "downsample")
    assert down["x"].tolist() == [0, 27, 14, 10] and down["y"].tolist() == [0, 27, 14, 10]
    crop = reduce_to_sensor(ev, 28, "crop")  # window 50..77
    assert crop["x"].tolist() == [14] and crop["y"].tolist() == [14]


def test_ntidigits_reader(tmp_path):
    path = make_ntidigits_h5(tmp_path, per_class=2)
    rows = list(read_ntidigits(path, "train"))
    assert len(rows) == 22
    labels = sorted({r[1] for r in rows})
    assert "o" in labels and "z" in labels and "1z3" in labels
    sid, lab, addr, ts = rows[0]
    assert addr.shape == ts.shape and addr.max() < 64 and ts.dtype == np.float64
