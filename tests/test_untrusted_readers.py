"""Reading shards from strangers (issue #23, items 3 and 4): members capped by what the manifest says the
field is, inspect decoding only what it shows, trainer start-up linear in the shard count, labels, keys
and splits checked by verify and the trainer, control characters escaped, FIFOs refused at once.

Hostile shards are made with the project's writer (`write_shard`) where it allows the case, else with
the tarfile module; memory is measured with tracemalloc, never inferred from time.
"""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from avdata.datasets.recipe import cls_bytes, sample_json
from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.shards.location import open_location
from avdata.shards.manifest import Manifest, ShardEntry, SplitEntry
from avdata.shards.npy import encode_npy
from avdata.shards.tar import shard_name, write_shard
from avdata.verify import print_report, verify_shards
from scmrl.data.config import StreamConfig
from scmrl.data.failures import ShardReadError
from scmrl.data.stream import ShardStream
from tests.finishes import finishes
from tests.test_inspect_verify import _event_sample

CLASSES = ["zero", "one", "two", "three", "four", "five"]
EVENT_FEATURES = {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                  "visual.npy": {"dtype": "uint16", "shape": [8, 2, 28, 28]},
                  "audio.npy": {"dtype": "uint16", "shape": [8, 64]}}


# --- building hostile folders ------------------------------------------------------------------------


def _sample(i: int, key: str | None = None, cls: bytes | None = None) -> tuple[str, dict[str, bytes]]:
    k, fields = _event_sample(i, i % len(CLASSES), "train")
    return key or k, {**fields, "cls": cls if cls is not None else cls_bytes(i % len(CLASSES))}


def _save(out: Path, files: dict[str, list[Path]], features: dict = EVENT_FEATURES,
          classes: list[str] = CLASSES) -> Path:
    """manifest.json for the shard files already in `out` (split -> files), sizes and sha256 as they are."""
    m = Manifest("hostile", classes, features)
    for split, paths in files.items():
        entries = []
        for p in paths:
            with tarfile.open(p) as tf:  # count samples the way a writer would have
                n = len({name.split(".", 1)[0] for name in tf.getnames()})
            entries.append(ShardEntry(p.name, p.stat().st_size, sha256_file(p), n))
        m.splits[split] = SplitEntry.of_shards(entries, {classes[0]: sum(e.num_samples for e in entries)})
    m.save(out)
    return out


def _folder(out: Path, splits: dict[str, list[tuple[str, dict[str, bytes]]]], **kw) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    files = {split: [out / shard_name(split, 0)] for split in splits}
    for split, samples in splits.items():
        write_shard(files[split][0], samples)
    return _save(out, files, **kw)


def _raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar written with the tarfile module: names the project's writer refuses."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _sparse_member_tar(path: Path, name: str, size: int) -> Path:
    """A tar with one member of `size` zero bytes, written sparse (the disk holds almost nothing)."""
    info = tarfile.TarInfo(name)
    info.size = size
    with open(path, "wb") as f:
        f.write(info.tobuf(tarfile.USTAR_FORMAT))
        f.seek(512 + size + (-size % 512) + 1024 - 1)
        f.write(b"\0")
    return path


def _stream(folder: Path, split: str = "train", **kw) -> ShardStream:
    cfg = StreamConfig(kind="events", time_steps=4, seed=1, train=False, retries=2, backoff=0.0, **kw)
    return ShardStream(open_location(folder), split, cfg)


def _peak(fn: Callable[[], object]) -> tuple[int, object]:
    """(peak bytes Python and numpy allocated while fn ran, what it returned or raised)."""
    tracemalloc.start()
    try:
        try:
            result: object = fn()
        except Exception as exc:  # any one: the caller asserts on it
            result = exc
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def _printed(report) -> str:
    from rich.console import Console

    buf = io.StringIO()
    print_report(report, Console(file=buf, width=400, force_terminal=True, color_system=None))
    return buf.getvalue()


