"""`avdata download ave --mirror URL` against a loopback server serving a generated AVE.zip and the four
lists, through the project's download engine; and the zip unpacked without trusting it."""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.datasets.ave.annotations import TEXT_FILES
from avdata.datasets.ave.recipe import AveOptions, AveRecipe
from avdata.datasets.ave.synth import make_ave_raw, write_ave_zip
from avdata.datasets.ave.unpack import unpack_zip
from avdata.datasets.download_plan import download_dataset, read_sha256sums
from avdata.errors import AvdataError
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


# ------------------------------------------------------------------------------------------ unpack_zip


def _zip(path: Path, members: list[tuple[str, bytes]], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("name", ["../evil.mp4", "AVE/../../evil.mp4", "/tmp/evil.mp4", "C:/evil.mp4",
                                  "AVE\\..\\..\\evil.mp4"])
def test_unpack_refuses_paths_outside_the_target(tmp_path, name):
    z = _zip(tmp_path / "a.zip", [("AVE/ok.mp4", b"x" * 10), (name, b"evil")])
    with pytest.raises(AvdataError, match="outside the target"):
        unpack_zip(z, tmp_path / "t")
    assert not list(tmp_path.rglob("evil.mp4")) and not (tmp_path / "t" / "AVE" / "ok.mp4").exists()


def test_unpack_refuses_links_duplicates_and_too_much(tmp_path):
    with pytest.raises(AvdataError, match="is a link"):
        unpack_zip(_zip(tmp_path / "l.zip", [("a.mp4", b"1")], link="AVE/l.mp4"), tmp_path / "t1")
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate name it is asked to write
        z = _zip(tmp_path / "d.zip", [("AVE/a.mp4", b"1"), ("AVE/a.mp4", b"2")])
    with pytest.raises(AvdataError, match="occurs twice"):
        unpack_zip(z, tmp_path / "t2")
    z = _zip(tmp_path / "big.zip", [("AVE/a.mp4", b"\0" * 5000), ("AVE/b.mp4", b"\0" * 5000)])
    with pytest.raises(AvdataError, match="more than the 8,000 allowed"):
        unpack_zip(z, tmp_path / "t3", max_bytes=8000)
    assert not list((tmp_path / "t3").rglob("*.mp4"))


def test_unpack_stops_at_the_declared_size_and_names_a_corrupt_member(tmp_path):
    z = _zip(tmp_path / "lie.zip", [("AVE/a.mp4", b"y" * 1000)])
    data = bytearray(z.read_bytes())
    cd = data.index(b"PK\x01\x02")
    data[cd + 24:cd + 28] = struct.pack("<I", 10)  # central directory: declares 10 bytes, holds 1,000
    z.write_bytes(bytes(data))
    with pytest.raises(AvdataError, match="corrupt"):
        unpack_zip(z, tmp_path / "t")
    assert not list((tmp_path / "t").rglob("a.mp4*"))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(_zip(tmp_path / "whole.zip", [("AVE/a.mp4", bytes(range(256)) * 400)]).read_bytes()[:5000])
    with pytest.raises(AvdataError, match="download it again"):
        unpack_zip(cut, tmp_path / "t2")


def test_unpack_keeps_selects_and_resumes(tmp_path):
    z = _zip(tmp_path / "ok.zip", [("AVE/a.mp4", b"a" * 100), ("AVE/b.mp4", b"b" * 50), ("__MACOSX/AVE/._a.mp4", b"m"),
                                   ("notes.pdf", b"%PDF")])
    keep = lambda n: n.endswith(".mp4") and not n.startswith("__MACOSX")  # noqa: E731
    t = tmp_path / "t"
    assert unpack_zip(z, t, keep=keep) == ["AVE/a.mp4", "AVE/b.mp4"]
    assert (t / "AVE" / "a.mp4").read_bytes() == b"a" * 100 and not (t / "notes.pdf").exists()
    assert not list(t.rglob("*.part"))
    (t / "AVE" / "b.mp4").unlink()
    assert unpack_zip(z, t, keep=keep) == ["AVE/a.mp4", "AVE/b.mp4"]  # the marker says done
    assert not (t / "AVE" / "b.mp4").exists()
    next(t.glob(".unpacked-*")).unlink()
    unpack_zip(z, t, keep=keep)
    assert (t / "AVE" / "b.mp4").read_bytes() == b"b" * 50
