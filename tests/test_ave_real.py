"""AVE on the real material in ../shared/datasets/ave: the real Annotations.txt (4,143 rows, no header) and
three real clips (H.264 with B-frames at 17.58, 29.92 and 25 fps, AAC mono or stereo), prepared with
their real annotation rows: frames at the right seconds against a full decode, the spectrogram of the
MP4's own AAC track, labels from the real category names, lists with and without a header line."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds

from avdata.media.audio import spectrogram
from avdata.datasets.ave.annotations import CATEGORIES, HEADER, SPLIT_FILES, parse_rows, read_rows
from avdata.datasets.ave.recipe import AveOptions, AveRecipe
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.media.video import resize_short_side
from tests.ave_helpers import decode_audio_mono, full_decode_per_second

REAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ave"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (REAL / "sample").is_dir(),
    reason=f"real AVE material not found at {REAL} (CI clones shared/ beside the repo)")]

# id -> (split given to it here, frame rate, channels), as probed in the folder's README
CLIPS = {"0lFf-HP86Q0": ("train", 211 / 12, 1), "16eUxQwxxbs": ("val", 359 / 12, 2),
         "22olCB3wQaA": ("test", 25.0, 2)}
SHORT = 96


def real_lines() -> list[str]:
    return (REAL / "Annotations.txt").read_text(encoding="utf-8").splitlines()


def test_real_annotations_parse_into_the_28_sorted_categories():
    lines = real_lines()
    assert lines[0] != HEADER  # this copy has no header line
    rows = read_rows(REAL / "Annotations.txt")
    assert len(rows) == 4143
    assert sorted({r.category for r in rows}) == CATEGORIES and len(CATEGORIES) == 28
    assert CATEGORIES[0] == "Accordion" and CATEGORIES[27] == "Violin, fiddle"
    per_video = Counter(r.video_id for r in rows)
    assert len(per_video) == 4097 and sum(1 for n in per_video.values() if n > 1) == 45
    # the zip's copies start with a header line: the same rows come out
    with_header = parse_rows(HEADER + "\r\n" + "\r\n".join(lines) + "\r\n", "Annotations.txt")
    assert [replace(r, line=r.line - 1) for r in with_header] == rows
    assert all(0 <= r.start_s <= r.end_s <= 10 for r in rows)
    assert [r.video_id for r in rows if r.start_s == r.end_s] == ["VWi2ENBuTbw"]  # one real row reads 0&0


def make_raw(root: Path, header: bool) -> dict[str, str]:
    """A raw folder with the three real clips under AVE/, the real Annotations.txt, and split lists holding
    the clips' real rows (verbatim lines), with or without the header line."""
    (root / "AVE").mkdir(parents=True)
    lines = real_lines()
    rows = {}
    for vid, (split, _, _) in CLIPS.items():
        shutil.copyfile(REAL / "sample" / f"{vid}.mp4", root / "AVE" / f"{vid}.mp4")
        rows[vid] = next(line for line in lines if line.split("&")[1] == vid)
    head = [HEADER] if header else []
    (root / "Annotations.txt").write_text("\n".join(head + lines) + "\n", encoding="utf-8")
    for split, name in SPLIT_FILES.items():
        mine = [rows[v] for v, (s, _, _) in CLIPS.items() if s == split]
        (root / name).write_text("\n".join(head + mine) + "\n", encoding="utf-8")
    return rows


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    raw = tmp_path_factory.mktemp("ave_real_raw")
    rows = make_raw(raw, header=False)
    out = tmp_path_factory.mktemp("ave_real_shards")
    prepare(AveRecipe(), raw, out, AveOptions(short_side=SHORT, frame_format="npy"),
            PrepareSettings(samples_per_shard=2, progress=False))
    return raw, out, rows


def samples(out: Path) -> dict[str, dict]:
    m = load_manifest(out)
    urls = [str(out / s["file"]) for split in m["splits"].values() for s in split["shards"]]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False).decode()}


