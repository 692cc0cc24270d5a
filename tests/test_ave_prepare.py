"""`avdata prepare ave` on generated AVE-format data: real H.264/AAC MP4s with B-frames at the real
clips' non-integer frame rates, and lists in the real format (with a video listed under two categories
and a row whose video is missing)."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from avdata.media.audio import spectrogram
from avdata.datasets.ave.annotations import CATEGORIES, HEADER, SPLIT_FILES
from avdata.datasets.ave.recipe import AveOptions, AveRecipe
from avdata.datasets.ave.synth import REAL_FPS, make_ave_raw, video_encoder, write_ave_zip, write_mp4
from avdata.errors import AvdataError
from tests.finishes import finishes
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.datasets.splits import seeded_shuffle
from avdata.datasets.registry import get_recipe
from avdata.media.video import read_frames, resize_short_side
from avdata.cli.avdata_app import app
from tests.ave_helpers import decode_audio_mono, full_decode_all, full_decode_per_second, has_reordered_frames

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

LABELS = [0, 5, 10, 17, 27, 3]
DURATION = 3.0
SHORT = 48


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ave_raw")
    made = make_ave_raw(root, labels=LABELS, duration=DURATION, width=96, height=72, multi_label=1, seed=2)
    gone = next(v for v, info in made["videos"].items() if info["split"] == "test")
    (root / "AVE" / f"{gone}.mp4").unlink()
    made["gone"] = gone
    return root, made


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> Path:
    root, _ = raw
    out = tmp_path_factory.mktemp("ave_shards")
    prepare(get_recipe("ave"), root, out, AveOptions(short_side=SHORT, frame_format="npy"),
            PrepareSettings(samples_per_shard=2, progress=False))
    return out


def read_all(out: Path) -> dict[str, dict]:
    m = load_manifest(out)
    urls = [str(out / s["file"]) for e in m["splits"].values() for s in e["shards"]]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False).decode()}


def test_generated_clips_are_real_mp4s_with_b_frames_at_the_real_rates(raw):
    root, made = raw
    assert made["codec"] == video_encoder()
    rates = set()
    for mp4 in sorted((root / "AVE").glob("*.mp4")):
        with av.open(str(mp4)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert c.format.name.startswith("mov,mp4")
            assert v.codec_context.name == ("h264" if made["codec"] == "libx264" else "mpeg4")
            assert a.codec_context.name == "aac" and a.codec_context.sample_rate == 44100
            rates.add(Fraction(v.average_rate))
        assert has_reordered_frames(mp4), mp4
    assert rates == set(REAL_FPS)
    assert made["header"] and (root / "trainSet.txt").read_text().splitlines()[0] == HEADER


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_kept_frames_equal_a_full_decode_with_b_frames(tmp_path, codec):
    if codec == "libx264" and video_encoder() != "libx264":
        pytest.skip("this PyAV build has no libx264 encoder")
    for i, fps in enumerate(REAL_FPS):
        path = tmp_path / f"{codec}-{i}.mp4"
        assert write_mp4(path, label=i * 9, duration=3.4, width=96, height=64, fps=fps, seed=i, codec=codec,
                         channels=1 + i % 2) == codec
        assert has_reordered_frames(path)
        ref, ref_t = full_decode_per_second(path, seconds=100)
        frames, times, info = read_frames(path, "per_second", short_side=None)
        assert len(ref) == 4 and frames.shape[0] == 4
        assert np.allclose(times, ref_t, atol=1e-6)
        assert all(np.array_equal(a, b) for a, b in zip(frames, ref))
        every, every_t = full_decode_all(path)
        frames, times, _ = read_frames(path, "even", k=4, short_side=None)
        idx = [int(j) for j in np.linspace(0, len(every) - 1, 4).round()]
        assert all(np.array_equal(frames[n], every[j]) for n, j in enumerate(idx))
        assert np.allclose(times, [every_t[j] for j in idx], atol=1e-6)


def test_prepare_splits_labels_keys_and_skips(raw, prepared):
    root, made = raw
    m = load_manifest(prepared)
    assert m["dataset"] == "ave" and m["classes"] == CATEGORIES and len(m["classes"]) == 28
    rows = made["rows"]
    multi = rows["train"][-1][1] if rows["train"][-1][1] in {r[1] for r in rows["train"][:-1]} else None
    expected: dict[str, tuple[str, str]] = {}
    ids_twice = {r[1] for s in rows.values() for r in s if sum(r[1] == q[1] for t in rows.values() for q in t) > 1}
    for split, split_rows in rows.items():
        for category, vid, *_ in split_rows:
            key = f"{vid}-c{CATEGORIES.index(category):02d}" if vid in ids_twice else vid
            expected[key] = (split, category)
    assert len(ids_twice) == 1 and multi in ids_twice
    gone = made["gone"]
    assert [(s["key"], s["path"], s["reason"].split(":")[0]) for s in m["skipped"]] == \
        [(gone, f"{gone}.mp4", "missing video")]
    got = read_all(prepared)
    assert set(got) == set(expected) - {gone}
    for key, s in got.items():
        split, category = expected[key]
        meta = s["json"]
        assert (meta["split"], meta["label_name"], s["cls"]) == (split, category, CATEGORIES.index(category))
        assert meta["video_id"] == key[:11] and (key == meta["video_id"]) == (key in made["videos"])
        assert s["frames.npy"].dtype == np.uint8 and s["frames.npy"].shape[0] == 10  # 10 slots, one per second
        assert meta["num_frames"] == 3 and (s["frames.npy"][3:] == s["frames.npy"][2]).all()  # seconds 0, 1, 2
        assert min(s["frames.npy"].shape[1:3]) == SHORT
        assert s["spec.npy"].dtype == np.float32 and s["spec.npy"].shape[0] == 257
        assert {x["file"] for x in meta["sources"]} == {f"AVE/{meta['video_id']}.mp4", SPLIT_FILES[split]}
    # each split is written in the seeded order of its keys (--seed), not the lists' category-grouped order
    seed = m["options"]["seed"]
    for split, e in m["splits"].items():
        urls = [str(prepared / sh["file"]) for sh in e["shards"]]
        keys = [x["__key__"] for x in wds.WebDataset(urls, shardshuffle=False)]
        assert keys == seeded_shuffle(keys, seed, f"order:{split}") and len(keys) == e["num_samples"]
    # two samples of the double-listed video: same frames, same sound, two labels
    a, b = (got[k] for k in sorted(k for k in got if k.startswith(multi)))
    assert np.array_equal(a["frames.npy"], b["frames.npy"]) and a["cls"] != b["cls"]


def test_frames_and_spectrogram_against_independent_decodes(raw, prepared):
    root, _ = raw
    for key, s in read_all(prepared).items():
        mp4 = root / "AVE" / f"{s['json']['video_id']}.mp4"
        ref, times = full_decode_per_second(mp4)
        real = s["frames.npy"][: s["json"]["num_frames"]]  # the slots after them repeat the last one
        assert [resize_short_side(img, SHORT).tobytes() for img in ref] == [f.tobytes() for f in real]
        assert s["json"]["video"]["frame_times_s"] == [round(t, 4) for t in times]
        wave, rate, channels = decode_audio_mono(mp4)
        assert np.array_equal(s["spec.npy"], spectrogram(wave, rate, "reference"))
        assert s["json"]["audio"]["source_channels"] == channels


def test_class_signal_is_in_the_samples(raw, prepared):
    """The generated picture and tone depend on the class (what the training test learns from)."""
    got = read_all(prepared)
    peaks = {}
    for s in got.values():
        spec = s["spec.npy"]
        peaks[s["cls"]] = int(np.argmax(spec.mean(axis=1)))
    # 220 * 2 ** (label / 8) Hz, bins of 22050 / 512 Hz
    for label, peak in peaks.items():
        assert abs(peak - 220 * 2 ** (label / 8) / (22050 / 512)) <= 1.5, (label, peak)


def test_zip_input_gives_the_same_shards_and_cli(raw, prepared, tmp_path):
    root, _ = raw
    zpath = write_ave_zip(root, tmp_path / "AVE.zip")
    out = tmp_path / "from_zip"
    res = CliRunner().invoke(app, ["prepare", "ave", "--raw", str(zpath), "--out", str(out), "--short-side",
                                   str(SHORT), "--samples-per-shard", "2", "--frame-format", "npy"])
    assert res.exit_code == 0, res.output
    def shas(d: Path) -> list[tuple[str, str]]:
        return [(s["file"], s["sha256"]) for e in load_manifest(d)["splits"].values() for s in e["shards"]]

    assert shas(out) == shas(prepared)
    assert (out / ".avdata" / "raw" / "ave" / "AVE").is_dir()


def test_lists_with_and_without_header_plan_the_same(tmp_path):
    plans = []
    for header in (True, False):
        root = tmp_path / str(header)
        make_ave_raw(root, labels=[1, 2], duration=1.0, width=32, height=32, header=header, seed=5,
                     split_cycle=("train", "val"))
        first = (root / "trainSet.txt").read_text().splitlines()[0]
        assert (first == HEADER) == header
        plans.append([(i.key, i.split, i.label) for i in AveRecipe().plan(root, AveOptions()).items])
    assert plans[0] == plans[1] and len(plans[0]) == 2


def test_bad_lists_are_named_with_their_fix(tmp_path):
    root = tmp_path / "r"
    make_ave_raw(root, labels=[4], duration=1.0, width=32, height=32, seed=1, split_cycle=("train",))
    (root / "valSet.txt").unlink()
    with pytest.raises(AvdataError, match=r"valSet\.txt not found.*AVE-ECCV18"):
        AveRecipe().plan(root, AveOptions())
    (root / "valSet.txt").write_text("Accordion&abc&good&0\n")
    with pytest.raises(AvdataError, match=r"valSet\.txt:1: expected 5 fields"):
        AveRecipe().plan(root, AveOptions())
    (root / "valSet.txt").write_text(HEADER + "\nAccordeon&abcdefghijk&good&0&10\n")
    with pytest.raises(AvdataError, match=r"valSet\.txt:2: unknown category 'Accordeon'"):
        AveRecipe().plan(root, AveOptions())
    (root / "valSet.txt").write_text("<!DOCTYPE html><html>Google Drive - Virus scan warning</html>\n")
    with pytest.raises(AvdataError, match=r"valSet\.txt:1"):
        AveRecipe().plan(root, AveOptions())


def test_generator_is_deterministic(tmp_path):
    digests = []
    for i in range(2):
        path = tmp_path / f"{i}.mp4"
        write_mp4(path, label=7, duration=1.5, width=64, height=48, fps=REAL_FPS[1], seed=3, channels=2)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_folder_holding_the_zip_is_unpacked_and_a_clip_without_audio_is_skipped(tmp_path):
    gen = tmp_path / "gen"
    made = make_ave_raw(gen, labels=[6, 7], duration=1.0, width=32, height=32, seed=9, split_cycle=("train",))
    silent = next(iter(made["videos"]))
    with av.open(str(gen / "AVE" / f"{silent}.mp4"), "w", format="mp4") as out:  # the same clip, video only
        vs = out.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 9 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    folder = tmp_path / "downloaded"
    folder.mkdir()
    write_ave_zip(gen, folder / "AVE.zip")
    for name in SPLIT_FILES.values():
        (folder / name).write_bytes((gen / name).read_bytes())
    out = tmp_path / "out"
    res = prepare(AveRecipe(), folder, out, AveOptions(short_side=32), PrepareSettings(progress=False))
    assert res.complete and len(list((out / ".avdata" / "raw" / "ave" / "AVE").glob("*.mp4"))) == 2
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 1
    assert [(s["key"], s["reason"]) for s in m["skipped"]] == \
        [(silent, "no audio track in the video (AVE's sound is the MP4's AAC track)")]
    # a rerun keeps every shard: the lists beside the zip are copied into the unpacked tree only when they
    # differ (a copy each run made them newer than the shards made from them, and every shard was made again)
    again = prepare(AveRecipe(), folder, out, AveOptions(short_side=32), PrepareSettings(progress=False))
    assert again.complete and again.written == [] and sorted(again.kept) == sorted(res.written)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this OS")
def test_a_list_that_is_a_fifo_or_huge_is_named_not_waited_on(tmp_path):
    """A FIFO named trainSet.txt (or Annotations.txt) in the raw folder blocked `avdata prepare ave` for
    good; a list file of gigabytes was read whole."""
    import os

    from avdata.shards.reader import NotAFileError

    raw = tmp_path / "raw"
    (raw / "AVE").mkdir(parents=True)
    (raw / "AVE" / "abc.mp4").write_bytes(b"")  # planning lists videos, it does not open them
    row = f"{HEADER}\n{CATEGORIES[0]}&abc&good&0&10\n"
    (raw / "valSet.txt").write_text(row)
    (raw / "testSet.txt").write_text(row)
    os.mkfifo(raw / "trainSet.txt")
    err = finishes(lambda: AveRecipe().plan(raw, AveOptions()))
    assert isinstance(err, NotAFileError) and str(err) == f"{raw / 'trainSet.txt'}: is a FIFO (named pipe), " \
                                                                "not a plain file"
    from avdata.datasets.ave.annotations import MAX_LIST_BYTES

    (raw / "trainSet.txt").unlink()
    (raw / "trainSet.txt").write_text(row + "\n" * MAX_LIST_BYTES)
    with pytest.raises(AvdataError, match=r"^trainSet.txt: larger than 16,777,216 bytes, far more than an AVE list"):
        AveRecipe().plan(raw, AveOptions())


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this OS")
def test_a_link_to_a_folder_or_a_fifo_named_as_a_clip_is_skipped_naming_it(tmp_path):
    """A symbolic link to a folder named `<id>.mp4` was skipped as "missing video: file not found" (the
    listing took it for a folder); it and a FIFO are now skipped naming what is there, as in CREMA-D."""
    import os

    root = tmp_path / "raw"
    made = make_ave_raw(root, labels=[1, 2, 3], duration=1.0, width=32, height=32, seed=4,
                        split_cycle=("train",))
    linked, fifo, kept = sorted(made["videos"])
    (root / "AVE" / f"{linked}.mp4").unlink()
    (tmp_path / "elsewhere").mkdir()
    (root / "AVE" / f"{linked}.mp4").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "AVE" / f"{fifo}.mp4").unlink()
    os.mkfifo(root / "AVE" / f"{fifo}.mp4")
    out = tmp_path / "out"
    res = finishes(lambda: prepare(AveRecipe(), root, out, AveOptions(short_side=32), PrepareSettings(progress=False)))
    assert res.complete
    m = load_manifest(out)
    assert m["splits"]["train"]["num_samples"] == 1
    assert sorted((s["key"], s["path"], s["reason"]) for s in m["skipped"]) == sorted([
        (linked, f"AVE/{linked}.mp4", "not a regular file (a folder, through a symbolic link)"),
        (fifo, f"AVE/{fifo}.mp4", "not a regular file (a FIFO)")])
