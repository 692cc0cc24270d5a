"""What `--jpeg-quality` and `--spec-dtype float16` cost in fidelity and save in bytes (issue #16).

Frames: every frame prepare keeps (the first of each second, short side 256) of the six real CREMA-D
VideoFlash files of ../shared/datasets/cremad/sample/ and of --clips generated clips (480x360 FLV1),
encoded with the shards' JPEG codec (`avdata.shards.jpeg`) at several qualities: bytes a frame, share of
the npy bytes, mean and 99th-percentile absolute error (grey levels), encode and decode ms a frame.
Spectrograms: the reference spectrogram of the sample's WAVs and the generated WAVs, stored as float16,
against float32 after the trainer's 128x128 resize (`scmrl.data.spec_resize`).

    python benchmarks/compact_shards.py --clips 12
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from avdata.datasets.cremad.synth import make_cremad_raw
from avdata.media.audio import audio_features
from avdata.media.video import read_frames
from avdata.shards.jpeg import decode_jpeg, encode_jpeg, encoder
from scmrl.data.spec_resize import resize_spectrogram

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cremad" / "sample"
QUALITIES = (75, 85, 90, 95, 98)


def quality_table(name: str, frames: np.ndarray) -> None:
    print(f"\n{name}: {len(frames)} frames of {frames.shape[1]}x{frames.shape[2]}\n")
    print("| quality | KB a frame | % of npy bytes | mean abs error | p99 abs error | encode ms | decode ms |")
    print("|---|---|---|---|---|---|---|")
    for q in QUALITIES:
        t0 = time.perf_counter()
        enc = [encode_jpeg(f, q) for f in frames]
        t1 = time.perf_counter()
        dec = np.stack([decode_jpeg(e) for e in enc])
        t2 = time.perf_counter()
        err = np.abs(dec.astype(np.int16) - frames)
        size = sum(map(len, enc))
        print(f"| {q} | {size / len(frames) / 1e3:.1f} | {100 * size / frames.nbytes:.1f} | {err.mean():.2f} | "
              f"{np.percentile(err, 99):.0f} | {1e3 * (t1 - t0) / len(frames):.2f} | "
              f"{1e3 * (t2 - t1) / len(frames):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=12, help="Generated clips (besides the real sample).")
    args = ap.parse_args()
    print(f"encoder: {encoder()}")
    with tempfile.TemporaryDirectory() as tmp:
        made = make_cremad_raw(Path(tmp), n_clips=args.clips, seed=1)
        gen = sorted(Path(tmp).glob("VideoFlash/*.flv"))
        sets = {"generated (FLV1)": gen}
        if (SAMPLE / "VideoFlash").is_dir():
            sets = {"real CREMA-D sample (VP6)": sorted((SAMPLE / "VideoFlash").glob("*.flv")), **sets}
        for name, files in sets.items():
            quality_table(name, np.concatenate([read_frames(f)[0] for f in files]))
        wavs = sorted((SAMPLE / "AudioWAV-derived").glob("*.wav")) + [Path(tmp) / "AudioWAV" / f"{c}.wav"
                                                                         for c in made["good"]]
        mean_err, max_err = [], []
        for w in wavs:
            spec, _ = audio_features(w, preset="reference")
            diff = np.abs(resize_spectrogram(spec.astype(np.float16), 128) - resize_spectrogram(spec, 128))
            mean_err.append(float(diff.mean()))
            max_err.append(float(diff.max()))
        print(f"\nfloat16 spectrogram, {len(wavs)} WAVs, after the 128x128 resize: mean abs error "
              f"{statistics.mean(mean_err):.5f}, max {max(max_err):.4f} (values span about -16 to 4)")


if __name__ == "__main__":
    main()