@pytest.fixture
def one_cv2_thread():
    """Large JPEGs would start OpenCV's thread pool in this process, and DataLoader workers forked later
    by other tests would inherit its locks held: decode on this thread only."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(0)
    yield
    cv2.setNumThreads(before)


# --- 1. members capped by the manifest's features -------------------------------------------------------

BIG = 48 << 20  # below the 64 MiB cap of a field of unknown size, far above its declared 29 KB


def test_a_member_larger_than_its_declared_shape_is_refused_before_it_is_read(tmp_path):
    from avdata.samples import iter_samples

    folder = tmp_path / "s"
    folder.mkdir()
    tar = _sparse_member_tar(folder / "train-000000.tar", "ev0000.visual.npy", BIG)
    _save(folder, {"train": [tar]})
    loc = open_location(folder)
    peak, err = _peak(lambda: list(iter_samples(loc, "train")))
    assert isinstance(err, AvdataError)
    assert "'ev0000.visual.npy' claims 50,331,648 bytes, more than the 29,184" in str(err)
    assert str(tar) in str(err)
    assert peak < 4 << 20  # the 48 MiB body was never read (it was, whole, before)
    stream = _stream(folder)  # reading the manifest allocates its size bound for a moment: not measured
    peak, err = _peak(lambda: list(stream.iter_slot()))
    assert isinstance(err, ShardReadError) and "train-000000.tar is damaged or tampered" in str(err)
    assert "29,184" in str(err) and peak < 4 << 20
    report = verify_shards(folder, progress=False)
    assert [(f, w.split(":")[0]) for f, w in report.problems] == [
        ("train-000000.tar", "unreadable tar after 0 sample(s)")]
    assert "29,184" in report.problems[0][1]


def test_a_field_of_unknown_size_is_capped_and_json_and_cls_are_small(tmp_path):
    from avdata.shards.member_caps import CLS_CAP, JSON_CAP, VARIABLE_CAP, MemberCaps
    from avdata.shards.reader import TarBoundsError, iter_shard

    caps = MemberCaps({**EVENT_FEATURES, "frames.<i>.jpg": {"dtype": "uint8", "shape": ["K", 32, 40, 3]},
                       "spec.npy": {"dtype": "float32", "shape": [64, "T"]},
                       "huge.npy": {"dtype": "uint8", "shape": [1 << 40]}})
    assert caps("k.cls") == CLS_CAP == 64 and caps("k.json") == JSON_CAP == 4 << 20
    assert caps("k.visual.npy") == 8 * 2 * 28 * 28 * 2 + 4096 and caps("k.audio.npy") == 8 * 64 * 2 + 4096
    assert caps("k.frames.7.jpg") == 2 * 32 * 40 * 3 + 4096
    assert caps("k.spec.npy") == caps("k.unlisted") == caps("k.huge.npy") == VARIABLE_CAP == 64 << 20
    tar = _sparse_member_tar(tmp_path / "t.tar", "k.frames.npy", VARIABLE_CAP + 1)  # "K", "H", "W": unknown
    peak, err = _peak(lambda: list(iter_shard(tar, caps=MemberCaps({"frames.npy": {"shape": ["K", "H", "W", 3]}}))))
    assert isinstance(err, TarBoundsError) and "'k.frames.npy' claims 67,108,865 bytes" in str(err)
    assert peak < 4 << 20
    cls = _raw_tar(tmp_path / "c.tar", [("k.cls", b"1" * 65)])
    with pytest.raises(TarBoundsError, match="'k.cls' claims 65 bytes, more than the 64"):
        list(iter_shard(cls, caps=MemberCaps()))


def test_a_sample_is_capped_as_a_whole(tmp_path, monkeypatch):
    import avdata.shards.reader as reader
    from avdata.samples import iter_samples

    monkeypatch.setattr(reader, "SAMPLE_CAP", 1 << 20)  # 256 MiB in use; the rule is the same
    key, fields = _sample(0)
    extra = {f"part{i}.bin": bytes(400_000) for i in range(3)}  # each under its cap, 1.2 MB together
    folder = _folder(tmp_path / "s", {"train": [_sample(1), (key, {**fields, **extra})]})
    with pytest.raises(AvdataError, match="sample 'ev0000' holds more than 1,048,576 bytes"):
        list(iter_samples(open_location(folder), "train"))
    with pytest.raises(ShardReadError, match="sample 'ev0000' holds more than 1,048,576 bytes"):
        list(_stream(folder).iter_slot())
    assert "sample 'ev0000' holds more than" in verify_shards(folder, progress=False).problems[0][1]


def test_inspect_decodes_one_jpeg_frame_per_sample(tmp_path, one_cv2_thread):
    from avdata.shards.jpeg import decode_jpeg, encode_jpeg
    from avdata.summary import summarize

    side, k = 1024, 24
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    img = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1).astype(np.uint8)  # smooth: a small JPEG
    jpeg = encode_jpeg(img, 90)
    samples = [(f"clip{i}", {"cls": cls_bytes(i), "json": sample_json({"i": i}),
                             **{f"frames.{j}.jpg": jpeg for j in range(k)}}) for i in range(2)]
    features = {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                "frames.<i>.jpg": {"dtype": "uint8", "shape": ["K", side, side, 3]}}
    folder = _folder(tmp_path / "s", {"train": samples}, features=features)
    peak, out = _peak(lambda: summarize(folder, progress=False))
    frames = out["splits"]["train"]["read"]["fields"]["frames.<i>.jpg"]
    assert frames["shape_min"] == frames["shape_max"] == [k, side, side, 3] and frames["errors"] == 0
    decoded = decode_jpeg(jpeg)
    assert frames["value_min"] == int(decoded.min()) == 0 and frames["value_max"] == int(decoded.max()) >= 250
    # one decoded frame is 3 MiB; all 24 of a sample stacked were 72 MiB (twice that while stacking)
    assert peak < 24 << 20, peak


# --- trainer start-up linear in the shard count ---------------------------------------------------------


class _CountingList(list):
    """A list that counts the items read from it."""

    reads = 0

    def __iter__(self):
        for item in super().__iter__():
            type(self).reads += 1
            yield item

    def __getitem__(self, i):
        type(self).reads += len(super().__getitem__(i)) if isinstance(i, slice) else 1
        return super().__getitem__(i)


def test_slot_offsets_are_one_cumulative_pass():
    from scmrl.data.stream import slot_offsets

    n = 420_000
    counts = _CountingList([3] * n)
    _CountingList.reads = 0
    offsets = slot_offsets(counts)
    assert offsets[:4] == [0, 3, 6, 9] and offsets[-1] == 3 * (n - 1) and len(offsets) == n
    assert _CountingList.reads == n  # each count read once (the sum per shard read n^2 / 2 of them)


def test_the_stream_takes_its_offsets_from_the_one_pass(tmp_path, monkeypatch):
    import scmrl.data.stream as stream

    folder = _folder(tmp_path / "s", {"train": [_sample(i) for i in range(4)]})
    calls = []
    monkeypatch.setattr(stream, "slot_offsets", lambda counts: calls.append(list(counts)) or [0] * len(counts))
    assert len(list(_stream(folder).iter_slot())) == 4
    assert calls == [[4]]


# --- 2. labels, keys, splits ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, why", [(b"6", "class index 6 is out of range: the manifest lists 6 classes (0..5)"),
                                      (b"1000000000", "is not a non-negative integer"),
                                      (b"1e9", "class index b'1e9' is not a non-negative integer"),
                                      (b"-1", "class index b'-1' is not"),
                                      (b"-100", "class index b'-100' is not")])
def test_a_class_index_outside_the_classes_is_found_by_verify_and_the_trainer(tmp_path, cls, why):
    folder = _folder(tmp_path / "s", {"train": [_sample(0), _sample(1, cls=cls), _sample(2)]})
    report = verify_shards(folder, progress=False)
    assert len(report.problems) == 1 and report.problems[0][0] == "train-000000.tar"
    assert report.problems[0][1].startswith("sample 'ev0001': class index") and why in report.problems[0][1]
    with pytest.raises(AvdataError, match="sample ev0001 of .*train-000000.tar: bad field") as got:
        list(_stream(folder).iter_slot())
    assert why in str(got.value)


@pytest.mark.parametrize("name", ["../evil.cls", "/abs/evil.cls", "dir/evil.cls", "ev\x1b[2J\x9bx.cls"])
def test_sample_keys_the_writer_refuses_are_refused_when_read(tmp_path, name):
    folder = tmp_path / "s"
    folder.mkdir()
    key, fields = _sample(0)
    good = [(f"{key}.{f}", d) for f, d in fields.items()]
    evil_key = name.rsplit(".", 1)[0]
    evil = [(f"{evil_key}.{f}", d) for f, d in _sample(1)[1].items()]
    tar = _raw_tar(folder / "train-000000.tar", good + evil)
    _save(folder, {"train": [tar]})
    report = verify_shards(folder, progress=False)
    assert len(report.problems) == 1 and "is refused: keys hold only letters" in report.problems[0][1]
    printed = _printed(report)
    assert "\x1b" not in printed and "\x9b" not in printed
    if "\x1b" in name:
        assert "\\x1b[2J\\x9b" in printed
    with pytest.raises(AvdataError, match="is refused: keys hold only letters") as got:
        list(_stream(folder).iter_slot())
    assert "\x1b" not in str(got.value) and "\x9b" not in str(got.value)


def test_a_test_split_holding_training_samples_is_found_by_verify(tmp_path):
    train = [_sample(i) for i in range(4)]
    other = [_sample(2), _sample(9)]  # ev0002 is a training sample, written again into another shard
    folder = _folder(tmp_path / "s", {"train": train, "test": other})
    report = verify_shards(folder, progress=False)  # the manifest lists "test" first (sorted keys)
    assert report.problems == [("train-000000.tar", "sample key 'ev0002' is also in test-000000.tar (in split "
                                                    "'test' too): each sample must be in one split, once")]


def test_a_key_twice_in_one_split_is_found_by_verify_and_the_trainer(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    a = folder / "train-000000.tar"
    b = folder / "train-000001.tar"
    write_shard(a, [_sample(0), _sample(1)])
    write_shard(b, [_sample(2), _sample(1, cls=b"2")])  # other bytes, same key
    _save(folder, {"train": [a, b]})
    report = verify_shards(folder, progress=False)
    assert report.problems == [("train-000001.tar", "sample key 'ev0001' is also in train-000000.tar (twice in "
                                                    "this split): each sample must be in one split, once")]
    with pytest.raises(AvdataError, match=r"sample key 'ev0001' is read a second time, in shard .*train-000001"):
        list(_stream(folder).iter_slot())


def test_the_trainer_refuses_a_shard_listed_as_train_and_test(tmp_path):
    import json
    import shutil

    folder = _folder(tmp_path / "s", {"train": [_sample(i) for i in range(4)], "test": [_sample(9)]})
    m = json.loads((folder / "manifest.json").read_text())
    shutil.copy(folder / "train-000000.tar", folder / "test-000001.tar")  # the same bytes under a test name
    m["splits"]["test"] = dict(m["splits"]["train"], shards=[dict(m["splits"]["train"]["shards"][0],
                                                                   file="test-000001.tar")])
    (folder / "manifest.json").write_text(json.dumps(m))
    for split in ("train", "test"):
        with pytest.raises(AvdataError, match="shard 'train-000000.tar' is the same bytes as 'test-000001.tar', "
                                              "listed in splits 'test' and 'train' of the manifest"):
            _stream(folder, split)
    report = verify_shards(folder, progress=False)
    assert len(report.problems) == 4 and all(f == "train-000000.tar" for f, _ in report.problems)
    assert "sample key 'ev0000' is also in test-000001.tar (in split 'test' too)" in report.problems[0][1]


# --- control characters ----------------------------------------------------------------------------------


def test_text_from_the_manifest_is_printed_escaped_and_never_as_markup(tmp_path):
    import json

    from rich.console import Console

    from avdata.printable import printable
    from avdata.summary import print_shards_summary, summarize

    folder = _folder(tmp_path / "s", {"train": [_sample(i) for i in range(2)]})
    m = json.loads((folder / "manifest.json").read_text())
    m["dataset"] = "[red]x[/]\u202eevil"
    m["skipped"] = [{"key": "k", "split": "train", "reason": "bad\x1b]0;title\x07 clip\x9b2J"}]
    m["classes"][1] = "one\x9b31m"
    (folder / "manifest.json").write_text(json.dumps(m))
    buf = io.StringIO()
    print_shards_summary(summarize(folder, progress=False), Console(file=buf, width=300, force_terminal=True,
                                                            color_system=None))
    text = buf.getvalue()
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e")
    assert "[red]x[/]\\u202eevil" in text and "bad\\x1b]0;title\\x07 clip\\x9b2J" in text and "one\\x9b31m" in text
    assert printable("a\nb\tc" + "x" * 300, 10) == "a\\x0ab\\x09cxxxxx..."


# --- 3. a FIFO or folder where a shard should be ---------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
@pytest.mark.parametrize("what", ["fifo", "folder"])
def test_a_fifo_or_folder_in_place_of_a_shard_is_refused_at_once(tmp_path, what):
    from avdata.samples import iter_samples
    from avdata.shards.tar_list import manifest_of_files

    folder = _folder(tmp_path / "s", {"train": [_sample(i) for i in range(2)]})
    shard = folder / "train-000000.tar"
    shard.unlink()
    os.mkfifo(shard) if what == "fifo" else shard.mkdir()
    kind = "a FIFO (named pipe)" if what == "fifo" else "a folder"
    report = finishes(lambda: verify_shards(folder, progress=False))
    assert report.problems == [("train-000000.tar", f"cannot be opened ({shard}: is {kind}, not a shard file; "
                                                    "replace it with the .tar file (`avdata pull` fetches it))")]
    assert verify_shards(folder, quick=True, progress=False).problems == [("train-000000.tar", "not a regular file")]
    err = finishes(lambda: list(iter_samples(open_location(folder), "train")))
    assert isinstance(err, AvdataError) and f"{shard}: is {kind}" in str(err)
    attempts = []
    stream = _stream(folder)
    real_open = stream.source.open
    stream.source.open = lambda f: attempts.append(f) or real_open(f)
    err = finishes(lambda: list(stream.iter_slot()))
    assert isinstance(err, ShardReadError) and f"is {kind}" in str(err) and len(attempts) == 1  # no retries
    err = finishes(lambda: manifest_of_files([str(shard)], CLASSES))
    assert isinstance(err, AvdataError) and f"is {kind}" in str(err)


def test_the_contact_sheet_decodes_only_the_frame_it_draws(tmp_path, one_cv2_thread):
    from avdata.contact_sheet import choose_samples
    from avdata.shards.jpeg import encode_jpeg

    side, k = 1024, 24
    frames = [encode_jpeg(np.full((side, side, 3), 10 * j, np.uint8), 90) for j in range(k)]
    samples = [(f"clip{i}", {"cls": cls_bytes(i), "json": sample_json({"i": i}),
                             **{f"frames.{j}.jpg": frames[j] for j in range(k)}}) for i in range(2)]
    features = {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                "frames.<i>.jpg": {"dtype": "uint8", "shape": ["K", side, side, 3]}}
    folder = _folder(tmp_path / "s", {"train": samples}, features=features, classes=["a", "b"])
    peak, (_m, _split, rows) = _peak(lambda: choose_samples(folder, 1, "train"))
    drawn = rows[0][0][1]["frames.<i>.jpg"]
    assert drawn.shape == (k, side, side, 3) and int(drawn[k // 2].mean()) == 10 * (k // 2)
    assert peak < 24 << 20, peak  # two samples of one 3 MiB frame each (all 24 stacked: 72 MiB a sample)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_a_fifo_as_the_manifest_or_a_state_record_is_refused_at_once(tmp_path):
    """The small files every command reads first (manifest.json, the `.avdata/` records) go through the same
    regular-file open as shards: a FIFO there is named, not waited on."""
    from avdata.owned import read_json_record
    from avdata.shards.manifest import Manifest

    folder = _folder(tmp_path / "s", {"train": [_sample(i) for i in range(2)]})
    (folder / "manifest.json").unlink()
    os.mkfifo(folder / "manifest.json")
    err = finishes(lambda: Manifest.load(folder))
    assert isinstance(err, AvdataError) and "is a FIFO (named pipe), not a plain file" in str(err)
    (folder / ".avdata").mkdir(exist_ok=True)
    os.mkfifo(folder / ".avdata" / "owned.json")
    assert finishes(lambda: read_json_record(folder / ".avdata" / "owned.json")) is None


# --- 5. fields whose bytes are whole but whose content no sample holds (second round) --------------------

STATIC_FEATURES = {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                   "frames.npy": {"dtype": "uint8", "shape": ["K", "H", "W", 3]},
                   "spec.npy": {"dtype": "float32", "shape": [64, "T"]}}


def _npy_header_only(shape: str, descr: str = "<f4") -> bytes:
    """.npy bytes whose header declares `shape` and whose body is empty (numpy writes no such file)."""
    head = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    head += b" " * (63 - (10 + len(head)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head


def _static(i: int, **fields: bytes) -> tuple[str, dict[str, bytes]]:
    base = {"cls": cls_bytes(i % 2), "json": sample_json({"i": i}),
            "frames.npy": encode_npy(np.full((2, 12, 16, 3), 40, np.uint8)),
            "spec.npy": encode_npy(np.zeros((64, 9), np.float32))}
    return f"clip{i:04d}", {**base, **fields}


@pytest.mark.parametrize("field, data, why", [
    # each passed the member caps and reached the batch as other values or a traceback before
    ("frames.npy", encode_npy(np.full((2, 12, 16, 3), 40, np.uint16)), "dtype uint16, not uint8"),
    ("frames.npy", encode_npy(np.zeros((2, 0, 16, 3), np.uint8)), "shape (2, 0, 16, 3)"),  # cv2.error
    ("frames.npy", encode_npy(np.zeros((2, 12, 16, 3), "<U1")), "dtype <U1"),  # TypeError in torch
    ("spec.npy", encode_npy(np.zeros((0, 0), np.float32)), "spec.npy of shape (0, 0)"),  # cv2.error
    ("spec.npy", encode_npy(np.zeros((64, 9), np.complex64)), "dtype complex64, not float"),
    ("spec.npy", encode_npy(np.full((64, 9), -np.inf, np.float32)), "NaN or infinite values"),  # a NaN loss
    ("spec.npy", _npy_header_only("(100000000000000000000, 1)"), "declares an array of shape"),  # OverflowError
    ("json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError
], ids=["uint16-frames", "empty-frames", "str-frames", "empty-spec", "complex-spec", "inf-spec", "huge-header",
        "deep-json"])
def test_a_static_field_no_sample_holds_is_named_by_the_trainer(tmp_path, field, data, why):
    folder = _folder(tmp_path / "s", {"train": [_static(0), _static(1, **{field: data})]},
                     features=STATIC_FEATURES, classes=["a", "b"])
    for train in (True, False):
        cfg = StreamConfig(kind="static", image_size=8, base_size=12, seed=1, train=train, retries=0)
        with pytest.raises(AvdataError, match="sample clip0001 of .*train-000000.tar: bad field") as err:
            list(ShardStream(open_location(folder), "train", cfg).iter_slot())
        assert why in str(err.value)


def test_event_counts_that_are_no_counts_are_named_by_the_trainer(tmp_path):
    """float16 has uint16's size, so NaN counts pass the member caps; zero bins are a multiple of any T."""
    nan = encode_npy(np.full((8, 2, 28, 28), np.nan, np.float16))
    empty = {"visual.npy": encode_npy(np.zeros((0, 2, 28, 28), np.uint16)),
             "audio.npy": encode_npy(np.zeros((0, 64), np.uint16))}
    for fields, why in (({"visual.npy": nan}, "visual.npy (float16) and audio.npy (uint16) are not event counts"),
                        (empty, "visual.npy (0, 2, 28, 28) and audio.npy (0, 64) are not")):
        key, good = _sample(1)
        folder = _folder(tmp_path / str(len(fields)), {"train": [_sample(0), (key, {**good, **fields})]})
        with pytest.raises(AvdataError, match=f"sample {key} of .*: bad field") as err:
            list(_stream(folder).iter_slot())
        assert why in str(err.value)


