"""The dataset card's YAML header is what the Hugging Face Hub reads: a shards folder loaded locally with
the real `datasets` package (its webdataset builder, picked from the `.tar` files the card's `configs`
lists) shows the manifest's splits and sample counts, and decodes the `.npy`, `.cls` and `.json` fields.

Nothing here touches the network or the user's cache: offline flags and a temporary cache directory.

What a user sees, as of datasets 5.2: `.npy` arrays come back as nested lists of their dtype, of their own
shape per sample (variable-length spectrograms are fine); `.cls` as int. The `.json` field comes back as
a dict whose schema `datasets` infers from the first 5 samples of one shard, so keys that vary from
sample to sample (e.g. per-file source hashes) read as None; keys every sample has are intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from avdata.shards.card import SIZE_BOUNDS, card_yaml, size_category
from avdata.shards.manifest import Manifest, ShardEntry, SplitEntry
from tests.manifests import load_manifest
from avdata.shards.npy import decode_npy
from avdata.shards.reader import iter_shard
from tests.test_inspect_verify import make_av_folder, make_event_folder, make_toy_folder

datasets = pytest.importorskip("datasets")


def card_header(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, sep, _ = text[4:].partition("\n---\n")
    assert sep, "the YAML header is not closed"
    return yaml.safe_load(head)


def shard_samples(folder: Path, split: str) -> list[tuple[str, dict[str, bytes]]]:
    m = load_manifest(folder)
    return [s for shard in m["splits"][split]["shards"] for s in iter_shard(folder / shard["file"])]


def check_header(folder: Path) -> None:
    m = load_manifest(folder)
    header = card_header(folder)
    for key in ("license", "task_categories", "size_categories", "configs"):
        assert header.get(key), key
    sizes = json.loads((Path(datasets.__file__).parent / "utils" / "resources" / "size_categories.json").read_text())
    assert header["size_categories"][0] in sizes
    assert "webdataset" in header["tags"]
    (config,) = header["configs"]
    assert config["config_name"] == "default"
    assert {d["split"]: d["path"] for d in config["data_files"]} == \
        {split: [s["file"] for s in entry["shards"] if s["num_samples"]] for split, entry in m["splits"].items()
         if entry["num_samples"]}
    for d in config["data_files"]:
        assert all((folder / p).is_file() for p in d["path"])  # relative to the folder, as the Hub resolves them
    assert header["size_categories"] == [size_category(sum(e["num_samples"] for e in m["splits"].values()))]
    assert card_counts(folder) == {split: [e["num_samples"], len(e["shards"]), *[e["class_counts"][c]
                                                                              for c in m["classes"]]]
                                   for split, e in m["splits"].items()}
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "Classes (index: name): " + ", ".join(f"{i}: {c}" for i, c in enumerate(m["classes"])) in text


def card_counts(folder: Path) -> dict[str, list[int]]:
    """The card's Contents table: split -> [samples, shards, count of each class in the manifest's order]."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    table = text.split("## Contents", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {cells[0].strip(): [int(c) for c in cells[1:]] for cells in rows}


def load_and_check_counts(folder: Path, cache_dir: str):
    m = load_manifest(folder)
    ds = datasets.load_dataset(str(folder), cache_dir=cache_dir)
    assert list(ds) == [d["split"] for d in card_header(folder)["configs"][0]["data_files"]]  # the card's order
    assert sorted(ds) == sorted(m["splits"])
    assert {split: ds[split].num_rows for split in ds} == {s: e["num_samples"] for s, e in m["splits"].items()}
    for split, entry in m["splits"].items():
        labels = ds[split]["cls"]
        assert {c: labels.count(i) for i, c in enumerate(m["classes"])} == entry["class_counts"]
        assert ds[split]["__key__"] == [k for k, _ in shard_samples(folder, split)]
    return ds


def test_card_header_and_load_dataset_toy_engine(tmp_path, hf_offline):
    folder = make_toy_folder(tmp_path / "toy", tmp_path / "raw")
    check_header(folder)
    ds = load_and_check_counts(folder, hf_offline)
    row = ds["train"][ds["train"]["__key__"].index("s000")]  # samples are stored in seeded random order
    assert isinstance(row["cls"], int) and row["x.npy"] == [0, 1, 2]
    assert row["json"]["split"] == "train" and row["json"]["key"] == row["__key__"]


