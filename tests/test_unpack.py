"""The one zip extractor (`avdata.fetch.unpack`), alone and behind every recipe that takes a zip: a member
outside the target, an absolute name or a link is refused with its name, and nothing lands outside."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5
from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw
from avdata.errors import AvdataError
from avdata.fetch.unpack import unpack_zip


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


def test_unpack_again_with_another_choice_unpacks_it(tmp_path):
    """The marker records which members were chosen: another choice (another MNIST-DVS scale) is unpacked."""
    z = _zip(tmp_path / "s.zip", [("d/scale4/a.aedat", b"4" * 10), ("d/scale8/a.aedat", b"8" * 10)])
    t = tmp_path / "t"
    assert unpack_zip(z, t, keep=lambda n: "scale4" in n) == ["d/scale4/a.aedat"]
    assert unpack_zip(z, t, keep=lambda n: "scale8" in n) == ["d/scale8/a.aedat"]
    assert (t / "d" / "scale8" / "a.aedat").read_bytes() == b"8" * 10


def test_unpack_never_writes_through_a_planted_part_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    t = tmp_path / "t"
    (t / "AVE").mkdir(parents=True)
    (t / "AVE" / "a.mp4.part").symlink_to(victim)
    unpack_zip(_zip(tmp_path / "a.zip", [("AVE/a.mp4", b"a" * 100)]), t)
    assert victim.read_text() == "keep me" and (t / "AVE" / "a.mp4").read_bytes() == b"a" * 100
    assert not (t / "AVE" / "a.mp4").is_symlink()


# ------------------------------------------------------------------------ hostile zips given to prepare


def _hostile(kind: str, tmp_path: Path) -> tuple[str, bytes, bool]:
    """(member name, content, is a link) of one hostile member; the names stand for files beside or above
    the target that must not appear."""
    if kind == "dotdot":
        return "../../../evil-dotdot", b"evil", False
    if kind == "absolute":
        return str(tmp_path / "evil-absolute"), b"evil", False
    return "LINK", str(tmp_path / "evil-link-target").encode(), True


def _add_member(zpath: Path, name: str, data: bytes, link: bool) -> None:
    with zipfile.ZipFile(zpath, "a") as zf:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = ((0o120777 if link else 0o100644) << 16)
        zf.writestr(info, data)


def _nothing_outside(tmp_path: Path, out: Path) -> None:
    found = [p for p in tmp_path.rglob("*") if p.name.startswith("evil") or p.is_symlink()]
    assert found == [], found
    assert not (tmp_path / "evil-link-target").exists()
    # what was written went under the output's state folder, nowhere else in it
    assert not [p for p in out.rglob("*") if p.is_file() and ".avdata" not in p.relative_to(out).parts]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
def test_prepare_urbansound_refuses_a_hostile_zip(tmp_path, kind):
    zpath = make_urbansound_raw(tmp_path / "raw", per_class=1, unpaired=0, as_zip=True, image_size=(16, 12),
                                seconds=0.1)
    name, data, link = _hostile(kind, tmp_path)
    if link:
        name = "urbansound8k-av/Dataset_v3_sound/dog_bark/evil.wav"
    _add_member(zpath, name, data, link)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "urbansound8k-av", "--raw", str(zpath), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert repr(name) in res.output.replace("\n", "")
    assert ("is a link" if link else "outside the target") in res.output
    _nothing_outside(tmp_path, out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
def test_prepare_mnistdvs_refuses_a_hostile_zip(tmp_path, kind):
    raw = make_mnistdvs_raw(tmp_path / "raw", per_class=1, scales=(4,), n_events=200)
    make_ntidigits_h5(raw, per_class=1)
    name, data, link = _hostile(kind, tmp_path)
    if link:  # a link among the recordings of the scale asked for
        name = "grabbed_data3/scale4/evil_0002.aedat"
    elif kind == "dotdot":
        name = "../../../grabbed_data3/scale4/evil.aedat"
    _add_member(raw / "grabbed_data3.zip", name, data, link)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--out", str(out),
                                   "--scale", "4", "--per-class", "2"])
    assert res.exit_code == 2, res.output
    assert repr(name) in res.output.replace("\n", "") and "grabbed_data3.zip" in res.output
    assert ("is a link" if link else "outside the target") in res.output
    _nothing_outside(tmp_path, out)