def test_inspect_and_the_contact_sheet_pass_over_fields_no_sample_holds(tmp_path):
    """A json nested 100,000 deep is one unreadable field of inspect's table (a RecursionError ended it);
    a frames field of zero frames is drawn as missing (an IndexError ended the contact sheet)."""
    from avdata.contact_sheet import choose_samples
    from avdata.summary import summarize

    folder = _folder(tmp_path / "s", {"train": [
        _static(0, json=b"[" * 100_000 + b"]" * 100_000),
        _static(1, **{"frames.npy": encode_npy(np.zeros((0, 12, 16, 3), np.uint8))})]},
        features=STATIC_FEATURES, classes=["a", "b"])
    summary = summarize(folder)
    json_stats = summary["splits"]["train"]["read"]["fields"]["json"]
    assert (json_stats["count"], json_stats["errors"]) == (2, 1)
    _m, _split, rows = choose_samples(folder, 1, "train")
    assert [sorted(r[0][1]) for r in rows] == [["frames.npy", "spec.npy"], ["spec.npy"]]


def _tar_with_header(path: Path, pax: dict[str, str] | None, size_field: bytes | None) -> Path:
    """A sample's cls member whose size is given by a pax record or a raw (checksummed) ustar size field,
    followed by a 24 MiB member: what a reader that believed the size would read at once."""
    with open(path, "wb") as f:
        info = tarfile.TarInfo("k.cls")
        info.size, info.pax_headers = 1, pax or {}
        head = bytearray(info.tobuf(tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT))
        if size_field is not None:
            h = len(head) - 512  # the member's own header block
            head[h + 124:h + 136] = size_field.ljust(12, b"\0")
            head[h + 148:h + 156] = b" " * 8
            head[h + 148:h + 156] = b"%06o\0 " % sum(head[h:h + 512])
        f.write(bytes(head) + b"1".ljust(512, b"\0"))
        big = tarfile.TarInfo("k.visual.npy")
        big.size = 24 << 20
        f.write(big.tobuf(tarfile.USTAR_FORMAT))
        f.seek(24 << 20, os.SEEK_CUR)
        f.write(b"\0" * 1024)
    return path


