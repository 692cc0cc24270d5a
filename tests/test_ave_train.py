"""`scmrl-train` on prepared AVE shards with the trainer unchanged: the 28 classes come from the manifest,
the model gets a 28-way output, one epoch runs and evaluates on AVE's val and test splits. (Whether a tiny
model learns the generated clips' class signal is not asserted: on 2 shared cores even a few epochs of a
tiny model cost more than the suite's budget for one test.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avdata.datasets.ave.annotations import CATEGORIES
from avdata.datasets.ave.recipe import AveOptions, AveRecipe
from avdata.datasets.ave.synth import make_ave_raw
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from scmrl.cli.train_app import train_app

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

LABELS = [0, 9, 18, 27]
PER_CLASS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("ave_train_raw")
    make_ave_raw(raw, labels=LABELS, per_class=PER_CLASS, duration=1.0, width=64, height=48, seed=7,
                 split_cycle=("train", "train", "val", "test"))
    out = tmp_path_factory.mktemp("ave_train_shards")
    prepare(AveRecipe(), raw, out, AveOptions(short_side=48), PrepareSettings(samples_per_shard=16, progress=False))
    return out


def test_scmrl_train_reads_28_classes_from_ave_shards(shards, tmp_path):
    m = load_manifest(shards)
    assert len(m["classes"]) == 28 and m["classes"] == CATEGORIES
    assert {s: e["num_samples"] for s, e in m["splits"].items()} == {"train": 8, "val": 4, "test": 4}
    out = tmp_path / "run"
    res = CliRunner().invoke(train_app, [
        "--shards", str(shards), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--lr", "5e-3",
        "--warmup-epochs", "1", "--embed-dim", "32", "--heads", "4", "--time-steps", "2", "--image-size", "32",
        "--shuffle-buffer", "32", "--workers", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "ave" and results["model_config"]["num_classes"] == 28
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["classes"] == CATEGORIES and ckpt["dataset"] == "ave"
    state = ckpt["model"] if "model" in ckpt else ckpt["state_dict"]
    assert any(v.ndim == 2 and v.shape[0] == 28 for v in state.values()), "no 28-way output layer"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["train_samples"], r["val_samples"], r["test_samples"]) for r in rows] == [(8, 4, 4)]
    assert 0.0 <= rows[0]["test_acc"] <= 1.0 and rows[0]["train_loss"] > 0
