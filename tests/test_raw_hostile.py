"""Damaged, odd and hostile raw input built from the real sample files (../shared/datasets/*/sample/): each bad
clip is skipped with its path and a reason in manifest.json, the run goes on, and the good clips' samples
are byte-identical to a run without the bad one."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from avdata.datasets.cremad.recipe import EMOTIONS, CremadOptions
from avdata.datasets.registry import get_recipe
from avdata.prepare.engine import PrepareSettings, prepare
from tests.manifests import load_manifest

pytestmark = pytest.mark.slow  # end to end: prepare on real files (a few seconds in all)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CREMAD = SHARED / "cremad" / "sample"
CLIPS = [f"1001_DFA_{e}_XX" for e in EMOTIONS]
BAD = CLIPS[0]
needs_cremad = pytest.mark.skipif(not (CREMAD / "VideoFlash").is_dir(),
                                  reason=f"real CREMA-D sample not found at {CREMAD} (CI has it beside the repository)")


def cremad_raw(root: Path) -> Path:
    """The six real clips as prepare reads them: VideoFlash/*.flv (genuine) and AudioWAV/*.wav (derived)."""
    for src, dst, ext in (("VideoFlash", "VideoFlash", "flv"), ("AudioWAV-derived", "AudioWAV", "wav")):
        (root / dst).mkdir(parents=True)
        for c in CLIPS:
            shutil.copyfile(CREMAD / src / f"{c}.{ext}", root / dst / f"{c}.{ext}")
    return root


def samples(out: Path) -> dict[str, bytes]:
    """Every shard member's bytes by name (`<key>.<field>`)."""
    found = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                found[m.name] = tf.extractfile(m).read()  # type: ignore[union-attr]
    return found


def prepare_cremad(raw: Path, out: Path) -> tuple[dict, dict[str, bytes]]:
    prepare(get_recipe("cremad"), raw, out, CremadOptions(val_fraction=0.0, short_side=32),
            PrepareSettings(jobs=1, progress=False))
    return load_manifest(out), samples(out)


@pytest.fixture(scope="module")
def cremad_without_bad(tmp_path_factory) -> dict[str, bytes]:
    raw = cremad_raw(tmp_path_factory.mktemp("raw"))
    for sub, ext in (("VideoFlash", "flv"), ("AudioWAV", "wav")):
        (raw / sub / f"{BAD}.{ext}").unlink()
    return prepare_cremad(raw, tmp_path_factory.mktemp("out"))[1]


def loop(p: Path) -> None:
    p.symlink_to(p.name)


def loop_of_two(p: Path) -> None:
    p.symlink_to(p.name + ".b")
    p.with_name(p.name + ".b").symlink_to(p.name)


@needs_cremad
@pytest.mark.parametrize("sub,ext", [("VideoFlash", "flv"), ("AudioWAV", "wav")])
@pytest.mark.parametrize("make,reason", [
    (loop, "symbolic link loop (the link leads back to itself)"),
    (loop_of_two, "symbolic link loop (the link leads back to itself)"),
    (lambda p: p.symlink_to("/nonexistent/x"), "broken symbolic link (what it points to does not exist)"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file (a device, through a symbolic link)"),
    (lambda p: p.symlink_to(p.parent), "not a regular file (a folder, through a symbolic link)"),
    (os.mkfifo, "not a regular file (a FIFO)"),
])
def test_cremad_clip_that_is_no_file_is_skipped_and_the_run_goes_on(tmp_path, cremad_without_bad, sub, ext,
                                                                     make, reason):
    """A clip's FLV or WAV replaced by a symbolic link loop stopped the whole run at planning ("Too many
    levels of symbolic links"); a dangling link, a link to a device or folder, or a FIFO was skipped as
    "file not found". Each is now skipped with what it is, and the other clips come out unchanged."""
    raw = cremad_raw(tmp_path / "raw")
    target = raw / sub / f"{BAD}.{ext}"
    target.unlink()
    make(target)
    m, got = prepare_cremad(raw, tmp_path / "out")
    assert [(s["key"], s["path"], s["reason"]) for s in m["skipped"]] == [(BAD, f"{sub}/{BAD}.{ext}", reason)]
    assert got == cremad_without_bad and len(got) == 5 * 8  # cls, json, spec, 5 frame slots


def image_bytes(fmt: str) -> bytes:
    """A real image file of `fmt`, written by PIL."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(buf, fmt)
    return buf.getvalue()


@needs_cremad
@pytest.mark.parametrize("fmt,name", [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("WEBP", "webp")])
def test_cremad_image_saved_as_flv_is_skipped(tmp_path, cremad_without_bad, fmt, name):
    """A PNG (or JPEG, GIF, WebP) saved under a clip's .flv name was read by FFmpeg's image reader as a
    one-frame video, and the clip went into the shards with that picture; it is now skipped as a still
    image."""
    raw = cremad_raw(tmp_path / "raw")
    (raw / "VideoFlash" / f"{BAD}.flv").write_bytes(image_bytes(fmt))
    m, got = prepare_cremad(raw, tmp_path / "out")
    assert [(s["key"], s["path"], s["reason"]) for s in m["skipped"]] == [
        (BAD, f"VideoFlash/{BAD}.flv", f"a still image ({name}), not a video")]
    assert got == cremad_without_bad


AVE = SHARED / "ave" / "sample"


def keep_first_video_packet(path: Path) -> None:
    """Remux a real MP4 keeping all its audio and only its first video packet (a key frame)."""
    import av

    tmp = path.with_name("remux.mp4")
    with av.open(str(path)) as src, av.open(str(tmp), "w") as dst:
        out = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        seen_video = False
        for packet in src.demux():
            if packet.dts is None or packet.stream.index not in out:
                continue
            if packet.stream.type == "video":
                if seen_video:
                    continue
                seen_video = True
            packet.stream = out[packet.stream.index]
            dst.mux(packet)
    tmp.replace(path)


@pytest.mark.skipif(not AVE.is_dir(), reason=f"real AVE sample not found at {AVE}")
def test_ave_clip_whose_video_stops_after_one_frame_is_skipped(tmp_path):
    """A real AVE clip remuxed with its 10 s of audio but only its first video frame was prepared as a
    sample of one frame (the video stream's own duration ended with that frame); it is now skipped as
    truncated against the clip's length, and the other clips come out as without it."""
    from avdata.datasets.ave.recipe import AveOptions
    from tests.test_ave_real import make_raw

    def run(raw: Path, out: Path) -> tuple[dict, dict[str, bytes]]:
        prepare(get_recipe("ave"), raw, out, AveOptions(short_side=32), PrepareSettings(jobs=1, progress=False))
        return load_manifest(out), samples(out)

    make_raw(tmp_path / "raw", header=False)
    victim = sorted((tmp_path / "raw" / "AVE").glob("*.mp4"))[0]
    shutil.copytree(tmp_path / "raw", tmp_path / "without")
    (tmp_path / "without" / "AVE" / victim.name).unlink()
    keep_first_video_packet(victim)
    m, got = run(tmp_path / "raw", tmp_path / "out")
    assert [(s["key"], s["path"]) for s in m["skipped"]] == [(victim.stem, f"AVE/{victim.name}")]
    reason = m["skipped"][0]["reason"]
    assert reason == "truncated: holds 1 frame of 177 expected (frames end at 0.06 s of a clip 10.05 s)"
    assert got == run(tmp_path / "without", tmp_path / "out2")[1] and len(got) == 2 * 13  # cls, json, spec, 10 frames


US8K = SHARED / "urbansound8k" / "sample"
US8K_VICTIM = "156194-1-0-0"  # the one car_horn excerpt: removing its pair changes no other class's split
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


def us8k_raw(root: Path) -> Path:
    """The ten real UrbanSound8K excerpts as Dataset_v3_sound/<class>/<name>.wav, each with a generated JPEG
    (the UrbanSound8K-AV images are not at hand) as Dataset_v3_vision/<class>/<name>.jpg."""
    import numpy as np
    from PIL import Image

    from avdata.datasets.urbansound8k_av.recipe import CLASSES

    rng = np.random.default_rng(0)
    for wav in sorted(US8K.glob("*.wav")):
        stem = wav.stem.removeprefix("resampled-")
        cls = CLASSES[int(stem.split("-")[1])]
        for side in ("Dataset_v3_sound", "Dataset_v3_vision"):
            (root / side / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, root / "Dataset_v3_sound" / cls / f"{stem}.wav")
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
            root / "Dataset_v3_vision" / cls / f"{stem}.jpg")
    return root


@pytest.mark.skipif(not US8K.is_dir(), reason=f"real UrbanSound8K sample not found at {US8K}")
def test_us8k_html_page_saved_as_jpg_is_skipped_without_the_raw_folders_path(tmp_path):
    """An HTML error page saved under an image's name was skipped with PIL's message, which holds the
    file's absolute path, so manifest.json carried the raw folder's location (and differed between two
    copies of the same input); the reason now names the file only by its manifest path."""
    from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions

    def run(raw: Path, out: Path) -> tuple[dict, dict[str, bytes]]:
        prepare(get_recipe("urbansound8k-av"), raw, out, UrbanSoundOptions(val_fraction=0.0, short_side=32),
                PrepareSettings(jobs=1, progress=False))
        return load_manifest(out), samples(out)

    raw = us8k_raw(tmp_path / "raw")
    shutil.copytree(raw, tmp_path / "without")
    for side, ext in (("Dataset_v3_sound", "wav"), ("Dataset_v3_vision", "jpg")):
        (tmp_path / "without" / side / "car_horn" / f"{US8K_VICTIM}.{ext}").unlink()
    (raw / "Dataset_v3_vision" / "car_horn" / f"{US8K_VICTIM}.jpg").write_bytes(HTML_PAGE)
    m, got = run(raw, tmp_path / "out")
    assert [(s["key"], s["path"], s["reason"]) for s in m["skipped"]] == [
        (f"car_horn-{US8K_VICTIM}", f"Dataset_v3_vision/car_horn/{US8K_VICTIM}.jpg",
         "not a readable image (cannot identify image file '<file>')")]
    assert str(tmp_path) not in (tmp_path / "out" / "manifest.json").read_text()
    assert got == run(tmp_path / "without", tmp_path / "out2")[1] and len(got) == 9 * 4  # cls, json, frame, spec