@pytest.mark.parametrize("pax, size_field, why", [
    ({"size": "-1"}, None, "a pax size record that is not a number of bytes ('-1')"),
    (None, b"-0000001000", "a header number is not octal (b'-0000001000')"),
    ({"size": "9" * 5000}, None, "a pax size record that is not a number of bytes ('99999999999999999999')"),
    ({"size": "abc"}, None, "a pax size record that is not a number of bytes ('abc')"),
], ids=["pax-negative", "octal-negative", "pax-5000-digits", "pax-letters"])
def test_a_member_size_that_is_no_size_is_a_damaged_header(tmp_path, pax, size_field, why):
    """A negative size made the reader read(-1): the rest of the shard at once, past every member cap
    (peak 48 MB here for a 64-byte cls); a size that is no number ended verify and inspect with a
    ValueError traceback."""
    from avdata.samples import iter_samples
    from avdata.shards.reader import TarHeaderError, iter_shard
    from avdata.shards.member_caps import MemberCaps

    folder = tmp_path / "s"
    folder.mkdir()
    tar = _tar_with_header(folder / "train-000000.tar", pax, size_field)
    peak, err = _peak(lambda: list(iter_shard(tar, caps=MemberCaps(EVENT_FEATURES))))
    assert isinstance(err, TarHeaderError) and why in str(err)
    assert peak < 4 << 20
    _save(folder, {"train": [tar]})
    report = verify_shards(folder, progress=False)
    assert [(f, w.split(" (")[0]) for f, w in report.problems] == [
        ("train-000000.tar", "damaged tar: bad member header after 0 sample(s)")]
    assert why in report.problems[0][1]
    with pytest.raises(AvdataError, match="cannot be read to the end"):
        list(iter_samples(open_location(folder), "train"))