@pytest.mark.slow
def test_load_dataset_static_av_fields(tmp_path, hf_offline):
    folder = make_av_folder(tmp_path / "av")
    check_header(folder)
    ds = load_and_check_counts(folder, hf_offline)
    for split in ds:
        for row, (key, fields) in zip(ds[split], shard_samples(folder, split)):
            assert row["__key__"] == key
            assert row["cls"] == int(fields["cls"])
            frames = np.asarray(row["frames.npy"], dtype=np.uint8)
            np.testing.assert_array_equal(frames, decode_npy(fields["frames.npy"]))
            spec = np.asarray(row["spec.npy"], dtype=np.float32)  # variable T: 18..22 per sample
            np.testing.assert_array_equal(spec, decode_npy(fields["spec.npy"]))
            meta = json.loads(fields["json"])
            assert row["json"] == meta  # same keys in every sample here, so the json survives intact
    assert ds["train"].features["frames.npy"] == datasets.List(datasets.List(datasets.List(datasets.List(
        datasets.Value("uint8")))))
    assert ds["train"].features["spec.npy"] == datasets.List(datasets.List(datasets.Value("float32")))


def test_load_dataset_event_fields_and_streaming(tmp_path, hf_offline):
    folder = make_event_folder(tmp_path / "events")
    check_header(folder)
    ds = load_and_check_counts(folder, hf_offline)
    row = ds["val"][0]
    key, fields = shard_samples(folder, "val")[0]
    assert row["__key__"] == key
    visual = np.asarray(row["visual.npy"], dtype=np.uint16)
    assert visual.shape == (8, 2, 28, 28)
    np.testing.assert_array_equal(visual, decode_npy(fields["visual.npy"]))
    assert np.asarray(row["audio.npy"]).shape == (8, 64)
    assert ds["val"].features["visual.npy"].feature.feature.feature.feature == datasets.Value("uint16")
    # streaming (how the Hub viewer and big downloads read it) sees the same splits and counts
    streamed = datasets.load_dataset(str(folder), streaming=True, cache_dir=hf_offline)
    m = load_manifest(folder)
    assert {s: sum(1 for _ in streamed[s]) for s in streamed} == {s: e["num_samples"] for s, e in m["splits"].items()}


@pytest.mark.slow
def test_varying_json_keys_keep_counts(tmp_path, hf_offline):
    """Per-sample json keys (like per-file source hashes) do not break loading; only shared keys survive."""
    from avdata.datasets.recipe import sample_json
    from tests.test_inspect_verify import AV_CLASSES, _av_sample, build_folder

    def sample(i, label, split):
        key, fields = _av_sample(i, label, split)
        meta = json.loads(fields["json"])
        meta["sources"] = {f"AudioWAV/{key}.wav": {"sha256": f"{i:064x}"}}
        if i == 7:
            meta["known_issue"] = "listed as broken upstream"
        fields["json"] = sample_json(meta)
        return key, fields

    folder = build_folder(tmp_path / "varying", "varying", AV_CLASSES, sample, {"train": 9, "test": 3}, 4,
                          {"cls": {}, "json": {}, "frames.npy": {}, "spec.npy": {}})
    ds = load_and_check_counts(folder, hf_offline)
    for split in ds:
        for row, (key, fields) in zip(ds[split], shard_samples(folder, split)):
            meta = json.loads(fields["json"])
            for shared in ("key", "label", "label_name", "split", "audio"):
                assert row["json"][shared] == meta[shared]


def test_size_category_uses_hub_values():
    sizes = json.loads((Path(datasets.__file__).parent / "utils" / "resources" / "size_categories.json").read_text())
    for n in (0, 999, 1000, 9_999, 10_000, 999_999, 5_000_000, 20_000_000, 10**9, 10**13):
        assert size_category(n) in sizes, n
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K"
    assert size_category(20_000_000) == "10M<n<100M" and size_category(10**13) == "n>1T"
    assert [name for _, name in SIZE_BOUNDS] == sizes[1:-1]
    manifest = Manifest("toy", ["a"], {},
                        {"train": SplitEntry.of_shards([ShardEntry("train-000000.tar", 10240, "0" * 64, 3)],
                                                       {"a": 3})})
    card = {"license_id": "cc0-1.0", "title": "t", "task_categories": ["audio-classification"]}
    assert card_yaml(manifest, card)["size_categories"] == ["n<1K"]


def _toy_with_bad(tmp_path: Path, name: str, bad: tuple[str, ...]) -> Path:
    from avdata.datasets.registry import get_recipe, register_recipe
    from avdata.prepare.engine import PrepareSettings, prepare
    from tests.toy_recipe import ToyOptions, make_toy_raw

    register_recipe("toy", "tests.toy_recipe:ToyRecipe")
    raw = make_toy_raw(tmp_path / f"{name}_raw", bad=bad)
    return prepare(get_recipe("toy"), raw, tmp_path / name, ToyOptions(),
                   PrepareSettings(samples_per_shard=4, progress=False)).out


