"""Samples of a shards folder read back as raw fields, for the tools that look at them (inspect, the
contact sheet): one split in shard order, and each sample's class index."""

from __future__ import annotations

import tarfile
from typing import Any, Iterator

from avdata.errors import AvdataError
from avdata.shards.location import ShardsLocation
from avdata.shards.reader import iter_shard


def iter_samples(loc: ShardsLocation, split: str, limit: int | None = None
                 ) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(shard file, key, {field: bytes}) of a split in shard order; at most `limit` samples.

    A shard that cannot be read to the end raises AvdataError naming it (run `avdata verify`).
    """
    n = 0
    if limit is not None and limit <= 0:
        return
    for shard in loc.shards(split):
        fileobj = loc.open(shard.file)
        try:
            for key, fields in iter_shard(fileobj, limit=shard.bytes):
                yield shard.file, key, fields
                n += 1
                if limit is not None and n >= limit:
                    return
        except (tarfile.TarError, EOFError) as exc:
            raise AvdataError(f"{loc.address(shard.file)}: cannot be read to the end ({exc}); "
                              "check the folder with `avdata verify`") from exc
        finally:
            fileobj.close()


def label_of(fields: dict[str, bytes], meta: dict[str, Any] | None = None) -> int | None:
    """The class index of a sample: its `cls` field, else the `label` of its json."""
    if "cls" in fields:
        try:
            return int(fields["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
    if meta and isinstance(meta.get("label"), int):
        return meta["label"]
    return None