@pytest.mark.parametrize("bins", [10 ** 7, 0])
def test_a_manifest_claiming_millions_of_time_bins_is_refused_before_the_model_is_sized(tmp_path, bins):
    """The trainer takes an event dataset's stored bins as its time steps, and its memory probe allocated
    T x batch x 2 x 28 x 28 floats (10**7 bins: 125 GB at batch 2) before any sample could contradict them."""
    from scmrl.train.config import TrainConfig, model_config

    features = {**EVENT_FEATURES, "visual.npy": {"dtype": "uint16", "shape": [bins, 2, 28, 28]}}
    folder = _folder(tmp_path / "s", {"train": [_sample(0)]}, features=features)
    manifest = Manifest.load(folder)
    manifest.dataset = "mnistdvs-ntidigits"  # whose model takes the stored bins as T
    why = rf"visual.npy has {bins:,} time bins, not 1 to 21,398"
    with pytest.raises(AvdataError, match=why):
        model_config(TrainConfig(shards=str(folder), out=str(tmp_path / "run")), manifest)
    with pytest.raises(AvdataError, match=why):
        _stream(folder)
    from avdata.shards.manifest import MAX_EVENT_BINS

    assert MAX_EVENT_BINS == 21_398  # 64 MiB of uint16 [2, 28, 28] bins: the most a member may hold


