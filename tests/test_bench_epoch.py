"""benchmarks/epoch_vs_reference.py in CI size: our side over a few copies of the real CREMA-D clips. The
authors' side runs only where SCMRL_REFERENCE names their checkout and SCMRL_REFERENCE_PYTHON an
environment with torchvision, torchaudio, h5py and tonic (CI has neither)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "datasets" / "cremad" / "sample"
SCRIPT = ROOT / "benchmarks" / "epoch_vs_reference.py"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (SAMPLE / "VideoFlash").is_dir(),
    reason=f"real CREMA-D sample not found at {SAMPLE} (CI has it beside the repository)")]

CLIPS, BATCH = 48, 8
TRAIN_CLIPS = 24  # of the 48 clip names the copier picks (seeded), 24 are in CREMA-D's train split


def _run(tmp_path: Path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCMRL_REFERENCE")}
    out = tmp_path / "summary.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--clips", str(CLIPS), "--batch", str(BATCH), "--rounds", "1",
                          "--workers", "0", "--jobs", "1", "--json", str(out), *extra],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


def _rows(summary: dict, side: str) -> dict[str, dict]:
    return {r["epoch"]: r for r in summary["rows"] if r["side"] == side}


def test_ours_side_counts_every_training_clip(tmp_path):
    s = _run(tmp_path)
    ours = _rows(s, "ours")
    assert list(ours) == ["first", "later", "loader only"]
    assert s["train_clips"] == {"ours": TRAIN_CLIPS}
    for row in ours.values():
        assert row["samples"] == TRAIN_CLIPS  # a multiple of the batch: drop-last drops nothing
        assert row["samples_per_s"] > 0 and row["cpu_s_per_sample"] > 0 and row["gpu_busy"] is None
    # scmrl-train's batched augmentation ran: [T, B, C, 128, 128], time first
    assert s["shapes"]["ours"] == {"audio": [4, BATCH, 1, 128, 128], "visual": [4, BATCH, 3, 128, 128]}
    assert s["prepare_s"]["avdata prepare cremad --jobs 1"] > 0
    assert s["ratios"] == {} and s["clips"] == CLIPS and s["batch"] == BATCH


@pytest.mark.skipif(not (os.environ.get("SCMRL_REFERENCE") and os.environ.get("SCMRL_REFERENCE_PYTHON")),
                    reason="no checkout of the authors' code (SCMRL_REFERENCE) and environment for it "
                           "(SCMRL_REFERENCE_PYTHON)")
def test_theirs_side_reads_the_same_clips(tmp_path):
    s = _run(tmp_path, "--reference", os.environ["SCMRL_REFERENCE"], "--ref-python",
             os.environ["SCMRL_REFERENCE_PYTHON"])
    theirs = _rows(s, "theirs")
    assert list(theirs) == ["cold", "warm"]
    assert s["train_clips"]["theirs"] == TRAIN_CLIPS
    assert all(r["samples"] == TRAIN_CLIPS and r["samples_per_s"] > 0 for r in theirs.values())
    # their loop repeats over T on the host, batch first
    assert s["shapes"]["theirs"] == {"audio": [BATCH, 4, 1, 128, 128], "visual": [BATCH, 4, 3, 128, 128]}
    assert set(s["ratios"]["0"]) >= {"vs_cold", "vs_warm", "hours_100_epochs"}
