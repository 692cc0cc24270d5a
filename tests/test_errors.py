"""What a user who gets something wrong sees (issue #25, one error type per layer): a bad option value, a
malformed shard field, a malformed source list, an unknown dataset name each end the command with exit
status 2 and one `error:` line naming the option or file and the fix, never a traceback; the library
raises them as AvdataError (tests/test_layout.py keeps built-in errors to internal invariants)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app as avdata_app
from avdata.datasets.registry import get_download, recipe_class
from avdata.errors import AvdataError, FieldError
from avdata.shards.npy import encode_npy
from scmrl.cli.convert_app import convert_app
from scmrl.cli.train_app import train_app
from tests.test_untrusted_readers import _folder, _sample

ENV = {"COLUMNS": "400", "TERMINAL_WIDTH": "400", "AVDATA_NO_PROGRESS": "1"}


def _run(app, args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args, env=ENV)
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), f"uncaught: {res.exception!r}\n{out}"
    assert "Traceback" not in out
    return res.exit_code, " ".join(out.split())


def _train(folder: Path, out: Path, *extra: str, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str]:
    if monkeypatch is not None:  # the memory probe before the first batch costs seconds and is not under test
        monkeypatch.setattr("scmrl.train.loop.fit_batch", lambda *a, **k: (2, "batch 2 (probe skipped)"))
    return _run(train_app, ["--shards", str(folder), "--out", str(out), "--device", "cpu", "--workers", "0",
                            "--epochs", "1", "--batch-size", "2", "--embed-dim", "16", "--heads", "2",
                            "--time-steps", "2", *extra])


def test_an_option_value_the_model_refuses_names_the_flags(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "s", {"train": [_sample(i) for i in range(4)]})
    code, out = _train(folder, tmp_path / "run", "--embed-dim", "100", "--heads", "16")
    assert code == 2
    assert "error: --embed-dim 100 must be divisible by 2 (shallow embedding) and by --heads 16" in out


@pytest.mark.parametrize("field, value, why", [
    ("cls", b"1e9", "class index b'1e9' is not a non-negative integer"),
    ("visual.npy", encode_npy(np.zeros((8, 2, 28, 27), np.uint16)),
     "visual.npy (8, 2, 28, 27) and audio.npy (8, 64) are not [bins, 2, 28, 28] and [bins, 64]"),
], ids=["class-index", "event-layout"])
def test_a_malformed_shard_field_names_the_sample_and_shard(tmp_path: Path, field: str, value: bytes, why: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    key, bad = _sample(1)
    folder = _folder(tmp_path / "s", {"train": [_sample(0), (key, {**bad, field: value}), _sample(2), _sample(3)]})
    code, out = _train(folder, tmp_path / "run", monkeypatch=monkeypatch)
    assert code == 2
    assert re.search(rf"error: .*sample {key} of \S*train-000000\.tar: bad field \(", out), out
    assert why in out


def test_a_malformed_source_list_names_the_line(tmp_path: Path) -> None:
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("path\tsize\tsha256\nAudioWAV/1001_DFA_ANG_XX.wav\t12x\tabc\n", encoding="utf-8")
    code, out = _run(avdata_app, ["download", "cremad", "--sources", str(tsv), "--to", str(tmp_path / "raw")])
    assert code == 2
    assert f"error: --sources {tsv}: {tsv}:2: bad size or sha256 in" in out
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_an_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    """One error for every registry lookup (prepare, download, scmrl-convert)."""
    for lookup in (recipe_class, get_download):
        with pytest.raises(AvdataError, match=r"unknown dataset 'nosuch'; choose from cremad, .*ave"):
            lookup("nosuch")
    ref = tmp_path / "ref.pt"
    ref.write_bytes(b"")
    code, out = _run(convert_app, [str(ref), str(tmp_path / "out.pt"), "--dataset", "nosuch"])
    assert code == 2
    assert "error: unknown dataset 'nosuch'; choose from cremad, urbansound8k-av, mnistdvs-ntidigits, ave" in out


def test_a_codec_error_is_an_avdata_error_and_a_value_error() -> None:
    """Readers catch it beside numpy's and json's own ValueErrors for the same bytes, then name the shard."""
    from avdata.shards.jpeg import decode_jpeg

    with pytest.raises(FieldError, match="not a JPEG") as got:
        decode_jpeg(b"GIF89a")
    assert isinstance(got.value, AvdataError) and isinstance(got.value, ValueError)


def test_a_stored_model_config_this_version_cannot_read_is_an_avdata_error() -> None:
    """A checkpoint's model_config comes from a stranger's file: an unknown setting or a value of the wrong
    type is a message (ModelConfig.from_dict, the one reader every checkpoint path uses), not a TypeError."""
    from scmrl.model.config import ModelConfig

    with pytest.raises(AvdataError, match="model_config does not load .*unexpected keyword.*bogus"):
        ModelConfig.from_dict({"num_classes": 6, "bogus": 1})
    with pytest.raises(AvdataError, match="model_config does not load"):
        ModelConfig.from_dict({"num_classes": "six"})
    assert ModelConfig.from_dict({"num_classes": 6}).num_classes == 6
