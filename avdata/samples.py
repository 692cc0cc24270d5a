"""Samples of a shards folder read back as raw fields, for the tools that look at them (inspect, the
contact sheet): one split in shard order, and each sample's class index.

Also the rules a sample from a stranger's shard must meet wherever it is read (verify and the trainer):
its key (`key_problem`: the writer's rule, `avdata.shards.tar.KEY_RE`) and its class index
(`class_index`: a plain decimal integer below the number of classes), and verify's checks of both over
a whole folder, keys found twice included (`SampleChecks`)."""

from __future__ import annotations

import http.client
import re
import tarfile
import time
import urllib.error
from typing import Any, Iterator

from avdata.errors import AvdataError, FieldError
from avdata.printable import printable
from avdata.shards.location import ShardsLocation
from avdata.shards.reader import TarCutShortError, iter_shard
from avdata.shards.tar import KEY_RE

_CLS = re.compile(rb"\s*([0-9]{1,9})\s*")
#: Sample problems (bad keys, labels, repeats) listed per shard; the count says how many there are.
MAX_SAMPLE_PROBLEMS = 5
#: Further reads of a remote shard whose read failed in a way a server can fail once (an error status, a
#: dropped connection): verify, inspect and the contact sheet must not call an intact shard damaged.
REMOTE_RETRIES = 3
#: Seconds before the first read again; doubled each time.
RETRY_DELAY = 1.0


def may_pass(exc: BaseException | None) -> bool:
    """Whether a remote read's failure may pass on another try: not a missing object or refused access."""
    return not isinstance(exc, urllib.error.HTTPError) or exc.code >= 500 or exc.code in (408, 425, 429)


def retry_pause(attempt: int) -> None:
    """Wait before read `attempt` (1, 2, ...) of a remote shard."""
    time.sleep(RETRY_DELAY * 2 ** (attempt - 1))


def key_problem(key: str) -> str | None:
    """Why `key` is not a sample key a shard may hold (what the shard writer accepts: letters, digits,
    '_' and '-'; so no dots, no '/' or '..', nothing absolute, no control characters), or None."""
    if KEY_RE.fullmatch(key):
        return None
    return (f"sample key {printable(repr(key))} is refused: keys hold only letters, digits, '_' and '-' "
            "(no dots, '/', '..', absolute paths or control characters)")


def class_index(data: bytes, num_classes: int) -> int:
    """The class index a `cls` member holds; FieldError saying why when it is not a plain decimal integer
    in 0..num_classes-1 (a -1 or -100 would be ignored by the loss, 1e9 would index past the classes)."""
    m = _CLS.fullmatch(bytes(data))
    if not m:
        raise FieldError(f"class index {printable(repr(bytes(data)[:40]))} is not a non-negative integer")
    value = int(m.group(1))
    if value >= num_classes:
        raise FieldError(f"class index {value} is out of range: the manifest lists {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return value


def iter_samples(loc: ShardsLocation, split: str, limit: int | None = None
                 ) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(shard file, key, {field: bytes}) of a split in shard order; at most `limit` samples.

    A shard that cannot be read to the end raises AvdataError naming it (run `avdata verify`); a remote one
    is first read again (REMOTE_RETRIES) when its read failed as a server can fail once, going on after
    the samples already handed out.
    """
    n = 0
    if limit is not None and limit <= 0:
        return
    caps = loc.caps()
    for shard in loc.shards(split):
        done = 0  # samples of this shard handed out
        tries = REMOTE_RETRIES + 1 if loc.remote else 1
        for attempt in range(tries):
            if attempt:
                retry_pause(attempt)
            try:
                fileobj = loc.open(shard.file)
            except AvdataError as exc:
                if attempt + 1 < tries and may_pass(exc.__cause__):
                    continue
                raise
            try:
                for i, (key, fields) in enumerate(iter_shard(fileobj, limit=shard.bytes, caps=caps)):
                    if i < done:
                        continue
                    yield shard.file, key, fields
                    done += 1
                    n += 1
                    if limit is not None and n >= limit:
                        return
                break
            except (TarCutShortError, EOFError, OSError, http.client.HTTPException) as exc:
                if attempt + 1 < tries:
                    continue
                raise AvdataError(f"{loc.address(shard.file)}: cannot be read to the end ({exc}); "
                                  "check the folder with `avdata verify`") from exc
            except tarfile.TarError as exc:
                raise AvdataError(f"{loc.address(shard.file)}: cannot be read to the end ({exc}); "
                                  "check the folder with `avdata verify`") from exc
            finally:
                fileobj.close()


def label_of(fields: dict[str, bytes], meta: dict[str, Any] | None = None) -> int | None:
    """The class index of a sample: its `cls` field (read as `class_index` reads it), else the `label` of its
    json; None when neither is a non-negative integer."""
    if "cls" in fields:
        m = _CLS.fullmatch(bytes(fields["cls"]))
        return int(m.group(1)) if m else None
    if meta and isinstance(meta.get("label"), int):
        return meta["label"]
    return None


class SampleChecks:
    """verify's sample checks over a run: each sample's key and class index, and the keys met so far
    (key -> (split, file)) to find one in two splits or twice in one. `start` each shard, then `listed`."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.keys: dict[str, tuple[str, str]] = {}
        self.split = self.file = ""
        self.found: list[str] = []

    def start(self, split: str, file: str) -> None:
        self.split, self.file, self.found = split, file, []

    def restart(self) -> None:
        """Check the current shard again from its start (a read of it failed): its keys are not met yet."""
        self.keys = {k: v for k, v in self.keys.items() if v != (self.split, self.file)}
        self.found = []

    def sample(self, key: str, member: str) -> None:
        problem = key_problem(key)
        if problem:
            self.found.append(f"member {printable(repr(member))}: {problem}")
        elif key in self.keys:
            split, file = self.keys[key]
            where = f"in split {split!r} too" if split != self.split else "twice in this split"
            self.found.append(f"sample key {key!r} is also in {file} ({where}): each sample must be in one "
                              "split, once")
        else:
            self.keys[key] = (self.split, self.file)

    def label(self, key: str, data: bytes) -> None:
        try:
            class_index(data, self.num_classes)
        except FieldError as exc:
            self.found.append(f"sample {printable(repr(key))}: {exc}")

    def listed(self) -> list[str]:
        """The problems of the current shard, at most MAX_SAMPLE_PROBLEMS and a count of the rest."""
        more = len(self.found) - MAX_SAMPLE_PROBLEMS
        return self.found[:MAX_SAMPLE_PROBLEMS] + ([f"... and {more} more sample problem(s) like these"]
                                                   if more > 0 else [])
