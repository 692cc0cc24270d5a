"""The one shard reader: the regular files of an uncompressed tar (a WebDataset shard), one copy each.

Everything that reads shards goes through here: verify (streamed through sha256), inspect and the
contact sheet (`iter_shard`: samples as webdataset groups them), and the trainer (`iter_tar_files`).

The training input pipeline reads about 1 MB per CREMA-D sample; Python's ``tarfile`` in stream mode
copies each member three times (chunked reads, a join, a slice) and parses every header field, which
cost more than everything else the pipeline does per sample.  This reader parses only what a shard
needs (name, size, type; ustar prefix, GNU long names and pax ``path``/``size`` records, so shards from
other tar writers read too), checks each header's checksum, and reads each member straight into its
own ``bytes`` object (``read(n)`` of a buffered file does not zero it first).

A stream that ends inside a member or before the end-of-archive blocks raises ``tarfile.ReadError``
naming what was cut short (:class:`TarCutShortError`); the trainer turns that into a retry and then a
clear error, verify into a "truncated" problem. A header with a bad checksum, or a size or pax record that
is not a plain number (a negative one would make ``read`` take the rest of the stream at once), raises
:class:`TarHeaderError`.

Shards come from other people, so no header is believed beyond what the archive can hold: a member
larger than what is left of the shard's declared size (the manifest's), or an extended header over
MAX_EXTENDED_HEADER, raises :class:`TarBoundsError` before anything is read; one larger than what is
left of the file or HTTP response raises ``tarfile.ReadError`` like any file cut short. Callers that know
the manifest pass its :class:`~avdata.shards.member_caps.MemberCaps`: a member larger than what its field
may hold raises :class:`TarBoundsError` before its body is read, and so does one that takes its sample's
members together beyond SAMPLE_CAP; so does, always, a name its sample already has (readers would
disagree on which counts). A path that is not a regular file (a FIFO, a device, a folder) is refused by
:func:`open_regular`."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from typing import IO, Any, Callable, Iterator

import numpy as np

from avdata.errors import AvdataError, FieldError
from avdata.shards.member_caps import SAMPLE_CAP

__all__ = ["iter_tar_files", "iter_shard", "MemberSlice", "TarBoundsError", "TarCutShortError", "TarHeaderError",
           "stream_size", "open_regular", "NotAFileError"]

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_HAS_PREADV = hasattr(os, "preadv")
#: GNU long names and pax records are a few hundred bytes; a larger one is a damaged or hostile header.
MAX_EXTENDED_HEADER = 1 << 20


class TarBoundsError(tarfile.ReadError):
    """A header claims more than the archive can hold, or a member its sample has: damaged or hostile."""


class TarCutShortError(tarfile.ReadError):
    """The stream ended inside a member or before the end-of-archive blocks."""


class TarHeaderError(tarfile.ReadError):
    """A member header with a bad checksum: not a tar file, or a damaged one."""


class NotAFileError(AvdataError):
    """A FIFO, device, socket or folder where a shard file should be (no retry helps)."""


def _kind_of(mode: int) -> str:
    return ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def open_regular(path: str | os.PathLike, buffering: int = 1 << 20,
                 expected: str = "a shard file; replace it with the .tar file (`avdata pull` fetches it)"
                 ) -> IO[bytes]:
    """`path` opened for reading when it is a regular file; NotAFileError naming it otherwise.

    Opened without blocking (a FIFO with no writer would block the open itself), then checked with fstat
    (no window between a check and the open), then switched back to blocking reads."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotAFileError(f"{path}: is {_kind_of(mode)}, not {expected}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str | os.PathLike, limit: int) -> bytes | None:
    """The bytes of a small local file (a manifest, a state record) someone else may have made, or None when
    it holds more than `limit`: opened as a regular file (`open_regular`), read in 1 MiB pieces so a small
    file costs no more than its size."""
    buf = bytearray()
    with open_regular(path, expected="a plain file") as f:
        while len(buf) <= limit and (chunk := f.read(1 << 20)):
            buf += chunk
    return None if len(buf) > limit else bytes(buf)


def stream_size(stream: IO[bytes]) -> int | None:
    """The size of what `stream` will deliver, when known: a regular file's size or an HTTP response's
    Content-Length."""
    try:
        st = os.fstat(stream.fileno())
        if st.st_size > 0 and (st.st_mode & 0o170000) == 0o100000:
            return st.st_size - (stream.tell() if stream.seekable() else 0)
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        pass
    headers = getattr(stream, "headers", None)
    try:
        length = headers.get("Content-Length") if headers is not None else None
        return int(length) if length is not None else None
    except (TypeError, ValueError):
        return None