def test_a_member_twice_in_its_sample_is_found_by_verify_inspect_and_the_trainer(tmp_path):
    """Two `cls` members in one sample passed verify and inspect (which kept the second), while the trainer
    failed with a retried ValueError that blamed the server or disk: readers disagreed on the label."""
    from avdata.samples import iter_samples

    folder = tmp_path / "s"
    folder.mkdir()
    (k, fields), (k1, fields1) = _sample(0), _sample(1)
    members = [(f"{k}.{n}", v) for n, v in fields.items()] + [(f"{k}.cls", cls_bytes(5))]
    tar = _raw_tar(folder / "train-000000.tar", members + [(f"{k1}.{n}", v) for n, v in fields1.items()])
    _save(folder, {"train": [tar]})
    why = "member 'ev0000.cls' comes twice in its sample: a damaged or tampered shard"
    assert why in verify_shards(folder, progress=False).problems[0][1]
    with pytest.raises(AvdataError, match=why):
        list(iter_samples(open_location(folder), "train"))
    with pytest.raises(ShardReadError, match=rf"train-000000.tar is damaged or tampered with \({why}\)"):
        list(_stream(folder).iter_slot())


def test_verify_checks_every_shard_there_whatever_the_pulled_splits_record_says(tmp_path):
    """A record of `pull --split train` (stale, or in a folder copied from elsewhere) made verify skip the
    test split as "not pulled" and pass, though its damaged shard was there for the trainer to read."""
    folder = _folder(tmp_path / "s", {"train": [_sample(0)], "test": [_sample(1)]})
    (folder / ".avdata").mkdir(exist_ok=True)
    (folder / ".avdata" / "pulled-splits.json").write_text('["train"]')
    test = folder / "test-000000.tar"
    data = bytearray(test.read_bytes())
    data[600] ^= 0xFF
    test.write_bytes(bytes(data))
    report = verify_shards(folder, progress=False)
    assert report.not_pulled == [] and sorted(report.splits) == ["test", "train"]
    assert [(f, w.split(" ")[0]) for f, w in report.problems] == [("test-000000.tar", "sha256")]
    test.unlink()  # with none of its shards here the split was never pulled: named, not missing
    report = verify_shards(folder, progress=False)
    assert report.not_pulled == ["test"] and report.problems == []