def test_shards_and_splits_left_empty_by_skipped_clips_still_load(tmp_path, hf_offline):
    """`datasets` infers the columns from the first listed shard of the last split (here `test`) and failed
    on an empty one (pyarrow: "Must pass at least one table"), and refuses a split with no rows: the card
    lists only shards and splits that hold samples, and says which split it left out."""
    whole = _toy_with_bad(tmp_path, "whole", ())
    first = [k for k, _ in iter_shard(whole / "test-000000.tar")]
    assert len(first) == 4
    folder = _toy_with_bad(tmp_path, "first_empty", tuple(first))  # the test split's first shard: all skipped
    m = load_manifest(folder)
    assert [s["num_samples"] for s in m["splits"]["test"]["shards"]] == [0, 2]
    check_header(folder)
    ds = load_and_check_counts(folder, hf_offline)
    data_files = card_header(folder)["configs"][0]["data_files"]
    assert data_files[-1] == {"split": "test", "path": ["test-000001.tar"]}
    assert ds["test"]["__key__"] == [k for k, _ in iter_shard(folder / "test-000001.tar")]
    assert ds["test"]["x.npy"] == [decode_npy(f["x.npy"]).tolist() for _, f in iter_shard(folder / "test-000001.tar")]

    folder = _toy_with_bad(tmp_path, "test_empty", tuple(f"t{i:03d}" for i in range(6)))  # every test clip
    m = load_manifest(folder)
    assert m["splits"]["test"]["num_samples"] == 0
    check_header(folder)
    assert [d["split"] for d in card_header(folder)["configs"][0]["data_files"]] == ["train", "val"]
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "| test | 0 | 2 | 0 | 0 |" in text  # the card's table still states the manifest's counts
    assert "No sample of `test` was kept" in text
    ds = datasets.load_dataset(str(folder), cache_dir=hf_offline)
    assert {s: ds[s].num_rows for s in ds} == {s: e["num_samples"] for s, e in m["splits"].items() if s != "test"}


def test_the_cards_snippet_reads_a_shard_that_holds_a_sample(tmp_path, monkeypatch):
    """Its `next(iter(ds))` raised StopIteration when the first shard had every clip skipped."""
    folder = _toy_with_bad(tmp_path, "toy", ())
    first = [k for k, _ in iter_shard(folder / "train-000000.tar")]
    folder = _toy_with_bad(tmp_path, "first_empty", tuple(first))
    assert load_manifest(folder)["splits"]["train"]["shards"][0]["num_samples"] == 0
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert 'wds.WebDataset("train-000001.tar", shardshuffle=False)' in text
    code = text.split("## Reading it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(folder)
    monkeypatch.setenv("WDS_SECURE", "1")  # (the snippet sets it: undone after the test)
    scope: dict = {}
    exec(code, scope)  # as printed, beside the shards
    key, fields = next(iter_shard(folder / "train-000001.tar"))
    assert scope["sample"]["__key__"] == key
    assert scope["sample"]["x.npy"].tolist() == decode_npy(fields["x.npy"]).tolist()


class _Planted:
    """Unpickled, it creates the file `planted` in the working folder: what a stranger's .pyd member can run."""

    def __reduce__(self):
        return (open, ("planted", "w"))


def test_the_cards_snippet_never_unpickles_a_strangers_member(tmp_path):
    """The card's snippet decoded with stock webdataset's defaults, which unpickle `.pyd` members; README
    recommends WDS_SECURE=1 for shards from others. Run as printed in a fresh interpreter beside a shard
    holding a pickle member, it now refuses the member and nothing of it runs."""
    import io
    import pickle
    import subprocess
    import sys
    import tarfile

    folder = _toy_with_bad(tmp_path, "toy", ())
    text = (folder / "README.md").read_text(encoding="utf-8")
    code = text.split("## Reading it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shard = folder / "train-000000.tar"
    key = next(iter_shard(shard))[0]
    body, original = pickle.dumps(_Planted()), shard.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(original)) as old, tarfile.open(shard, "w") as new:
        info = tarfile.TarInfo(f"{key}.meta.pyd")  # first: a member of the first sample
        info.size = len(body)
        new.addfile(info, io.BytesIO(body))
        for member in old.getmembers():
            new.addfile(member, old.extractfile(member))
    r = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)
    assert not (folder / "planted").exists(), r.stdout + r.stderr
    assert r.returncode != 0 and "Unpickling is not allowed" in r.stderr, r.stderr
