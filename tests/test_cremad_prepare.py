"""`avdata prepare cremad` end to end on generated FLV + WAV clips with real CREMA-D names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.datasets.registry import get_recipe
from avdata.datasets.cremad.recipe import EMOTIONS, CremadOptions, assign_splits, perceived
from avdata.datasets.cremad.sources import LISTS
from avdata.datasets.cremad.synth import make_cremad_raw
from avdata.cli.avdata_app import app

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

SMALL = dict(width=160, height=120, fps=30, duration_range=(1.2, 2.6))


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cremad_raw")
    made = make_cremad_raw(root, n_clips=14, seed=3, with_bad=True, **SMALL)
    return root, made


@pytest.fixture(scope="module")
def prepared(raw_tree, tmp_path_factory) -> Path:
    raw, _ = raw_tree
    out = tmp_path_factory.mktemp("cremad_shards")
    prepare(get_recipe("cremad"), raw, out, CremadOptions(short_side=64, val_fraction=0.25),
            PrepareSettings(samples_per_shard=5, jobs=1, progress=False))
    return out


def published_split() -> dict[str, str]:
    out = {}
    for name, split in (("train.csv", "train"), ("test.csv", "test")):
        with open(LISTS / name, newline="") as f:
            out.update({row[0]: split for row in csv.reader(f) if row})
    return out


def read_split(out: Path, manifest: dict, split: str) -> list[dict]:
    urls = [str(out / s["file"]) for s in manifest["splits"][split]["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))


def frames_of(sample: dict) -> np.ndarray:
    """The default layout: one frames.<i>.jpg member per frame slot, each decoded by webdataset; returns
    the clip's own frames (the json's num_frames; the slots after them repeat the last one)."""
    k = sum(1 for name in sample if name.startswith("frames.") and name.endswith(".jpg"))
    assert k and "frames.npy" not in sample
    frames, real = np.stack([sample[f"frames.{i}.jpg"] for i in range(k)]), sample["json"]["num_frames"]
    assert 1 <= real <= k and (frames[real:] == frames[real - 1]).all()
    return frames[:real]


def test_samples_fields_and_values(prepared, raw_tree):
    _, made = raw_tree
    m = load_manifest(prepared)
    total = sum(e["num_samples"] for e in m["splits"].values())
    assert total == len(made["good"])
    standard = published_split()
    seen = set()
    for split in m["splits"]:
        for s in read_split(prepared, m, split):
            key, meta = s["__key__"], s["json"]
            seen.add(key)
            assert meta["split"] == split
            # split membership follows the published CSVs (val is carved from train)
            assert standard[key] == ("train" if split == "val" else split)
            assert s["cls"] == EMOTIONS.index(key.split("_")[2]) == meta["label"]
            frames, spec = frames_of(s), s["spec.npy"]
            assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1:] == (64, 85, 3)
            # the first frame of each second: frames at t = 0, 1, ..., none missed and none past the end
            # (the container's duration may include the audio's tail, so it is not compared with ceil())
            dur, k = meta["video"]["duration_s"], frames.shape[0]
            assert meta["video"]["frame_times_s"] == [float(i) for i in range(k)]
            assert dur - 1 < k and k - 1 < dur
            # reference spectrogram: 257 bins, 1 + n // 353 frames at 22,050 Hz
            n = int(round(meta["audio"]["duration_s"] * 22050))
            assert spec.dtype == np.float32 and spec.shape[0] == 257
            assert abs(spec.shape[1] - (1 + n // 353)) <= 1
            assert np.isfinite(spec).all() and spec.min() >= np.log(1e-7) - 1e-3
            assert meta["actor"] == int(key.split("_")[0]) and "sex" in meta["demographics"]
            assert [x["file"] for x in meta["sources"]] == [f"AudioWAV/{key}.wav", f"VideoFlash/{key}.flv"]
            assert meta["perceived"] == perceived(key) and set(meta["perceived"]) == {"Voice", "Face", "MultiModal"}
    assert seen == set(made["good"])


def test_perceived_votes_from_the_summary_table():
    # a tie in the voice votes: both votes and both levels are kept, in the table's order
    assert perceived("1001_IEO_ANG_MD") == {"Voice": {"votes": ["A", "D"], "levels": [37.2, 58.6]},
                                            "Face": {"votes": ["A"], "levels": [45.5]},
                                            "MultiModal": {"votes": ["A"], "levels": [44.2]}}
    # a clip the table does not list: the same fields, empty (every sample's json has the same schema)
    assert perceived("9999_XXX_ANG_XX") == {m: {"votes": [], "levels": []} for m in ("Voice", "Face", "MultiModal")}


def test_bad_clips_are_recorded_with_reasons(prepared, raw_tree):
    _, made = raw_tree
    m = load_manifest(prepared)
    skipped = {s["key"]: s for s in m["skipped"]}
    assert set(skipped) == set(made["bad"])
    reasons = " | ".join(s["reason"].lower() for s in skipped.values())
    assert "lfs" in reasons and "missing modality" in reasons and "truncated" in reasons
    for s in skipped.values():
        assert s["path"].startswith(("VideoFlash/", "AudioWAV/"))
    card = (prepared / "README.md").read_text()
    for key in skipped:
        assert key in card


def test_counts_and_manifest_figures(prepared):
    m = load_manifest(prepared)
    assert m["dataset"] == "cremad" and m["classes"] == EMOTIONS
    for split, entry in m["splits"].items():
        samples = read_split(prepared, m, split)
        assert entry["num_samples"] == len(samples) == sum(entry["class_counts"].values())
        for c in EMOTIONS:
            assert entry["class_counts"][c] == sum(1 for s in samples if s["cls"] == EMOTIONS.index(c))
        for shard in entry["shards"]:
            assert shard["bytes"] == (prepared / shard["file"]).stat().st_size
    assert m["options"]["spectrogram"] == "reference" and m["options"]["short_side"] == 64
    assert m["features"]["spec.npy"]["shape"] == [257, "T"]


def test_same_bytes_whatever_jobs(raw_tree, prepared, tmp_path):
    raw, _ = raw_tree
    out = tmp_path / "jobs2"
    prepare(get_recipe("cremad"), raw, out, CremadOptions(short_side=64, val_fraction=0.25),
            PrepareSettings(samples_per_shard=5, jobs=2, progress=False))
    names = sorted(p.name for p in prepared.iterdir() if p.is_file())
    assert names == sorted(p.name for p in out.iterdir() if p.is_file())
    for name in names:
        assert (prepared / name).read_bytes() == (out / name).read_bytes(), name


def test_cli_prepare_and_strict(raw_tree, tmp_path):
    raw, made = raw_tree
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", "cremad", "--raw", str(raw), "--out", str(tmp_path / "a"),
                              "--short-side", "32", "--frames", "2", "--samples-per-shard", "100"])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "a")
    assert m["options"]["frames"] == 2
    s = read_split(tmp_path / "a", m, "train")[0]
    assert frames_of(s).shape[0] == 2
    res = runner.invoke(app, ["prepare", "cremad", "--raw", str(raw), "--out", str(tmp_path / "b"), "--strict"])
    assert res.exit_code == 2
    assert "--strict" in res.output
    assert not list((tmp_path / "b").glob("*.tar"))


def test_actor_split_is_speaker_independent():
    standard = published_split()
    splits = assign_splits(sorted(standard), CremadOptions(split="actor", val_fraction=0.1, test_fraction=0.1))
    actors = {s: {c.split("_")[0] for c, sp in splits.items() if sp == s} for s in ("train", "val", "test")}
    assert actors["train"].isdisjoint(actors["test"]) and actors["val"].isdisjoint(actors["test"])
    assert actors["train"].isdisjoint(actors["val"])
    assert len(actors["test"]) == 9 and len(actors["val"]) == 8
    # seeded: same seed same split, other seed another
    again = assign_splits(sorted(standard), CremadOptions(split="actor", seed=42))
    other = assign_splits(sorted(standard), CremadOptions(split="actor", seed=7))
    assert again == assign_splits(sorted(standard), CremadOptions(split="actor", seed=42)) and again != other


def test_standard_split_counts():
    standard = published_split()
    assert len(standard) == 7442
    splits = assign_splits(sorted(standard), CremadOptions(val_fraction=0.1))
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    assert counts["test"] == 744 and counts["train"] + counts["val"] == 6698
    assert abs(counts["val"] - 670) <= 3
    whole = assign_splits(sorted(standard), CremadOptions(val_fraction=0.0))
    assert sum(1 for v in whole.values() if v == "train") == 6698


def test_missing_raw_gives_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["prepare", "cremad", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "raw data not found" in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["prepare", "cremad", "--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "avdata download cremad" in res.output
    json.dumps({})


def test_demo_as_the_readme_runs_it(tmp_path, monkeypatch):
    """`avdata demo --out demo`, the README's first command: every step works and the shards verify."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["demo", "--out", "demo"])
    assert res.exit_code == 0, res.output
    assert "verify: all shards OK" in res.output and "6 clip(s) skipped" in res.output
    # the demo's own generated tree is a sample by design: no warning about a partial copy of CREMA-D
    assert "partial copy" not in " ".join(res.output.split())
    m = load_manifest(tmp_path / "demo" / "shards")
    assert sum(e["num_samples"] for e in m["splits"].values()) == 72 and len(m["skipped"]) == 6
    # the suggested scmrl-train run selects its epoch on val: it must not be empty
    assert m["splits"]["val"]["num_samples"] > 0
    from PIL import Image

    with Image.open(tmp_path / "demo" / "contact_sheet.png") as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_cli_prepare_interrupted_says_how_to_go_on(raw_tree, tmp_path, monkeypatch):
    import avdata.prepare.engine

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(avdata.prepare.engine, "prepare", interrupted)
    raw, _ = raw_tree
    res = CliRunner().invoke(app, ["prepare", "cremad", "--raw", str(raw), "--out", str(tmp_path / "o")])
    said = " ".join(res.output.split())  # the console wraps long lines
    assert res.exit_code == 130 and "finished shards" in said and "run the same command again" in said


def test_the_cards_command_remakes_the_folder(raw_tree, prepared, tmp_path):
    """The card says 'Made by avdata ... with:' and a command: run as printed (RAW and OUT filled in), it
    remakes the same folder byte for byte (every option that shapes the output is in it, spelled as the
    CLI takes it)."""
    import shlex

    raw, _ = raw_tree
    card = (prepared / "README.md").read_text(encoding="utf-8")
    (command,) = [line for line in card.splitlines() if line.startswith("avdata prepare cremad --raw RAW --out OUT")]
    args = [{"RAW": str(raw), "OUT": str(tmp_path / "again")}.get(a, a) for a in shlex.split(command)[1:]]
    assert "--short-side" in args and "--val-fraction" in args and "--samples-per-shard" in args
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in prepared.iterdir() if p.is_file())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir() if p.is_file())
    for name in names:
        assert (prepared / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
