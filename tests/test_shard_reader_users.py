"""verify, inspect and the .tar-list manifest all read shards through the one reader (avdata.shards.reader)."""

from __future__ import annotations

import hashlib
import json

from avdata.shards.location import open_shards
from avdata.shards.manifest import MANIFEST_NAME, Manifest
from avdata.verify import verify_shards
from scmrl.data.synthetic import make_synthetic_av_shards
from tests.test_untrusted import _set_member_size


def test_verify_reports_a_member_that_claims_more_than_the_shard(tmp_path):
    out = make_synthetic_av_shards(tmp_path / "s", 8, 0, 0, per_shard=8)
    shard = out / "train-000000.tar"
    _set_member_size(shard, 0, 10**12)  # the first header: a hostile size, same file length
    m = json.loads((out / MANIFEST_NAME).read_text())
    m["splits"]["train"]["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / MANIFEST_NAME).write_text(json.dumps(m))
    report = verify_shards(out, progress=False)
    assert [f for f, _ in report.problems] == ["train-000000.tar"]
    assert report.problems[0][1].startswith("unreadable tar after 0 sample(s): damaged")
    assert "1,000,000,000,000" in report.problems[0][1]


def test_bare_tar_files_get_a_real_manifest(tmp_path):
    out = make_synthetic_av_shards(tmp_path / "s", 10, 0, 6, per_shard=4)
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in out.glob("*.tar"):
        (bare / p.name).write_bytes(p.read_bytes())
    classes = Manifest.load(out).classes
    loc = open_shards(str(bare / "*.tar"), classes=classes)
    made, real = loc.manifest, Manifest.load(out)
    assert [s.to_dict() for s in made.splits["train"].shards] == [s.to_dict() for s in real.splits["train"].shards]
    assert made.splits["test"].class_counts == real.splits["test"].class_counts
    assert loc.address("test-000000.tar") == str(bare / "test-000000.tar")
    # only the test files of the folder with its manifest: the manifest cut to them
    part = open_shards(str(out / "test-*.tar"))
    assert part.splits == ["test"] and part.manifest.splits["test"].num_samples == 6
