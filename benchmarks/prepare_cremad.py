"""Benchmark `avdata prepare cremad` against decoding alone, on real CREMA-D video or on generated clips.

--real N (real data, what the speed figures quote first): N clips made by copying the six genuine
CREMA-D VideoFlash files of ../shared/datasets/cremad/sample/ (On2 VP6, 480x360, 29.97 fps, one key frame per
clip, 56-70 frames) with their derived 16 kHz WAVs under N real clip names of the same emotion, in a temp
folder. Timed in the same run, alternating, --repeat times each (medians; on a shared machine single runs
vary by 10-30%):
  (a) decode every frame, one process, no RGB conversion (the decoder's own cost);
  (b) decode every frame and convert each to RGB, one process (what a frame-dump pipeline pays);
  (c) decode only the frames prepare needs (every packet up to the last kept frame: one key frame per
      clip), no conversion, one process and --jobs processes: the limit for prepare; and the same with
      --jobs processes reading the FLV with avdata's own FLV reader (no FFmpeg probe), as prepare does;
  (d) avdata prepare cremad --jobs 1 and --jobs N (shards, manifest, card included; default options, so
      JPEG frames), and --jobs N --frame-format npy (no JPEG encoding).
Targets: (d) with --jobs 2 within 1.1x of (c) on 2 processes (printed against both forms of (c)); (d) with
--jobs 2 at or below 0.56x of (a) (issue #16, JPEG encoding included). Also printed:
shard bytes / raw FLV + WAV bytes (issue #16: <= 1.0).
--real N --decoder-options instead times FFmpeg's decoder settings (frame/slice threads, skip_frame) on
the same clips against the default and checks that each leaves every frame bit-identical.

Without --real (generated data, labelled as such): --clips generated clips (Sorenson FLV1: FFmpeg has no
VP6 encoder; 480x360, 29.97 fps, one key frame per clip unless --gop N) against:
  (a) decode-only: decode every video frame and read every WAV, with --jobs processes;
  (b) naive: what the reference does: decode every frame to RGB, write the first frame of each second
      as a JPEG file, then load each WAV resampled to 22,050 Hz and write its log spectrogram (runs once);
  (c) avdata prepare cremad --jobs N.

    python benchmarks/prepare_cremad.py --real 240 --jobs 2
    python benchmarks/prepare_cremad.py --clips 120 --jobs 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import librosa
import numpy as np
import soundfile as sf


def decode_all_frames(video: str) -> int:
    from avdata.media.video import decode_all_frames_count

    return decode_all_frames_count(video)


def decode_only(args: tuple[str, str]) -> int:
    from avdata.media.video import decode_all_frames_count

    video, audio = args
    n = decode_all_frames_count(video)
    sf.read(audio, dtype="float32")
    return n


def naive(args: tuple[str, str, str]) -> int:
    video, audio, out = args
    out_dir = Path(out) / Path(video).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = 0
    with av.open(video) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for i, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")  # the reference converts every frame
            if i % int(round(fps)) == 0:
                cv2.imwrite(str(out_dir / f"{kept:03d}.jpg"), rgb[:, :, ::-1])
                kept += 1
    y, _ = librosa.load(audio, sr=22050)
    spec = np.log(np.abs(librosa.stft(np.clip(y, -1, 1), n_fft=512, hop_length=353, pad_mode="constant")) + 1e-7)
    np.save(out_dir / "spec.npy", spec.astype(np.float32))
    return kept


SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cremad" / "sample"


def decode_all_rgb(video: str) -> int:
    """Decode every frame and convert each to RGB (PyAV's own conversion)."""
    with av.open(video) as container:
        return sum(1 for f in container.decode(container.streams.video[0]) if f.to_ndarray(format="rgb24").size)


def decode_needed(video: str) -> int:
    """Decode only what prepare needs for the first frame of each second: every packet up to the last kept
    frame (the real clips have one key frame, so nothing before it can be skipped), nothing converted."""
    from avdata.media.video import select_per_second

    with av.open(video) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        tb = float(stream.time_base)
        times = [(p.pts - packets[0].pts) * tb for p in packets]
        last = select_per_second(times)[-1]
        n = 0
        for packet in packets[:last + 1]:
            n += len(stream.decode(packet))
        return n + len(stream.decode(None))


def decode_needed_flv(video: str) -> int:
    """`decode_needed`, the packets read by avdata's FLV reader and handed to the same decoder, as
    prepare reads CREMA-D (no FFmpeg probe)."""
    from avdata.media.flv import read_flv_video
    from avdata.media.video import flv_decoder, select_per_second

    ctx, packets = flv_decoder(read_flv_video(video))
    last = select_per_second([(p.pts - packets[0].pts) / 1000 for p in packets])[-1]
    n = 0
    for packet in packets[:last + 1]:
        n += len(ctx.decode(packet))
    return n + len(ctx.decode(None))


#: FFmpeg decoder settings tried on VP6 (--decoder-options): (thread_type, thread_count, skip_frame).
DECODER_OPTIONS = {"FRAME threads x2": ("FRAME", 2, None), "SLICE threads x2": ("SLICE", 2, None),
                   "AUTO threads x2": ("AUTO", 2, None), "skip_frame NONREF": (None, 1, "NONREF"),
                   "skip_frame NONKEY": (None, 1, "NONKEY")}


def decode_with(video: str, options: tuple | None = None, digest: bool = False):
    """Decode every frame with the given decoder settings: the frame count, or (digest=True) the sha256 of
    every frame's RGB bytes, to check that a setting leaves the frames unchanged."""
    import hashlib

    thread_type, count, skip = options or (None, 1, None)
    h = hashlib.sha256()
    n = 0
    with av.open(video) as container:
        stream = container.streams.video[0]
        if thread_type:
            stream.thread_type = thread_type
        stream.codec_context.thread_count = count
        if skip:
            stream.codec_context.skip_frame = skip
        for frame in container.decode(stream):
            n += 1
            if digest:
                h.update(frame.to_ndarray(format="rgb24").tobytes())
    return h.hexdigest() if digest else n


def run_decoder_options(n: int, repeat: int, work: Path) -> None:
    """Time FFmpeg's decoder settings on real VP6 clips, alternating with the default (1 thread), and check
    whether each leaves every frame bit-identical."""
    clips = make_real_raw(work / "raw", n)
    videos = [str(work / "raw" / "VideoFlash" / f"{c}.flv") for c in clips]
    sample = sorted(str(p) for p in (SAMPLE / "VideoFlash").glob("*.flv"))
    base = [decode_with(v, None, digest=True) for v in sample]
    variants = {"default (1 thread)": None, **DECODER_OPTIONS}
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(max(1, repeat)):
        for name, opts in variants.items():
            runs[name].append(timed_serial(lambda v: decode_with(v, opts), videos))
    print(f"machine: {machine()}")
    print(f"decode every frame of {n} real VP6 clips, 1 process; medians of {repeat} alternating runs")
    print()
    print("| decoder setting | ms a clip | ratio to default | frames identical to default |")
    print("|---|---|---|---|")
    ref = statistics.median(runs["default (1 thread)"])
    for name, opts in variants.items():
        t = statistics.median(runs[name])
        same = all(decode_with(v, opts, digest=True) == b for v, b in zip(sample, base))
        print(f"| {name} | {1000 * t / n:.1f} | {t / ref:.2f} | {'yes' if same else 'NO'} |")


def make_real_raw(raw: Path, n: int) -> list[str]:
    """n clips under real clip names (a mix of both published splits), each a copy of the sample's clip of
    the same emotion: VideoFlash/<clip>.flv (genuine VP6) and AudioWAV/<clip>.wav (derived stand-in)."""
    from avdata.datasets.cremad.synth import pick_clips

    if not (SAMPLE / "VideoFlash").is_dir():
        raise SystemExit(f"real CREMA-D sample not found at {SAMPLE}")
    clips = pick_clips(n, seed=1)
    for d in ("VideoFlash", "AudioWAV"):
        (raw / d).mkdir(parents=True, exist_ok=True)
    for clip in clips:
        emotion = clip.split("_")[2]
        shutil.copyfile(SAMPLE / "VideoFlash" / f"1001_DFA_{emotion}_XX.flv", raw / "VideoFlash" / f"{clip}.flv")
        shutil.copyfile(SAMPLE / "AudioWAV-derived" / f"1001_DFA_{emotion}_XX.wav", raw / "AudioWAV" / f"{clip}.wav")
    return clips


def timed_serial(fn, tasks) -> float:
    t0 = time.perf_counter()
    for task in tasks:
        fn(task)
    return time.perf_counter() - t0


def timed_pool(fn, tasks, jobs: int) -> float:
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(jobs) as pool:
        list(pool.imap(fn, tasks, chunksize=2))
    return time.perf_counter() - t0


def timed_prepare(raw: Path, shards: Path, jobs: int, **options) -> float:
    from avdata.prepare.engine import PrepareSettings, prepare
    from avdata.datasets.registry import get_recipe
    from avdata.datasets.cremad.recipe import CremadOptions

    t0 = time.perf_counter()
    prepare(get_recipe("cremad"), raw, shards, CremadOptions(**options),
            PrepareSettings(jobs=jobs, overwrite=True, progress=False))
    return time.perf_counter() - t0


def prepare_real_shards(clips: int, work: Path) -> Path:
    """Shards of `clips` copies of the real CREMA-D clips (default options, --jobs 2) in `work`/shards; the
    raw copies are removed again."""
    raw, shards = work / "raw", work / "shards"
    make_real_raw(raw, clips)
    print(f"prepared {clips} clips in {timed_prepare(raw, shards, 2):.1f} s (default options, --jobs 2)")
    shutil.rmtree(raw)
    return shards


def size_ratio(raw: Path, shards: Path) -> str:
    """Shard bytes (tar files) / raw bytes (FLV + WAV) of a prepared folder."""
    raw_b = sum(p.stat().st_size for d in ("VideoFlash", "AudioWAV") for p in (raw / d).iterdir())
    tar_b = sum(p.stat().st_size for p in shards.glob("*.tar"))
    return f"{tar_b / raw_b:.2f} ({tar_b / 1e6:.1f} MB of shards / {raw_b / 1e6:.1f} MB of FLV + WAV)"


def machine() -> str:
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"PyAV {av.__version__} (FFmpeg {ffmpeg}), load average {os.getloadavg()[0]:.1f}")


