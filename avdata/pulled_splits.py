"""Which splits `avdata pull --split` brought into a folder, so that `avdata verify` checks those and names
the others as not pulled, instead of reporting their shards missing. The record lives in the folder's
state folder beside pull's `owned.json` and is removed once every split is there."""

from __future__ import annotations

import json
from pathlib import Path

from avdata.atomic import atomic_write_bytes
from avdata.errors import AvdataError
from avdata.owned import STATE_DIR, read_json_record
from avdata.shards.location import ShardsLocation
from avdata.shards.manifest import Manifest

__all__ = ["PULLED_SPLITS_NAME", "record_pulled_splits", "not_pulled", "require_shards"]

#: Written by `avdata pull --split` into the folder's state folder (beside pull's owned.json): the splits
#: pulled so far (JSON list), so that verify tells a split never pulled from one whose shards went missing.
PULLED_SPLITS_NAME = f"{STATE_DIR}/pulled-splits.json"


def record_pulled_splits(folder: Path, pulled: list[str], manifest: Manifest) -> None:
    """Add `pulled` to the folder's record; a folder that now holds every split needs none. Without a
    record yet, the splits whose shards are all here (an earlier whole pull) count as pulled too."""
    record = Path(folder) / PULLED_SPLITS_NAME
    earlier = _read_pulled(record)
    if earlier is None:
        earlier = [name for name, split in manifest.splits.items()
                   if all((Path(folder) / s.file).is_file() for s in split.shards)]
    done = set(pulled) | set(earlier)
    if done >= set(manifest.splits):
        record.unlink(missing_ok=True)
    else:
        record.parent.mkdir(exist_ok=True)
        atomic_write_bytes(record, json.dumps(sorted(done)).encode())


def _read_pulled(record: Path) -> list[str] | None:
    data = read_json_record(record)
    return [s for s in data if isinstance(s, str)] if isinstance(data, list) else None


def not_pulled(loc: ShardsLocation) -> list[str]:
    """Splits of a local folder that `avdata pull --split` left out (none for a folder pulled whole): not in
    the record, and none of their shards here. A shard that is here is checked whatever the record says
    (copied in by hand, or a record from elsewhere): the trainer reads it."""
    if loc.remote or loc.addresses:
        return []
    base = Path(loc.base)
    pulled = _read_pulled(base / PULLED_SPLITS_NAME)
    if pulled is None:
        return []
    return [name for name, split in loc.manifest.splits.items()
            if name not in pulled and not any((base / s.file).exists() or (base / s.file).is_symlink()
                                              for s in split.shards)]


def require_shards(loc: ShardsLocation, splits: list[str]) -> None:
    """AvdataError, before any work is done, when a local folder lacks shards of `splits` (a run would
    otherwise train a whole epoch, then stop at the first evaluation): the splits `avdata pull --split` left
    out, named with the pull that brings them, or shards gone missing."""
    if loc.remote or loc.addresses:
        return
    base = Path(loc.base)
    absent = [s for s in not_pulled(loc) if s in splits]
    if absent:
        raise AvdataError(f"{base}: split(s) {', '.join(absent)} were not pulled (`avdata pull --split` left them "
                          f"out); pull them first: `avdata pull URL --to {base}`")
    missing = [e.file for s in splits for e in loc.shards(s)
               if not ((base / e.file).exists() or (base / e.file).is_symlink())]
    if missing:
        raise AvdataError(f"{base}: {len(missing)} shard(s) of split(s) {', '.join(splits)} are missing, e.g. "
                          f"{missing[0]}; `avdata verify {base}` lists them (pull or prepare the folder again)")
