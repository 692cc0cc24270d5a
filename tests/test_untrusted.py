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
