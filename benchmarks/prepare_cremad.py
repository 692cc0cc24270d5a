"""Benchmark `avdata prepare cremad` against decode-only and a naive reference-style pipeline.

All three run on the same generated CREMA-D-format clips (480x360, 30 fps FLV, 1.5-4 s, 16 kHz WAV)
with the same number of processes, in the same run:
  (a) decode-only: decode every video frame and read every WAV, nothing else;
  (b) naive: what the reference does: decode every frame to RGB, write the first frame of each second
      as a JPEG file, then load each WAV resampled to 22,050 Hz and write its log spectrogram;
  (c) avdata prepare cremad --jobs N (shards, manifest, card included).
Targets (2 cores): (c) >= 60 clips/s with 2 jobs, (c) <= 1.5x (a), (c) >= 3x faster than (b).
The FLVs get FFmpeg's default key frames (every 12 frames and at scene cuts) unless --gop N is given
(--gop 100000: one key frame per clip). prepare decodes from the last key frame before each frame it
keeps, so it gains from key frames; decode-only does not. Run both settings: real CREMA-D's spacing is
not recorded in its metadata.
(a) and (c) run --repeat times, alternating, and the medians are compared (single runs of 0.5 s vary by
about 10% on a shared 2-core machine); (b), ten times slower, runs once.

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


def decode_only(args: tuple[str, str]) -> int:
    from avdata.video import decode_all_frames_count

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


def timed_pool(fn, tasks, jobs: int) -> float:
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(jobs) as pool:
        list(pool.imap(fn, tasks, chunksize=2))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="Where to generate data (default: a temp dir).")
    ap.add_argument("--gop", type=int, default=None, help="Key frame every N frames (default: FFmpeg's).")
    ap.add_argument("--repeat", type=int, default=5, help="Runs of decode-only and of prepare (medians reported).")
    args = ap.parse_args()
    os.environ.setdefault("AVDATA_NO_PROGRESS", "1")

    from avdata.prepare import PrepareSettings, prepare
    from avdata.recipe import get_recipe
    from avdata.recipes.cremad import CremadOptions
    from avdata.synth.cremad import make_cremad_raw

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    raw = work / "raw"
    t0 = time.perf_counter()
    made = make_cremad_raw(raw, n_clips=args.clips, seed=1, width=480, height=360, fps=30, duration_range=(1.5, 4.0), gop=args.gop)
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
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    gop = f"key frame every {args.gop} frames" if args.gop else "FFmpeg's default key frames"
    print(f"clips: {n} (480x360, 30 fps FLV, 1.5-4 s, {gop}), generated in {gen_s:.1f} s; jobs: {args.jobs}; "
          f"medians of {len(prep_runs)} runs")
    print(f"decode-only runs: {' '.join(f'{x:.2f}' for x in decode_runs)}; "
          f"prepare runs: {' '.join(f'{x:.2f}' for x in prep_runs)}")
    print()
    print("| pipeline | seconds | clips/s | ratio to prepare |")
    print("|---|---|---|---|")
    print(f"| decode only (every frame + WAV) | {decode_s:.2f} | {n / decode_s:.1f} | {decode_s / prep_s:.2f} |")
    print(f"| naive reference-style (JPEG per second + spectrogram) | {naive_s:.2f} | {n / naive_s:.1f} | {naive_s / prep_s:.2f} |")
    print(f"| avdata prepare cremad --jobs {args.jobs} | {prep_s:.2f} | {rate:.1f} | 1.00 |")
    print()
    print(f"prepare / decode-only = {prep_s / decode_s:.2f}x (target <= 1.5x); "
          f"naive / prepare = {naive_s / prep_s:.2f}x (target >= 3x); {rate:.1f} clips/s (target >= 60)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