def test_the_runs_own_reports_draw_manifest_names_as_text(tmp_path, monkeypatch):
    """A dataset or class name with "[/x]" ended scmrl-train (after the last epoch) and scmrl-eval with a
    rich MarkupError; one with "$\\frac{" ended the curves and confusion plots with a matplotlib ValueError
    (mathtext), a brace-nested one with a RecursionError."""
    import scmrl.train.report as report

    history = [{"epoch": 0, "loss": 1.0, "train_acc": 0.5, "test_acc": 0.5}]
    name = "x[/bad]y$\\frac{1}{$" + "{" * 300 + "}" * 300 + "$"
    assert report.plot_curves(history, tmp_path / "c.png", f"scmrl on {name}").stat().st_size > 0
    conf = report.plot_confusion([[1, 0], [0, 1]], ["$\\frac{", "a$^{$"], tmp_path / "m.png", "test $\\frac{")
    assert conf.stat().st_size > 0
    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setattr(report, "console", Console(file=buf, width=200))  # the module's name, not the shared one
    report.print_run_results({"model": "scmrl", "dataset": name, "epochs": 2})
    report.print_eval({"accuracy": 0.5, "correct": 1, "samples": 2, "classes": ["[/c]", "a\x1bb"],
                       "class_samples": [1, 1], "per_class": [1.0, 0.0]}, "test")
    text = buf.getvalue()
    assert "x[/bad]y$\\frac{1}{$" in text and "[/c]" in text and "a\\x1bb" in text


def test_the_contact_sheet_draws_manifest_names_as_text(tmp_path):
    """`inspect --png` on a manifest whose dataset or class names hold "$\\frac{" ended with matplotlib's
    mathtext ValueError (one class with samples, one without: both texts)."""
    import json

    from avdata.contact_sheet import contact_sheet

    folder = _folder(tmp_path / "s", {"train": [_sample(0)]})
    m = json.loads((folder / "manifest.json").read_text())
    m["dataset"] = "d$\\frac{$"
    m["classes"][:2] = ["a$\\frac{1}{$", "b$^{$"]
    (folder / "manifest.json").write_text(json.dumps(m))
    assert contact_sheet(folder, tmp_path / "sheet.png", per_class=1).stat().st_size > 0
