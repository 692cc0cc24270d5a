"""The typed manifest: it round-trips to the same bytes and refuses what the schema check finds."""

from __future__ import annotations

import json

import pytest

from avdata.errors import AvdataError
from avdata.shards.manifest import MANIFEST_NAME, Manifest, dumps, new_manifest, split_entry
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
    d = new_manifest("toy", {"seed": 1}, ["a", "b"], {"x.npy": {"shape": [2]}})
    d["splits"]["train"] = split_entry([{"file": "train-000000.tar", "bytes": 10240, "sha256": "0" * 64,
                                         "num_samples": 3, "note": "kept"}], {"a": 2, "b": 1})
    d["splits"]["train"]["sample_stats"] = {"s": {"samples": 3, "min": 0, "median": 1, "mean": 1.0, "max": 2}}
    d["future"] = {"x": 1}
    m = Manifest.from_dict(json.loads(dumps(d)))
    assert m.to_json() == dumps(d) and m.to_dict() == d
    assert m.splits["train"].shards[0].extra == {"note": "kept"} and m.extra == {"future": {"x": 1}}


def test_a_broken_manifest_is_refused_with_json_paths():
    d = new_manifest("toy", {}, ["a"], {})
    d["splits"]["train"] = {"num_samples": "3", "class_counts": {}, "shards": []}
    with pytest.raises(AvdataError, match=r"\$\.splits\.train\.num_samples: must be an integer"):
        Manifest.from_dict(d)
    with pytest.raises(AvdataError, match="no split 'test'; this folder has train"):
        Manifest.from_dict({**d, "splits": {"train": split_entry([], {})}}).split("test")
