"""Raw-file budgets (`avdata.media.budget`): small hostile files must not take the machine.

Each hostile file is built for real (a WAV header at 1 Hz, an FLV of tiny skip frames one second apart, PNGs
of 13000x13000 and 30000x30000 pixels, a zip holding a member of zeros), then prepared: the clip is skipped and
recorded with a reason naming the budget, the run completes with the other clips, and the peak memory of the
process that prepared them (measured in a fresh subprocess) stays far below what the file declared.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.datasets.ave.audio_track import audio_track_features
from avdata.datasets.ave.synth import write_mp4
from avdata.datasets.cremad.recipe import CremadOptions
from avdata.datasets.cremad.synth import make_cremad_raw
from avdata.datasets.recipe import options_dict
from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions, used_member
from avdata.datasets.urbansound8k_av.synth import CLASSES, make_urbansound_raw, stem_of
from avdata.datasets.ziputil import ZIP_TIME
from avdata.errors import AvdataError
from avdata.fetch.unpack import unpack_zip
from avdata.media.audio import audio_features, load_audio
from avdata.media.budget import DEFAULT_MAX_DECODED_MB, PACKET_BYTES, OverBudget, mb_bytes
from avdata.media.image import load_image
from avdata.media.video import _slow_path, read_frames

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: Peak RSS allowed to a prepare run that meets the hostile files: interpreter, PyAV, OpenCV, numpy and a few
#: small clips take 120-300 MB; the files declare 1.1 to 6 GB.
PEAK_MB = 600


# --- hostile files, each written for real -------------------------------------------------------------------

def wav_header_file(path: Path, sr: int, n_samples: int, declared: int | None = None) -> Path:
    """A 16-bit mono PCM WAV of `n_samples` small samples at `sr`, its data chunk declaring `declared` bytes."""
    data = np.full(n_samples, 100, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sr, sr * 2, 2, 16)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
            + struct.pack("<I", len(data) if declared is None else declared) + data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def flv_skip_frames(path: Path, n: int, size: int = 16) -> Path:
    """An FLV of `n` identical frames at 1 fps, one key frame: every later frame is a tiny skip frame, and a
    per-second read keeps all n."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as out:
        vs = out.add_stream("flv", rate=1)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.codec_context.gop_size = n + 1
        frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 90, np.uint8), format="rgb24")
        for i in range(n):
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


