"""Download paths of the event datasets and UrbanSound8K-AV from a loopback mirror, then prepare."""

from __future__ import annotations

import pytest
import shutil

from typer.testing import CliRunner

from tests.manifests import load_manifest
from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5
from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw
from avdata.cli.avdata_app import app
from tests.httpserver import serve_dir


@pytest.mark.slow
def test_mnistdvs_ntidigits_download_then_prepare(tmp_path):
    served = tmp_path / "served"
    make_mnistdvs_raw(served, per_class=4, scales=(16,))
    h5 = make_ntidigits_h5(served, per_class=2)
    dest = tmp_path / "raw"
    runner = CliRunner()
    with serve_dir(served) as url:
        res = runner.invoke(app, ["download", "mnistdvs", "--to", str(dest), "--mirror", str(url), "--backoff", "0"])
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in dest.glob("*.zip")) == [f"grabbed_data{d}.zip" for d in range(10)]
        assert (dest / "SHA256SUMS").read_text().count("grabbed_data") == 10
        # the generated HDF5 is not the published file: its md5 must be rejected, not kept
        res = runner.invoke(app, ["download", "ntidigits", "--to", str(dest), "--mirror", str(url),
                                  "--backoff", "0", "--retries", "1"])
        assert res.exit_code == 1 and "md5" in res.output.lower()
        assert not (dest / h5.name).exists()
    shutil.copy(h5, dest / h5.name)
    out = tmp_path / "out"
    res = runner.invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(dest), "--out", str(out), "--bins", "4",
                              "--per-class", "4", "--val-fraction", "0"])
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 20 and m["splits"]["test"]["num_samples"] == 20


@pytest.mark.slow
def test_urbansound_download_with_kaggle_credentials_then_prepare(tmp_path, monkeypatch):
    served = tmp_path / "served"
    make_urbansound_raw(served, per_class=4, as_zip=True, unpaired=0)
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    dest = tmp_path / "raw"
    with serve_dir(served) as url:
        res = CliRunner().invoke(app, ["download", "urbansound8k-av", "--to", str(dest), "--mirror", str(url)])
        assert res.exit_code == 0, res.output
        assert not any("Authorization" in r["headers"] for r in url.requests)  # a mirror never gets the token
    zpath = next(dest.glob("*.zip"))
    res = CliRunner().invoke(app, ["prepare", "urbansound8k-av", "--raw", str(zpath), "--out", str(tmp_path / "o"),
                                   "--val-fraction", "0", "--short-side", "32"])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "o")
    assert m["splits"]["train"]["num_samples"] == 20 and m["splits"]["test"]["num_samples"] == 20