def test_real_clips_are_h264_with_b_frames_and_aac():
    for vid, (_, fps, channels) in CLIPS.items():
        with av.open(str(REAL / "sample" / f"{vid}.mp4")) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264" and v.codec_context.has_b_frames
            assert float(v.average_rate) == pytest.approx(fps, abs=1e-3)
            assert a.codec_context.name == "aac" and a.codec_context.channels == channels


def test_real_clips_labels_and_splits_from_the_real_rows(prepared):
    _, out, rows = prepared
    m = load_manifest(out)
    assert m["classes"] == CATEGORIES and m["skipped"] == []
    assert {s: e["num_samples"] for s, e in m["splits"].items()} == {"train": 1, "val": 1, "test": 1}
    got = samples(out)
    assert set(got) == set(CLIPS)
    for vid, s in got.items():
        category, _, quality, start, end = rows[vid].split("&")
        assert s["json"]["label_name"] == category == s["json"]["category"]
        assert s["cls"] == CATEGORIES.index(category) == s["json"]["label"]
        assert s["json"]["split"] == CLIPS[vid][0]
        assert (s["json"]["event_start_s"], s["json"]["event_end_s"]) == (float(start), float(end))
    assert got["0lFf-HP86Q0"]["json"]["label_name"] == "Female speech, woman speaking"
    assert got["16eUxQwxxbs"]["json"]["label_name"] == "Ukulele"
    assert got["22olCB3wQaA"]["json"]["label_name"] == "Race car, auto racing"


def test_real_clips_frames_are_the_first_of_each_second_of_a_full_decode(prepared):
    raw, out, _ = prepared
    for vid, s in samples(out).items():
        ref, times = full_decode_per_second(raw / "AVE" / f"{vid}.mp4")
        frames = s["frames.npy"]
        assert len(ref) == 10 and frames.shape[0] == 10  # 22olCB3wQaA's frame at 10.0 s is not kept
        assert s["json"]["video"]["frame_times_s"] == [round(t, 4) for t in times]
        assert all(int(t) == i for i, t in enumerate(times))
        assert min(frames.shape[1:3]) == SHORT
        for i, img in enumerate(ref):
            assert np.array_equal(frames[i], resize_short_side(img, SHORT)), (vid, i)
        assert s["json"]["video"]["fps"] == pytest.approx(CLIPS[vid][1], abs=1e-3)


def test_real_clips_spectrogram_is_the_mp4s_aac_track(prepared):
    raw, out, _ = prepared
    for vid, s in samples(out).items():
        wave, rate, channels = decode_audio_mono(raw / "AVE" / f"{vid}.mp4")
        assert (rate, channels) == (44100, CLIPS[vid][2])
        expected = spectrogram(wave, rate, "reference")
        assert s["spec.npy"].shape == expected.shape and expected.shape[0] == 257
        assert np.array_equal(s["spec.npy"], expected)
        assert 620 <= expected.shape[1] <= 630  # about 10.03 s at 22,050 Hz / hop 353
        a = s["json"]["audio"]
        assert (a["codec"], a["source_sample_rate"], a["source_channels"]) == ("aac", 44100, CLIPS[vid][2])


def test_real_rows_with_and_without_header_plan_the_same(tmp_path):
    plans = {}
    for header in (False, True):
        raw = tmp_path / f"h{int(header)}"
        make_raw(raw, header)
        assert ((raw / "trainSet.txt").read_text().splitlines()[0] == HEADER) == header
        plan = AveRecipe().plan(raw, AveOptions())
        plans[header] = plan
        assert plan.notes["annotation_rows"] == 4143
    strip = lambda p: [(i.key, i.split, i.label, i.sources["video"], i.meta["category"]) for i in p.items]  # noqa: E731
    assert strip(plans[False]) == strip(plans[True])
    assert [i.key for i in plans[True].items] == ["0lFf-HP86Q0", "16eUxQwxxbs", "22olCB3wQaA"]