def run_real(n: int, jobs: int, repeat: int, work: Path) -> None:
    raw, shards = work / "raw", work / "shards"
    clips = make_real_raw(raw, n)
    videos = [str(raw / "VideoFlash" / f"{c}.flv") for c in clips]
    frames = sum(decode_all_frames(v) for v in videos)
    variants = {
        "decode every frame, 1 process": lambda: timed_serial(decode_all_frames, videos),
        "decode every frame + RGB each, 1 process": lambda: timed_serial(decode_all_rgb, videos),
        "decode needed frames, 1 process": lambda: timed_serial(decode_needed, videos),
        f"decode needed frames, {jobs} processes": lambda: timed_pool(decode_needed, videos, jobs),
        f"decode needed frames, FLV read directly, {jobs} processes": lambda: timed_pool(
            decode_needed_flv, videos, jobs),
        "avdata prepare cremad --jobs 1": lambda: timed_prepare(raw, shards, 1),
        f"avdata prepare cremad --jobs {jobs}": lambda: timed_prepare(raw, shards, jobs),
        f"avdata prepare cremad --jobs {jobs} --frame-format npy": lambda: timed_prepare(
            raw, work / "shards_npy", jobs, frame_format="npy"),
    }
    runs: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(max(1, repeat)):  # alternate the variants so load changes hit all of them alike
        for name, fn in variants.items():
            c0 = cpu_seconds()
            runs[name].append(fn())
            cpu[name].append(cpu_seconds() - c0)
    med = {k: statistics.median(v) for k, v in runs.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"machine: {machine()}")
    print(f"real CREMA-D video: {n} clips copied from the 6 genuine VP6 FLVs of the sample ({frames} frames, "
          f"{frames / n:.1f} a clip) + derived 16 kHz WAVs; medians of {repeat} alternating runs")
    print()
    print("| pipeline | seconds | ms a clip | clips/s | CPU ms a clip (all processes) | runs (s) |")
    print("|---|---|---|---|---|---|")
    for name, t in med.items():
        print(f"| {name} | {t:.2f} | {1000 * t / n:.1f} | {n / t:.1f} | {1000 * mcpu[name] / n:.1f} | "
              f"{' '.join(f'{x:.2f}' for x in runs[name])} |")
    print()
    limit1, limitn = med["decode needed frames, 1 process"], med[f"decode needed frames, {jobs} processes"]
    p1, pn = med["avdata prepare cremad --jobs 1"], med[f"avdata prepare cremad --jobs {jobs}"]
    full = med["decode every frame, 1 process"]
    print(f"wall: prepare --jobs 1 / needed-frames decode (1 process) = {p1 / limit1:.2f}x; "
          f"prepare --jobs {jobs} / needed-frames decode ({jobs} processes) = {pn / limitn:.2f}x (target <= 1.1x); "
          "against that decode with the FLV read directly "
          f"{pn / med[f'decode needed frames, FLV read directly, {jobs} processes']:.2f}x")
    print(f"wall: prepare --jobs 1 / decode every frame (1 process) = {p1 / full:.2f}x; "
          f"prepare --jobs {jobs} / decode every frame (1 process) = {pn / full:.2f}x (issue #16: <= 0.56x, "
          f"JPEG encoding included; with --frame-format npy "
          f"{med[f'avdata prepare cremad --jobs {jobs} --frame-format npy'] / full:.2f}x)")
    print(f"shard bytes / raw bytes, default options (JPEG q95 frames, float32 spectrogram): "
          f"{size_ratio(raw, shards)}; --frame-format npy: {size_ratio(raw, work / 'shards_npy')}")
    c_lim = mcpu["decode needed frames, 1 process"]
    print(f"CPU time (robust to other load): prepare --jobs 1 / needed-frames decode = "
          f"{mcpu['avdata prepare cremad --jobs 1'] / c_lim:.2f}x; prepare --jobs {jobs} / needed-frames decode = "
          f"{mcpu[f'avdata prepare cremad --jobs {jobs}'] / c_lim:.2f}x; decode every frame / needed = "
          f"{mcpu['decode every frame, 1 process'] / c_lim:.2f}x; + RGB of every frame / needed = "
          f"{mcpu['decode every frame + RGB each, 1 process'] / c_lim:.2f}x")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (pool workers are joined)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=int, default=None, metavar="N",
                    help="N clips copied from the real CREMA-D sample (VP6) instead of generated ones.")
    ap.add_argument("--decoder-options", action="store_true", help="With --real: time FFmpeg's decoder settings "
                    "(threads, skip_frame) on the real clips instead, and check the frames stay identical.")
    ap.add_argument("--clips", type=int, default=120, help="Generated clips (without --real).")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="Where to put the data (default: a temp dir).")
    ap.add_argument("--gop", type=int, default=None, help="Generated clips: a key frame every N frames "
                    "(default: one per clip, as the real ones).")
    ap.add_argument("--repeat", type=int, default=5, help="Runs of each timed variant (medians reported).")
    args = ap.parse_args()
    os.environ.setdefault("AVDATA_NO_PROGRESS", "1")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        if args.real and args.decoder_options:
            run_decoder_options(args.real, args.repeat, work)
        elif args.real:
            run_real(args.real, args.jobs, args.repeat, work)
        else:
            run_generated(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run_generated(args, work: Path) -> None:
    from avdata.prepare.engine import PrepareSettings, prepare
    from avdata.datasets.registry import get_recipe
    from avdata.datasets.cremad.recipe import CremadOptions
    from avdata.datasets.cremad.synth import make_cremad_raw

    raw = work / "raw"
    t0 = time.perf_counter()
    made = make_cremad_raw(raw, n_clips=args.clips, seed=1, duration_range=(1.5, 4.0), gop=args.gop)
    gen_s = time.perf_counter() - t0
    clips = sorted(made["good"])
    pairs = [(str(raw / "VideoFlash" / f"{c}.flv"), str(raw / "AudioWAV" / f"{c}.wav")) for c in clips]
    n = len(pairs)

    naive_out = work / "naive"
    naive_s = timed_pool(naive, [(v, a, str(naive_out)) for v, a in pairs], args.jobs)
    shutil.rmtree(naive_out, ignore_errors=True)
    shards = work / "shards"
    decode_runs, prep_runs = [], []
    for _ in range(max(1, args.repeat)):
        decode_runs.append(timed_pool(decode_only, pairs, args.jobs))
        t0 = time.perf_counter()
        prepare(get_recipe("cremad"), raw, shards, CremadOptions(),
                PrepareSettings(jobs=args.jobs, overwrite=True, progress=False))
        prep_runs.append(time.perf_counter() - t0)
    decode_s, prep_s = statistics.median(decode_runs), statistics.median(prep_runs)

    rate = n / prep_s
    print(f"machine: {machine()}")
    gop = f"key frame every {args.gop} frames" if args.gop else "one key frame per clip"
    print(f"GENERATED clips: {n} (Sorenson FLV1, 480x360, 29.97 fps, 1.5-4 s, {gop}), generated in {gen_s:.1f} s; "
          f"jobs: {args.jobs}; medians of {len(prep_runs)} runs")
    print(f"shard bytes / raw bytes with default options (JPEG q95 frames, float32 spectrogram): "
          f"{size_ratio(raw, shards)}")
    print(f"decode-only runs: {' '.join(f'{x:.2f}' for x in decode_runs)}; "
          f"prepare runs: {' '.join(f'{x:.2f}' for x in prep_runs)}")
    print()
    print("| pipeline (generated FLV1 clips) | seconds | clips/s | ratio to prepare |")
    print("|---|---|---|---|")
    print(f"| decode only (every frame + WAV) | {decode_s:.2f} | {n / decode_s:.1f} | {decode_s / prep_s:.2f} |")
    print(f"| naive reference-style (JPEG per second + spectrogram) | {naive_s:.2f} | {n / naive_s:.1f} | "
          f"{naive_s / prep_s:.2f} |")
    print(f"| avdata prepare cremad --jobs {args.jobs} | {prep_s:.2f} | {rate:.1f} | 1.00 |")
    print()
    print(f"prepare / decode-only = {prep_s / decode_s:.2f}x; naive / prepare = {naive_s / prep_s:.2f}x; "
          f"{rate:.1f} clips/s")


if __name__ == "__main__":
    main()