def _read_exact(stream: IO[bytes], size: int, what: str) -> bytes:
    # read(n) of a buffered file fills a new, uninitialised bytes object straight from the file
    data = stream.read(size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            raise TarCutShortError(f"unexpected end of data in {what} ({got} of {size} bytes)")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _skip(stream: IO[bytes], size: int, what: str) -> None:
    while size > 0:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise TarCutShortError(f"unexpected end of data in {what}")
        size -= len(chunk)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    if (text and not text.isdigit()) or b"8" in text or b"9" in text:  # int(, 8) takes "-7", "0o7", "1_0"
        raise TarHeaderError(f"a header number is not octal ({text[:20]!r}): not a tar file, or a damaged one")
    return int(text, 8) if text else 0


_PAX_NUMBER = re.compile(rb"[0-9]{1,20}")  # int() takes "-1", " 1", "1_0" and 4,300 digits


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a pax header (`<length> <key>=<value>\n` each); TarHeaderError for a damaged one."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        digits = data[pos:space]
        length = int(digits) if space >= 0 and _PAX_NUMBER.fullmatch(digits) else 0
        if space < 0 or length <= space - pos or pos + length > len(data):
            raise TarHeaderError(f"a damaged pax record at byte {pos} of an extended header")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    size = records.get("size")
    if size is not None and not _PAX_NUMBER.fullmatch(size.encode("utf-8", "surrogateescape")):
        raise TarHeaderError(f"a pax size record that is not a number of bytes ({size[:20]!r})")
    return records


class MemberSlice:
    """A member of a local tar left unread: the reader skips it and the consumer reads just the part it
    needs (e.g. one of K stored frames) with ``os.preadv``, while the file is still open."""

    __slots__ = ("fd", "offset", "size", "name")

    def __init__(self, fd: int, offset: int, size: int, name: str) -> None:
        self.fd, self.offset, self.size, self.name = fd, offset, size, name

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        length = self.size - start if length is None else length
        return self.read_array(start, length).tobytes()

    def read_array(self, start: int, length: int) -> np.ndarray:
        """Bytes ``start..start+length`` straight into a new writable uint8 array (``os.preadv``): no
        intermediate bytes object, and tensors made from it need no copy to be writable."""
        if start < 0 or length < 0 or start + length > self.size:
            raise FieldError(f"{self.name}: bytes {start}..{start + length} outside its {self.size}")
        out = np.empty(length, dtype=np.uint8)
        done = 0
        while done < length:  # a read may return less; nothing at all means the file is cut short
            pos = self.offset + start + done
            if _HAS_PREADV:
                got = os.preadv(self.fd, [out.data[done:]], pos)
            else:  # an OS without preadv: one more copy
                chunk = os.pread(self.fd, length - done, pos)
                got = len(chunk)
                out[done:done + got] = np.frombuffer(chunk, dtype=np.uint8)
            if not got:
                raise tarfile.ReadError(f"unexpected end of data in {self.name}")
            done += got
        return out


def _local_fd(stream: IO[bytes]) -> int | None:
    """The descriptor members can be read from on demand; None where the OS has no pread (Windows)."""
    if not hasattr(os, "pread"):
        return None
    try:
        return stream.fileno() if stream.seekable() else None
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def iter_tar_files(stream: IO[bytes], lazy: Callable[[str], bool] | None = None,
                   limit: int | None = None, skip: Callable[[str], bool] | None = None,
                   caps: Callable[[str], int] | None = None) -> Iterator[dict[str, Any]]:
    """The regular files of a tar stream in order, as ``{"fname": name, "data": bytes}`` (what
    webdataset's ``group_by_keys`` takes); directories, links and ``__meta__`` files are skipped.

    ``lazy(name)`` true and a local file: ``data`` is a :class:`MemberSlice` instead of the bytes (a cut
    short file is still caught, at the next header).

    ``skip(name)`` true: the member's bytes are read past in chunks (never held whole) and ``data`` is
    None (verify only counts samples).

    ``limit``: the most bytes the archive may hold (the manifest's size of the shard): a member beyond it
    raises TarBoundsError. One beyond what the stream holds (:func:`stream_size`) raises ReadError, as
    a cut-short file does.

    ``caps(name)``: the most bytes the member may hold (`avdata.shards.member_caps.MemberCaps`); a larger
    one raises TarBoundsError before its body is read, skipped or not, and so does a member that takes the
    members of its sample (consecutive names with the same key) beyond SAMPLE_CAP together."""
    fd = _local_fd(stream) if lazy is not None else None
    actual = stream_size(stream)
    pos = 0  # bytes of the archive consumed so far

    def check(size: int, what: str, cap: int | None = None) -> None:
        if cap is not None and size > cap:
            raise TarBoundsError(f"{what} claims {size:,} bytes, more than the {cap:,} an extended header may "
                                 "hold: a damaged or tampered shard")
        if limit is not None and size > limit - pos:
            raise TarBoundsError(f"{what} claims {size:,} bytes, more than the {max(limit - pos, 0):,} left in "
                                 f"the archive ({limit:,} bytes): a damaged or tampered shard")
        if actual is not None and size > actual - pos:  # a file cut short (or still arriving): may be retried
            raise TarCutShortError(f"unexpected end of data in {what}: it claims {size:,} bytes, "
                                    f"{max(actual - pos, 0):,} are left")

    long_name: str | None = None
    pax: dict[str, str] = {}
    index = 0
    sample, held, names = "", 0, set[str]()  # the current sample's key, bytes handed out whole, member names
    while True:
        header = _read_exact(stream, BLOCK, f"the header of member {index}")
        pos += BLOCK
        if not any(header):
            return  # end-of-archive block (a second one may follow; nothing after it is read)
        stored = _number(header[148:156])
        if stored != sum(header) - sum(header[148:156]) + 8 * 32:
            raise TarHeaderError(f"bad header checksum at member {index}: not a tar file, or a damaged one")
        kind = bytes(header[156:157])
        name = _text(header[0:100])
        if header[257:262] == b"ustar" and header[345]:
            name = f"{_text(header[345:500])}/{name}"
        size = _number(header[124:136])
        if kind in (b"L", b"x", b"g"):  # metadata for the next member (GNU long name, pax) or global pax
            check(size, f"the extended header of member {index}", MAX_EXTENDED_HEADER)
            pos += size + (-size % BLOCK)
            data = _read_exact(stream, size, f"the extended header of member {index}")
            _skip(stream, -size % BLOCK, f"the extended header of member {index}")
            if kind == b"L":
                long_name = _text(data)
            elif kind == b"x":
                pax = _pax_records(data)
            continue
        name = pax.get("path", long_name or name)
        size = int(pax.get("size", size))
        long_name, pax = None, {}
        index += 1
        check(size, f"member {name!r}")
        if kind in _REGULAR:
            key = name.partition(".")[0]
            if key != sample:
                sample, held, names = key, 0, set()
            if name in names:  # readers would disagree on which one counts
                raise TarBoundsError(f"member {name!r} comes twice in its sample: a damaged or tampered shard")
            names.add(name)
            if caps is not None:
                if size > caps(name):
                    raise TarBoundsError(f"member {name!r} claims {size:,} bytes, more than the {caps(name):,} "
                                         "its field may hold by the manifest's features: a damaged or tampered shard")
                held += size
                if held > SAMPLE_CAP:
                    raise TarBoundsError(f"sample {key!r} holds more than {SAMPLE_CAP:,} bytes: a damaged or "
                                         "tampered shard")
        pos += size + (-size % BLOCK)
        if kind in _REGULAR:
            if fd is not None and lazy is not None and lazy(name):
                member = MemberSlice(fd, stream.tell(), size, name)
                stream.seek(size + (-size % BLOCK), os.SEEK_CUR)
                yield {"fname": name, "data": member}
                continue
            if skip is not None and skip(name):
                _skip(stream, size + (-size % BLOCK), name)
                if not name.startswith("__"):
                    yield {"fname": name, "data": None}
                continue
            data = _read_exact(stream, size, name)
            _skip(stream, -size % BLOCK, name)
            if not name.startswith("__"):
                yield {"fname": name, "data": data}
        else:
            _skip(stream, size + (-size % BLOCK), name)


def iter_shard(stream: IO[bytes] | str | os.PathLike, limit: int | None = None,
               caps: Callable[[str], int] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) of a shard (an open stream or a path) in file order, grouped as webdataset
    groups them (consecutive members with the same name up to its first dot). Raises tarfile.ReadError
    on a cut or damaged shard, TarBoundsError for a member or sample over its cap."""
    if isinstance(stream, (str, os.PathLike)):
        with open_regular(stream) as f:
            yield from iter_shard(f, limit, caps)
        return
    current: str | None = None
    fields: dict[str, bytes] = {}
    for member in iter_tar_files(stream, limit=limit, caps=caps):
        key, _, field = member["fname"].partition(".")
        if key != current:
            if current is not None:
                yield current, fields
            current, fields = key, {}
        fields[field] = member["data"]
    if current is not None:
        yield current, fields
