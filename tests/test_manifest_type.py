"""The typed manifest: it round-trips to the same bytes and refuses what the schema check finds."""

from __future__ import annotations

import json

import pytest

from avdata.errors import AvdataError
from avdata.shards.manifest import MANIFEST_NAME, Manifest, ShardEntry, SplitEntry
from scmrl.data.synthetic import make_synthetic_av_shards


def test_prepared_manifest_round_trips_to_the_same_bytes(tmp_path):
    for kind in ("static", "events"):
        out = make_synthetic_av_shards(tmp_path / kind, 12, 4, 4, kind=kind, per_shard=5)
        text = (out / MANIFEST_NAME).read_text(encoding="utf-8")
        m = Manifest.load(out)
        assert m.to_json() == text
        assert m.splits["train"].num_samples == 12 and len(m.splits["train"].shards) == 3
        assert m.shard_entries(["val"])[0][1].file == "val-000000.tar"
        m.save(tmp_path / f"copy-{kind}")
        assert (tmp_path / f"copy-{kind}" / MANIFEST_NAME).read_text(encoding="utf-8") == text


def test_unknown_keys_and_sample_stats_survive_a_round_trip():
    d = Manifest("toy", ["a", "b"], {"x.npy": {"shape": [2]}}, options={"seed": 1}).to_dict()
    d["splits"]["train"] = {"num_samples": 3, "class_counts": {"a": 2, "b": 1}, "shards": [
        {"file": "train-000000.tar", "bytes": 10240, "sha256": "0" * 64, "num_samples": 3, "note": "kept"}]}
    d["splits"]["train"]["sample_stats"] = {"s": {"samples": 3, "min": 0, "median": 1, "mean": 1.0, "max": 2}}
    d["future"] = {"x": 1}
    d["sources"] = {"sha256": {"a.wav": "1" * 64}}
    text = json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    m = Manifest.parse(text)
    assert m.to_json() == text and m.to_dict() == d
    assert m.splits["train"].shards[0].extra == {"note": "kept"} and m.extra == {"future": {"x": 1}}
    assert m.sources == {"sha256": {"a.wav": "1" * 64}} and m.notes is None and "notes" not in m.to_dict()


def test_a_broken_manifest_is_refused_with_json_paths():
    d = Manifest("toy", ["a"], {}).to_dict()
    d["splits"]["train"] = {"num_samples": "3", "class_counts": {}, "shards": []}
    with pytest.raises(AvdataError, match=r"\$\.splits\.train\.num_samples: must be an integer"):
        Manifest.from_dict(d)
    with pytest.raises(AvdataError, match="no split 'test'; this folder has train"):
        Manifest("toy", ["a"], {}, {"train": SplitEntry.of_shards([], {})}).check().split("test")


def test_save_checks_first_and_writes_nothing_invalid(tmp_path):
    m = Manifest("toy", ["a", "a\nb"], {}, {"train": SplitEntry.of_shards([ShardEntry("train-000000.tar", 10240,
                                                                                   "0" * 64, 2)], {"a": 2})})
    assert m.splits["train"].num_samples == 2  # counted from its shards
    with pytest.raises(AvdataError, match=r"\$\.classes\[1\]: .* holds a control character"):
        m.save(tmp_path)
    assert not (tmp_path / MANIFEST_NAME).exists()
    m.classes = ["a", "b"]
    assert Manifest.load(m.save(tmp_path)) == m
