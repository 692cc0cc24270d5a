"""avdata.fetch.verify_raw and avdata.fetch.lfs, and `avdata verify-raw`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.fetch.lfs import is_lfs_pointer, make_pointer, parse_lfs_pointer
from avdata.fetch.sources import SourceFile, load_source_list
from avdata.fetch.verify_raw import FIXES, verify_raw
from avdata.cli.avdata_app import app

runner = CliRunner()

CLIPS = ["1001_DFA_ANG_XX", "1001_DFA_DIS_XX", "1001_DFA_FEA_XX", "1001_DFA_HAP_XX", "1001_DFA_NEU_XX"]


def _raw_tree(root: Path) -> tuple[Path, Path]:
    """A good raw tree and its TSV (5 clips, WAV + FLV each)."""
    rels = []
    for i, clip in enumerate(CLIPS):
        wav = root / "AudioWAV" / f"{clip}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.full(8000 + 100 * i, 0.1 * (i + 1), dtype=np.float32), 16000, subtype="PCM_16")
        flv = root / "VideoFlash" / f"{clip}.flv"
        flv.parent.mkdir(parents=True, exist_ok=True)
        flv.write_bytes(os.urandom(20_000 + i))
        rels += [f"AudioWAV/{clip}.wav", f"VideoFlash/{clip}.flv"]
    tsv = root.parent / "files.tsv"
    tsv.write_text("path\tsize\tsha256\n" + "".join(
        f"{r}\t{(root / r).stat().st_size}\t{sha256_file(root / r)}\n" for r in rels))
    return root, tsv


def _damage(root: Path, files: list[SourceFile]) -> dict[str, str]:
    """Make one file of each problem kind; return path -> expected status."""
    by = {f.path: f for f in files}
    wav_missing, flv_lfs, wav_short, flv_flip = (f"AudioWAV/{CLIPS[1]}.wav", f"VideoFlash/{CLIPS[2]}.flv",
                                                 f"AudioWAV/{CLIPS[3]}.wav", f"VideoFlash/{CLIPS[4]}.flv")
    (root / wav_missing).unlink()
    (root / flv_lfs).write_bytes(make_pointer(by[flv_lfs].sha256, by[flv_lfs].size))
    data = (root / wav_short).read_bytes()
    (root / wav_short).write_bytes(data[: len(data) // 2])
    data = bytearray((root / flv_flip).read_bytes())
    data[5000] ^= 0x55
    (root / flv_flip).write_bytes(bytes(data))
    expected = {f.path: "ok" for f in files}
    expected.update({wav_missing: "missing", flv_lfs: "lfs-pointer", wav_short: "size-mismatch",
                     flv_flip: "hash-mismatch"})
    return expected


def test_lfs_pointer_parsing(tmp_path):
    oid = hashlib.sha256(b"media").hexdigest()
    ptr = make_pointer(oid, 12345)
    assert is_lfs_pointer(ptr) and len(ptr) < 200
    parsed = parse_lfs_pointer(ptr)
    assert parsed is not None and parsed.oid == oid and parsed.size == 12345 and parsed.algorithm == "sha256"
    (tmp_path / "stub.flv").write_bytes(ptr)
    assert is_lfs_pointer(tmp_path / "stub.flv") and parse_lfs_pointer(tmp_path / "stub.flv") == parsed
    assert not is_lfs_pointer(b"RIFF....WAVEfmt ") and parse_lfs_pointer(b"hello") is None
    assert not is_lfs_pointer(ptr + b"x" * 2000)  # too big to be a pointer
    assert not is_lfs_pointer(tmp_path / "missing")


def test_verify_raw_classifies_each_file(tmp_path):
    root, tsv = _raw_tree(tmp_path / "raw")
    files = load_source_list(tsv)
    good = verify_raw(root, files, progress=False)
    assert good.ok and good.counts["ok"] == 10
    expected = _damage(root, files)
    rep = verify_raw(root, files, jobs=3, progress=False)
    assert {c.path: c.status for c in rep.checks} == expected
    assert rep.counts == {"ok": 6, "missing": 1, "lfs-pointer": 1, "size-mismatch": 1, "hash-mismatch": 1}
    by_status = {c.status: c for c in rep.problems}
    assert "git lfs pull" in FIXES["lfs-pointer"] and "pointer" in by_status["lfs-pointer"].detail
    flip = by_status["hash-mismatch"]
    assert flip.actual_sha256 == sha256_file(root / flip.path) != flip.expected_sha256
    quick = verify_raw(root, files, check_hash=False, progress=False)
    assert quick.counts["hash-mismatch"] == 0 and quick.counts["ok"] == 7 and not quick.ok
    with pytest.raises(AvdataError, match="no such folder"):
        verify_raw(tmp_path / "nope", files, progress=False)


def test_verify_raw_cli(tmp_path):
    root, tsv = _raw_tree(tmp_path / "raw")
    res = runner.invoke(app, ["verify-raw", "cremad", str(root), "--sources", str(tsv)])
    assert res.exit_code == 0, res.output
    assert "10 files: 10 ok" in res.output
    _damage(root, load_source_list(tsv))
    res = runner.invoke(app, ["verify-raw", "cremad", str(root), "--sources", str(tsv)])
    assert res.exit_code == 1
    for status in ("missing", "lfs-pointer", "size-mismatch", "hash-mismatch"):
        assert status in res.output
    assert "git lfs pull" in res.output
    res = runner.invoke(app, ["verify-raw", "cremad", str(root), "--sources", str(tsv), "--quick", "--limit", "1"])
    assert res.exit_code == 0, res.output
    assert set(FIXES) == {"missing", "lfs-pointer", "size-mismatch", "hash-mismatch"}