def blank_png(path: Path, width: int, height: int, depth: int = 8) -> Path:
    """A black greyscale PNG written row by row through zlib (PIL would need the whole image in memory)."""
    row = b"\x00" + bytes((width * depth + 7) // 8)
    comp = zlib.compressobj(1)
    parts = [comp.compress(row * min(256, height - i)) for i in range(0, height, 256)] + [comp.flush()]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def zip_with_zeros(zpath: Path, tree: Path, zero_name: str, zero_bytes: int) -> Path:
    """A zip of every file under `tree` (names relative to its parent) plus `zero_name`: zero_bytes of zeros."""
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(q for q in tree.rglob("*") if q.is_file()):
            zf.write(p, p.relative_to(tree.parent).as_posix())
        info = zipfile.ZipInfo(zero_name, date_time=ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as out:
            block = bytes(1 << 20)
            for _ in range(zero_bytes >> 20):
                out.write(block)
    return zpath


# --- running prepare in a fresh process, measuring its peak memory -------------------------------------------

def prepare_measured(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """`avdata prepare <args>` in a new interpreter; (the process, peak RSS in MB of it and its workers)."""
    code = textwrap.dedent(f"""
        import resource, sys
        from typer.testing import CliRunner
        from avdata.cli.avdata_app import app
        res = CliRunner().invoke(app, ["prepare", *{args!r}])
        # VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss across exec, so it would count the (large) test
        # process this one was forked from
        hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        peak = max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(res.output)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            import traceback; traceback.print_exception(res.exception)
        print("PEAK_KB", peak)
        sys.exit(res.exit_code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    peak = [line for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")]
    assert peak, proc.stdout + proc.stderr
    return proc, int(peak[-1].split()[1]) / 1024


def skipped_reasons(out: Path) -> dict[str, str]:
    m = json.loads((out / "manifest.json").read_text())
    return {s["path"]: s["reason"] for s in m["skipped"]}


def samples(out: Path) -> int:
    m = json.loads((out / "manifest.json").read_text())
    return sum(s["num_samples"] for s in m["splits"].values())


# --- UrbanSound8K-AV: WAV at 1 Hz, big PNGs, an unused zero member in the zip --------------------------------

@pytest.fixture(scope="module")
def urbansound_run(tmp_path_factory):
    """One prepare of a generated UrbanSound8K-AV zip holding a 1 Hz WAV, a 13000x13000 PNG, a 30000x30000
    PNG and an unused 64 MB member of zeros."""
    root = tmp_path_factory.mktemp("us_raw")
    base = make_urbansound_raw(root, per_class=2, unpaired=0)
    vision, sound = base / "Dataset_v3_vision", base / "Dataset_v3_sound"
    hostile = {}
    wav = sound / "dog_bark" / f"{stem_of(3, 0)}.wav"
    wav_header_file(wav, 1, 6000)  # 12 KB of samples at 1 Hz: 6000 s, 132 million samples at 22,050 Hz
    hostile["wav"] = wav
    for cls, side, depth in (("siren", 13000, 8), ("drilling", 30000, 1)):
        jpg = vision / cls / f"{stem_of(CLASSES.index(cls), 0)}.jpg"
        jpg.unlink()
        hostile[f"png{side}"] = blank_png(jpg.with_suffix(".png"), side, side, depth)
    zpath = zip_with_zeros(root / "us.zip", base, "urbansound8k-av/unused/zeros.bin", 64 << 20)
    out = root / "out"
    proc, peak = prepare_measured(["urbansound8k-av", "--raw", str(zpath), "--out", str(out), "--val-fraction", "0"])
    rel = {k: p.relative_to(base.parent).as_posix() for k, p in hostile.items()}
    return proc, peak, out, rel, zpath


def test_wav_at_1hz_is_skipped_naming_the_budget(urbansound_run):
    proc, _, out, rel, _ = urbansound_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reason = skipped_reasons(out)[rel["wav"]]
    assert "decoded-size budget" in reason and "sample rate 1 Hz" in reason


def test_big_pngs_are_skipped_not_internal_errors(urbansound_run):
    proc, _, out, rel, _ = urbansound_run
    assert proc.returncode == 0 and "internal error" not in proc.stdout.lower()
    reasons = skipped_reasons(out)
    assert "13000x13000" in reasons[rel["png13000"]] and "--max-decoded-mb 1,024" in reasons[rel["png13000"]]
    assert "30000x30000" in reasons[rel["png30000"]] and "decoded-size budget" in reasons[rel["png30000"]]


def test_run_completes_with_the_other_pairs_in_bounded_memory(urbansound_run):
    proc, peak, out, _, _ = urbansound_run
    assert samples(out) == 10 * 2 - 3  # every pair but the three hostile ones
    assert len(skipped_reasons(out)) == 3
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB"


def test_unused_zip_member_is_never_written(urbansound_run):
    _, _, out, _, zpath = urbansound_run
    assert not list(out.rglob("zeros.bin*"))
    assert not used_member("urbansound8k-av/unused/zeros.bin")
    assert used_member("urbansound8k-av/Dataset_v3_sound/siren/a.WAV")
    assert used_member("Dataset_v3_vision/siren/a.png") and not used_member("Dataset_v3_vision/siren/a.txt")


def test_zip_bomb_member_the_recipe_uses_is_refused(tmp_path):
    tree = tmp_path / "t"
    (tree / "Dataset_v3_sound" / "siren").mkdir(parents=True)
    (tree / "Dataset_v3_sound" / "siren" / "ok.wav").write_bytes(b"RIFF" + bytes(100))
    zpath = zip_with_zeros(tmp_path / "bomb.zip", tree, "t/Dataset_v3_sound/siren/bomb.wav", 32 << 20)
    with pytest.raises(AvdataError, match=r"bomb\.wav' would inflate 1,0\d\d:1 .* more than the 100:1 allowed"):
        unpack_zip(zpath, tmp_path / "out", keep=used_member)
    assert not list((tmp_path / "out").rglob("bomb.wav*"))
    # the same bytes are unpacked when the caller allows the ratio
    assert "t/Dataset_v3_sound/siren/bomb.wav" in unpack_zip(zpath, tmp_path / "out2", max_ratio=2000)


def test_many_small_zero_members_are_refused_by_the_total_ratio(tmp_path):
    zpath = tmp_path / "many.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(12):
            zf.writestr(f"d/{i}.bin", bytes(1 << 20))  # each under RATIO_MIN_BYTES
    with pytest.raises(AvdataError, match=r"its 12 members would inflate \d[\d,]*:1 .* more than the 100:1"):
        unpack_zip(zpath, tmp_path / "out")


# --- CREMA-D: the FLV frame bomb --------------------------------------------------------------------------

CREMAD_ARGS = ["prepare", "cremad", "--val-fraction", "0", "--raw"]


@pytest.fixture(scope="module")
def cremad_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad_bomb")
    made = make_cremad_raw(root, n_clips=4, seed=5, width=64, height=48, fps=10, duration_range=(1.0, 1.5))
    bomb = made["good"][0]
    return root, bomb, root / "VideoFlash" / f"{bomb}.flv"


def test_flv_frame_bomb_is_skipped_in_bounded_memory(cremad_raw, tmp_path):
    root, bomb, flv = cremad_raw
    flv_skip_frames(flv, 6000)  # 144 KB; 6000 kept frames of 256x256 RGB: 1.1 GB
    assert flv.stat().st_size < 200_000
    out = tmp_path / "out"
    proc, peak = prepare_measured([*CREMAD_ARGS[1:], str(root), "--out", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reason = skipped_reasons(out)[f"VideoFlash/{bomb}.flv"]
    assert "6,000 kept frames of 256x256" in reason and "raise --max-decoded-mb" in reason
    assert samples(out) == 3
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB"


def test_budget_is_not_recorded_and_shapes_no_accepted_bytes(cremad_raw, tmp_path):
    root, bomb, flv = cremad_raw
    flv_skip_frames(flv, 400)  # 400 kept frames of 64x64: about 5 MB, within both budgets
    runner = CliRunner()
    manifests = []
    for mb in (16, 4096):
        out = tmp_path / f"out{mb}"
        res = runner.invoke(app, [*CREMAD_ARGS, str(root), "--out", str(out), "--short-side", "64",
                                  "--max-decoded-mb", str(mb)])
        assert res.exit_code == 0, res.output
        manifests.append(json.loads((out / "manifest.json").read_text()))
    assert "max_decoded_mb" not in manifests[0]["options"]
    assert manifests[0] == manifests[1]  # same shards, same bytes, same record


def test_max_decoded_mb_flag_skips_then_admits(cremad_raw, tmp_path):
    root, bomb, flv = cremad_raw
    flv_skip_frames(flv, 3000)  # 3000 kept frames of 64x64x3: 35 MB
    runner = CliRunner()
    base = [*CREMAD_ARGS, str(root), "--short-side", "64"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--max-decoded-mb", "16"])
    assert res.exit_code == 0, res.output
    assert "more than --max-decoded-mb 16" in skipped_reasons(tmp_path / "a")[f"VideoFlash/{bomb}.flv"]
    assert samples(tmp_path / "a") == 3
    # the budget is no part of the plan: a rerun resumes (the skip stands) unless told to redo the shards
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--max-decoded-mb", "64"])
    assert res.exit_code == 0, res.output
    assert samples(tmp_path / "a") == 3
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--max-decoded-mb", "64", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert samples(tmp_path / "a") == 4 and not skipped_reasons(tmp_path / "a")


# --- the readers' rules, directly ------------------------------------------------------------------------

def test_audio_budget_is_decided_from_the_header(tmp_path):
    wav = wav_header_file(tmp_path / "a.wav", 8000, 80_000)  # 10 s at 8 kHz: fine
    spec, facts = audio_features(wav)
    assert facts["source_sample_rate"] == 8000 and spec.shape == (257, 1 + 220_500 // 353)
    with pytest.raises(OverBudget, match=r"80,000 samples x 1 channels at 8,000 Hz would decode to \d+ MB, "
                                         r"more than --max-decoded-mb 8"):
        audio_features(wav, max_bytes=mb_bytes(8))
    # a header whose data chunk claims 4 GB (a streaming writer's value) is read for what the file holds
    big = wav_header_file(tmp_path / "b.wav", 16000, 16000, declared=0xFFFFFFFF)
    wave, sr = load_audio(big)
    assert wave.shape == (16000,) and sr == 16000
    with pytest.raises(OverBudget, match="sample rate 1 Hz"):
        load_audio(wav_header_file(tmp_path / "c.wav", 1, 100))


def test_image_budget_counts_the_resized_output(tmp_path):
    strip = blank_png(tmp_path / "strip.png", 40_000, 1)  # 1 pixel high: enlarged to 256 high, 10 million wide
    with pytest.raises(OverBudget, match=r"40000x1 L image \(resized to 10240000x256\)"):
        load_image(strip, 256)
    ok = blank_png(tmp_path / "ok.png", 320, 200)
    assert load_image(ok, 64).shape == (64, 102, 3)


def test_an_image_file_that_is_postscript_never_reaches_ghostscript(tmp_path, monkeypatch):
    """PIL opens a file by its bytes: an EPS named x.jpg in a raw folder was identified as EPS, and
    decoding it ran Ghostscript on the stranger's PostScript (where gs is installed). Only the formats a
    web image comes in are opened now; a PNG named .jpg still reads."""
    from PIL import EpsImagePlugin, Image

    def no_gs(*args, **kwargs):
        raise AssertionError("Ghostscript was run on a raw file")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_gs)
    eps = tmp_path / "x.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n")
    with pytest.raises(AvdataError, match=r"x.jpg: not a readable image \(cannot identify image file"):
        load_image(eps, 64)
    png = tmp_path / "y.jpg"
    Image.new("RGB", (20, 10), (200, 10, 10)).save(png, format="PNG")
    assert load_image(png, 10).shape == (10, 20, 3)

def test_full_decode_fallback_counts_the_frames_it_holds(tmp_path):
    flv = flv_skip_frames(tmp_path / "v.flv", 50, size=160)
    frames, times, _ = read_frames(flv, short_side=None)
    assert frames.shape == (50, 160, 160, 3)
    with pytest.raises(OverBudget, match=r"every frame \(\d+ decoded so far"):
        _slow_path(flv, "per_second", None, None, 1.0, max_bytes=400_000)  # about 10 YUV frames


def test_ave_audio_track_is_counted_as_it_decodes(tmp_path):
    mp4 = tmp_path / "clip.mp4"
    write_mp4(mp4, 3, duration=2.0, width=32, height=32)
    spec, facts = audio_track_features(mp4)
    assert facts["source_sample_rate"] == 44100 and spec.shape[0] == 257
    with pytest.raises(OverBudget, match=r"an audio track of [\d,]+\+ samples at 44,100 Hz would decode to"):
        audio_track_features(mp4, max_bytes=2 * 2**20)  # 2 s resample to 44,100 samples: about 3 MB


def test_option_is_in_help_and_left_out_of_the_record():
    res = CliRunner().invoke(app, ["prepare", "urbansound8k-av", "--help"], terminal_width=200)
    assert "--max-decoded-mb" in res.output and str(DEFAULT_MAX_DECODED_MB) in res.output
    for options in (CremadOptions(), UrbanSoundOptions()):
        assert options.max_decoded_mb == DEFAULT_MAX_DECODED_MB
        assert "max_decoded_mb" not in options_dict(options)
        assert options_dict(dataclasses.replace(options, max_decoded_mb=4096)) == options_dict(options)


def test_demuxed_packets_are_counted(tmp_path):
    mp4 = tmp_path / "clip.mp4"
    write_mp4(mp4, 1, duration=2.0, width=32, height=32)
    assert read_frames(mp4, short_side=None)[0].shape[1:] == (32, 32, 3)
    with pytest.raises(OverBudget, match=r"demuxed packets would decode to"):
        read_frames(mp4, short_side=None, max_bytes=8 * PACKET_BYTES)
