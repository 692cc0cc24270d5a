"""`avdata download ave --mirror URL` against a loopback server serving a generated AVE.zip and the four
lists, through the project's download engine, then unpacked (the extractor itself: tests/test_unpack.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.datasets.ave.annotations import TEXT_FILES
from avdata.datasets.ave.recipe import AveOptions, AveRecipe
from avdata.datasets.ave.synth import make_ave_raw, write_ave_zip
from avdata.datasets.download_plan import download_dataset, read_sha256sums
from avdata.cli.avdata_app import app
from tests.httpserver import serve_dir


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict]:
    """A mirror folder: AVE.zip (AVE/<id>.mp4 + the lists with a header line) and the lists beside it
    without one, as the authors' repository has them."""
    gen = tmp_path_factory.mktemp("ave_gen")
    made = make_ave_raw(gen, labels=[2, 8, 21, 26], duration=1.0, width=48, height=32, seed=4)
    site = tmp_path_factory.mktemp("ave_site")
    write_ave_zip(gen, site / "AVE.zip")
    for name in TEXT_FILES:
        lines = (gen / name).read_text().splitlines()[1:]  # drop the header line
        (site / name).write_text("\n".join(lines) + "\n")
    return site, made


@pytest.mark.slow
def test_download_fetches_checks_unpacks_and_reruns(mirror, tmp_path):
    site, made = mirror
    dest = tmp_path / "raw"
    with serve_dir(site, drop_after=3000, only="*.zip") as url:
        report = download_dataset("ave", dest, mirror=url, jobs=2, backoff=0.01, progress=False)
        assert report.ok, [r.reason for r in report.failed]
        assert sorted(r.path for r in report.fetched) == sorted(["AVE.zip", *TEXT_FILES])
        assert any("Range" in r["headers"] for r in url.requests_for("AVE.zip"))  # the dropped transfer resumed
        assert any("4 videos of AVE.zip unpacked" in n for n in report.notes)
        sums = read_sha256sums(dest)
        assert sums["AVE.zip"] == hashlib.sha256((site / "AVE.zip").read_bytes()).hexdigest()
        assert set(sums) == {"AVE.zip", *TEXT_FILES}
        for vid in made["videos"]:
            assert (dest / "AVE" / f"{vid}.mp4").is_file()
        # the downloaded lists (no header) stay; the zip's copies (with one) do not land on them
        for name in TEXT_FILES:
            assert (dest / name).read_bytes() == (site / name).read_bytes()
        again = download_dataset("ave", dest, mirror=url, progress=False)
        assert again.ok and not again.fetched and len(again.already_present) == 5
    plan = AveRecipe().plan(dest, AveOptions())
    assert sorted(i.key for i in plan.items) == sorted(made["videos"]) and not plan.skipped


def test_download_from_a_local_folder(mirror, tmp_path):
    site, _ = mirror
    report = download_dataset("ave", tmp_path / "d", mirror=str(site), progress=False)
    assert report.ok and len(list((tmp_path / "d" / "AVE").glob("*.mp4"))) == 4


def test_download_without_mirror_says_how_to_fetch_by_hand(tmp_path):
    res = CliRunner().invoke(app, ["download", "ave", "--to", str(tmp_path / "x")])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "Google Drive" in text and "by hand" in text and "--mirror" in text and "AVE-ECCV18" in text
    for args in (["download", "--help"], ["download", "ave", "--help"]):
        help_text = " ".join(CliRunner().invoke(app, args).output.split())
        assert "Google Drive" in help_text and "by hand" in help_text


def test_html_instead_of_a_list_fails_and_nothing_is_unpacked(mirror, tmp_path):
    site, _ = mirror
    bad = tmp_path / "site"
    bad.mkdir()
    for p in site.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "testSet.txt").write_text("<!DOCTYPE html><html><body>Google Drive can't scan this file</body></html>")
    dest = tmp_path / "raw"
    with serve_dir(bad) as url:
        report = download_dataset("ave", dest, mirror=url, retries=0, progress=False)
    assert [r.path for r in report.failed] == ["testSet.txt"]
    assert "HTML page" in report.failed[0].reason
    assert not (dest / "testSet.txt").exists() and not (dest / "AVE").exists()
