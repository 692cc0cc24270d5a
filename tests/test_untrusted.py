"""Files and servers other people control: checkpoints, manifests, shards and mirrors must not run code,
fill the disk, exhaust memory, hang, or write outside the target folder.

Hostile servers are tiny http servers on 127.0.0.1 (tests/httpserver.py) with bounded loops and
timeouts; hostile files are made here."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avdata.errors import AvdataError
from scmrl.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


# ------------------------------------------------------------------------------------------ checkpoints


class _Payload:
    """Pickles to a call of os.system: loading it with plain pickle would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_a_pickled_payload_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "rng": _Payload(marker)}, evil)
    with pytest.raises(AvdataError, match=r"evil\.pt: refused.*run code.*posix\.system|evil\.pt: refused.*system"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_eval_cli_refuses_a_pickled_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from cli.train_app import eval_app

    marker = tmp_path / "ran"
    torch.save({"model": {}, "model_config": _Payload(marker)}, tmp_path / "evil.pt")
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(tmp_path / "evil.pt"), "--shards", str(tmp_path),
                                      "--device", "cpu"])
    assert r.exit_code == 2 and "refused" in r.output and not marker.exists()


def test_rng_states_are_plain_tensors_and_restore_exactly(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng()})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)  # no allow-list needed
    restore_rng(ckpt["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_a_checkpoint_in_the_earlier_layout_still_loads(tmp_path):
    random.seed(4), np.random.seed(4)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"rng": old, "epoch": 1}, tmp_path / "old.pt")
    expected = (random.random(), float(np.random.rand()))
    random.seed(0), np.random.seed(0)
    restore_rng(load_checkpoint(tmp_path / "old.pt")["rng"])
    assert (random.random(), float(np.random.rand())) == expected


# ------------------------------------------------------------------------------------------ manifests


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from scmrl.synthetic import make_synthetic_av_shards

    return make_synthetic_av_shards(tmp_path_factory.mktemp("syn") / "s", 16, 8, 8, per_shard=8, seed=1)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_manifest(folder: Path, change) -> None:
    import json

    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _hostile_manifest(m: dict) -> None:
    m["schema_version"] = "1"
    m["classes"] = "v0a0,v0a1,v1a0,v1a1"
    m["splits"]["train"]["shards"][0]["file"] = 7
    m["splits"]["train"]["shards"][1]["bytes"] = "440320"
    m["splits"]["val"]["num_samples"] = "8"
    m["splits"]["val"]["class_counts"] = [2, 2, 2, 2]
    m["splits"]["test"]["shards"][0]["file"] = "test\x00-000000.tar"
    m["splits"]["extra"] = 5


EXPECTED_PATHS = ["$.schema_version: must be an integer, not a string", "$.classes: must be a list",
                  "$.splits.train.shards[0].file: must be a string", "$.splits.train.shards[1].bytes: must be an "
                  "integer", "$.splits.val.num_samples: must be an integer", "$.splits.val.class_counts: must be "
                  "an object", "$.splits.test.shards[0].file", "control character", "$.splits.extra: must be an "
                  "object"]


def test_manifest_validation_reports_every_problem_with_its_path(shards):
    import copy
    import json

    from avdata.manifest import problems, validate

    m = json.loads((shards / "manifest.json").read_text())
    assert problems(m) == []
    bad = copy.deepcopy(m)
    _hostile_manifest(bad)
    found = "\n".join(problems(bad))
    for expected in EXPECTED_PATHS:
        assert expected in found, expected
    with pytest.raises(AvdataError, match="newer") as e:
        validate({**m, "schema_version": 2})
    assert "(1)" in str(e.value) and "2" in str(e.value)
    neg = copy.deepcopy(m)
    neg["splits"]["train"]["shards"][0]["num_samples"] = -3
    neg["splits"]["train"]["shards"][0]["sha256"] = "zz"
    neg["splits"]["train"]["shards"][0]["file"] = "../escape.tar"
    found = "\n".join(problems(neg))
    assert "$.splits.train.shards[0].num_samples: -3 is out of range" in found
    assert "$.splits.train.shards[0].sha256: must be 64 hex digits" in found
    assert "$.splits.train.shards[0].file: shard file name '../escape.tar' must be a plain name" in found


@pytest.mark.parametrize("command", ["verify", "inspect", "train", "pull"])
def test_every_reader_reports_a_hostile_manifest_without_a_traceback(shards, tmp_path, command):
    from typer.testing import CliRunner

    from cli.avdata_app import app
    from cli.train_app import train_app

    folder = _copy(shards, tmp_path / "hostile")
    _edit_manifest(folder, _hostile_manifest)
    runner = CliRunner()
    if command == "train":
        r = runner.invoke(train_app, ["--shards", str(folder), "--out", str(tmp_path / "run"), "--device", "cpu"])
    elif command == "pull":
        r = runner.invoke(app, ["pull", str(folder), "--to", str(tmp_path / "copy")])
    else:
        r = runner.invoke(app, [command, str(folder)])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    out = " ".join(r.output.split())
    for expected in EXPECTED_PATHS:
        assert " ".join(expected.split()) in out, (expected, r.output)
    assert not (tmp_path / "copy" / "manifest.json").exists()
