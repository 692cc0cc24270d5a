"""The shard tar reader against Python's tarfile: same members and bytes, for our shards and for tars
written in the GNU and pax formats (long names, directories, links); damage raises tarfile.ReadError."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from avdata.errors import AvdataError, FieldError
from avdata.shards.tar import ShardWriter, write_shard
from avdata.shards import reader as tar_reader
from avdata.shards.reader import iter_tar_files


def _tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg() and not m.name.startswith("__")]


def _ours(data: bytes) -> list[tuple[str, bytes]]:
    return [(f["fname"], bytes(f["data"])) for f in iter_tar_files(io.BytesIO(data))]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_same_members_as_tarfile(fmt: int) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name: str, payload: bytes, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(payload) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)

        add("dir", b"", tarfile.DIRTYPE)
        add("a.cls", b"3")
        add("a.npy", rng.bytes(512 * 3))  # exactly whole blocks: no padding
        add("b.cls", b"")  # empty member
        add("__meta__.json", b"{}")
        add("x" * 60 + "/" + "y" * 70 + ".frames.npy", rng.bytes(1000))  # ustar prefix or long name
        if fmt != tarfile.USTAR_FORMAT:
            add("z" * 130 + ".spec.npy", rng.bytes(777))  # needs a GNU long name or a pax path
            add("ünïcode-clip.json", "{\"é\": 1}".encode())
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "a.cls"
        tar.addfile(info)
    data = buf.getvalue()
    ours = _ours(data)
    assert ours == _tarfile_members(data)
    assert [n for n, _ in ours][:3] == ["a.cls", "a.npy", "b.cls"]
    assert len(ours) == (4 if fmt == tarfile.USTAR_FORMAT else 6)


def test_reads_shard_writer_output(tmp_path: Path) -> None:
    path = tmp_path / "train-000000.tar"
    with ShardWriter(path) as writer:
        for i in range(1, 6):
            writer.write(f"clip{i}", {"cls": b"1", "spec.npy": np.arange(i * 100, dtype=np.float32).tobytes()})
        writer.close()
    data = path.read_bytes()
    ours = _ours(data)
    assert ours == _tarfile_members(data)
    assert len(ours) == 10 and isinstance(next(iter_tar_files(io.BytesIO(data)))["data"], bytes)


def test_pre_encoded_samples_give_the_same_shard(tmp_path: Path, monkeypatch) -> None:
    import avdata.shards.tar
    from avdata.shards.tar import encode_sample

    monkeypatch.setattr(avdata.shards.tar, "WRITEBACK_BYTES", 1000)  # early write-back after every sample

    samples = [(f"clip{i}", {"cls": str(i).encode(), "x.npy": bytes(range(i * 37 % 256)) * 3}) for i in range(4)]
    with ShardWriter(tmp_path / "a.tar") as w:
        for key, fields in samples:
            w.write(key, fields)
        a = w.close()
    with ShardWriter(tmp_path / "b.tar") as w:  # as the prepare engine's parent gets them from workers
        for key, fields in samples:
            w.write_encoded(key, [b"".join(encode_sample(key, fields))])
        b = w.close()
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert (a.sha256, a.num_samples) == (b.sha256, b.num_samples) and b.num_samples == 4
    with ShardWriter(tmp_path / "c.tar") as w:
        with pytest.raises(AvdataError, match="whole tar blocks"):
            w.write_encoded("clip9", [b"x" * 100])
        w.write_encoded("clip9", [bytes(512)])
        with pytest.raises(AvdataError, match="duplicate sample key 'clip9' in c.tar"):
            w.write_encoded("clip9", [bytes(512)])


def _sample_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, size in (("a.cls", 1), ("a.npy", 3000), ("b.cls", 1)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(b"7" * size))
    return buf.getvalue()


@pytest.mark.parametrize("cut", [100, 512 + 1, 1024 + 2000, 1024 + 3072 + 512 + 10])
def test_truncated_stream_raises(cut: int) -> None:
    data = _sample_tar()[:cut]
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
        list(iter_tar_files(io.BytesIO(data)))


def test_damaged_header_raises() -> None:
    data = bytearray(_sample_tar())
    data[1024 + 512 + 3072 + 10] ^= 0xFF  # a byte of b.cls's header (after a.cls and a.npy)
    with pytest.raises(tarfile.ReadError, match="checksum at member 2"):
        list(iter_tar_files(io.BytesIO(bytes(data))))
    with pytest.raises(tarfile.ReadError, match="not a tar"):
        list(iter_tar_files(io.BytesIO(b"<html>not found</html>" + bytes(600))))


@pytest.mark.parametrize("preadv", [True, False])
def test_lazy_member_reads_into_writable_arrays(tmp_path: Path, monkeypatch, preadv: bool) -> None:
    """A member left in the file (local shard) reads any byte range into a writable array, equal to
    tarfile's bytes; a range outside the member or a file cut short after the header raises. Also where
    the OS has pread but no preadv."""
    monkeypatch.setattr(tar_reader, "_HAS_PREADV", preadv and hasattr(os, "preadv"))
    path = tmp_path / "s.tar"
    path.write_bytes(_sample_tar())
    with open(path, "rb") as f:
        files = list(iter_tar_files(f, lazy=lambda name: name.endswith(".npy")))
        member = files[1]["data"]
        arr = member.read_array(100, 2000)
        assert arr.dtype == np.uint8 and arr.shape == (2000,) and arr.flags.writeable
        assert arr.tobytes() == b"7" * 2000 == member.read(100, 2000)
        with pytest.raises(FieldError, match="outside"):
            member.read_array(2999, 2)
        with open(path, "r+b") as g:  # the file shrinks while the shard is read
            g.truncate(1024 + 1500)
        with pytest.raises(tarfile.ReadError, match="unexpected end of data in a.npy"):
            member.read_array(0, 3000)


def test_shard_headers_are_the_documented_contract(tmp_path) -> None:
    """README's shard format: every member has mtime 0, uid/gid 0, empty owner names, mode 0644 and is a
    plain file named <key>.<field>, in the order given; a key holding a dot is refused (keys contain none)."""
    entry = write_shard(tmp_path / "train-000000.tar", [
        ("a_1", {"cls": b"3", "json": b"{}", "frames.0.jpg": b"\xff\xd8x"}),
        ("b-2", {"cls": b"1", "json": b"{}", "frames.0.jpg": b"\xff\xd8y"})])
    assert entry.num_samples == 2 and entry.bytes % tarfile.RECORDSIZE == 0
    with tarfile.open(tmp_path / "train-000000.tar") as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["a_1.cls", "a_1.json", "a_1.frames.0.jpg",
                                         "b-2.cls", "b-2.json", "b-2.frames.0.jpg"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in members} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)}
    with pytest.raises(AvdataError, match="no dots"):
        write_shard(tmp_path / "test-000000.tar", [("a.1", {"cls": b"0"})])
    assert not list(tmp_path.glob("test-000000.tar*"))  # neither the shard nor its .tmp
