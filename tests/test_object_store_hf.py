"""Shards on the Hugging Face Hub (hf://), against a loopback server that answers the Hub's HTTP API
(tests/hubserver.py): `avdata push` through huggingface_hub (a commit per file, the manifest last), a rerun
that uploads nothing, then verify, inspect, pull and the trainer's stream reading hf:// as they read a
folder; another dataset at the same address refused without --overwrite; a deleted shard named; files of
the same size but other content replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.shards.location import open_location, open_shards
from avdata.verify import verify_shards
from scmrl.data.config import StreamConfig
from scmrl.data.failures import ShardReadError
from scmrl.data.stream import ShardStream
from scmrl.data.synthetic import make_synthetic_av_shards
from tests.hubserver import hub_server

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

pytest.importorskip("huggingface_hub")

N_TRAIN, N_VAL, N_TEST = 64, 16, 16
URL = "hf://datasets/lab/syn/shards"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = make_synthetic_av_shards(tmp_path_factory.mktemp("hf") / "s", N_TRAIN, N_VAL, N_TEST, per_shard=16,
                                   frame_shape=(32, 40))
    (out / "README.md").write_text("---\nlicense: mit\n---\n# synthetic\n")
    return out


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    # conftest puts huggingface_hub offline for the whole suite (nothing may reach the real Hub); this
    # Hub is on 127.0.0.1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with hub_server() as hub:
        hub.create("lab/syn")
        monkeypatch.setenv("HF_ENDPOINT", hub)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub


def _push(*args: str):
    return CliRunner().invoke(app, ["push", *args])


def test_push_read_verify_inspect_pull_and_stream_hf(hub, shards, tmp_path):
    r = _push(str(shards), URL)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in shards.iterdir())
    assert f"{len(names)} uploaded" in r.output
    held = hub.repos["lab/syn"]["main"]
    assert sorted(held) == [f"shards/{n}" for n in names]
    assert all(held[f"shards/{n}"] == (shards / n).read_bytes() for n in names)
    commits = [q for q in hub.requests if q["method"] == "POST" and "/commit/" in q["path"]]
    assert len(commits) == len(names)  # one file a commit, the manifest in the last
    assert all({k.lower(): v for k, v in q["headers"].items()}.get("authorization") == "Bearer hf_secret"
               for q in commits)
    r = _push(str(shards), URL)  # a rerun uploads nothing
    assert r.exit_code == 0 and "0 uploaded" in r.output, r.output

    loc = open_location(URL)
    assert loc.remote and loc.num_samples("train") == N_TRAIN
    report = verify_shards(URL, progress=False)
    assert report.ok and report.checked == 6, report.problems
    r = CliRunner().invoke(app, ["inspect", URL, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"]["val"]["num_samples"] == N_VAL
    r = CliRunner().invoke(app, ["pull", URL, "--to", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    for p in shards.glob("*.tar"):
        assert (tmp_path / "p" / p.name).read_bytes() == p.read_bytes(), p.name

    cfg = StreamConfig(kind="static", image_size=32, time_steps=1, with_keys=True)
    remote = [s[-1] for s in ShardStream(open_shards(URL), "train", cfg).iter_slot()]
    local = [s[-1] for s in ShardStream(open_shards(shards), "train", cfg).iter_slot()]
    assert remote == local and len(remote) == N_TRAIN


def test_another_dataset_is_refused_and_a_deleted_shard_named(hub, shards, tmp_path):
    other = make_synthetic_av_shards(tmp_path / "other", 32, 8, 8, per_shard=16, frame_shape=(32, 40), seed=5,
                                     dataset="other-syn")
    assert _push(str(shards), URL).exit_code == 0
    r = _push(str(other), URL)
    assert r.exit_code != 0 and "already holds the dataset" in r.output and "--overwrite" in r.output
    assert json.loads(hub.repos["lab/syn"]["main"]["shards/manifest.json"])["dataset"] != "other-syn"

    del hub.repos["lab/syn"]["main"]["shards/train-000001.tar"]  # gone from the repository
    report = verify_shards(URL, progress=False)
    assert not report.ok and any("train-000001.tar" in p for p in report.problems)
    cfg = StreamConfig(kind="static", image_size=32, time_steps=1, retries=0)
    with pytest.raises(ShardReadError, match="train-000001.tar"):
        list(ShardStream(open_shards(URL), "train", cfg).iter_slot())


def test_a_repush_replaces_hub_files_of_the_same_size_with_other_content(hub, tmp_path):
    a = make_synthetic_av_shards(tmp_path / "a", 64, 16, 16, per_shard=16, frame_shape=(32, 40))
    b = make_synthetic_av_shards(tmp_path / "b", 64, 16, 16, per_shard=16, frame_shape=(32, 40), seed=9)
    assert any(p.stat().st_size == (b / p.name).stat().st_size for p in a.glob("*.tar"))
    assert _push(str(a), URL).exit_code == 0
    r = _push(str(b), URL)  # another seed: refused without --overwrite
    assert r.exit_code == 2 and "seed differs" in r.output, r.output
    r = _push(str(b), URL, "--overwrite")
    assert r.exit_code == 0 and "0 already there" in r.output, r.output
    held = hub.repos["lab/syn"]["main"]
    assert all(held[f"shards/{p.name}"] == p.read_bytes() for p in b.iterdir())
    r = _push(str(b), URL)  # git's blob ids match now: nothing to send
    assert r.exit_code == 0 and "0 uploaded" in r.output, r.output
    hub.lfs = True  # files listed as LFS files, by the sha256 of their content, as the Hub lists shards
    r = _push(str(b), URL)
    assert r.exit_code == 0 and "0 uploaded" in r.output, r.output
    r = _push(str(a), URL, "--overwrite")
    assert r.exit_code == 0 and "0 already there" in r.output, r.output
    assert all(held[f"shards/{p.name}"] == p.read_bytes() for p in a.iterdir())


def test_hub_errors_say_what_to_do(hub, shards, monkeypatch):
    r = _push(str(shards), "hf://datasets/lab/nope/shards")
    assert r.exit_code == 2 and "hf repo create lab/nope --repo-type dataset" in r.output, r.output
    r = _push(str(shards), "hf://datasets/lab/syn@dev/shards")
    assert r.exit_code == 2 and "no revision 'dev'" in r.output, r.output
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    r = _push(str(shards), URL)
    assert r.exit_code == 2 and "HF_HUB_OFFLINE is set" in r.output, r.output
    assert hub.repos["lab/syn"]["main"] == {}  # nothing was written anywhere
