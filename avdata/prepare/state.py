"""The `.avdata/` state folder inside a shards folder: what a rerun, the `--part i/N` runs and `avdata merge`
share.

    .avdata/plan.json              the plan record: options, features, card, each shard's sample keys and
                                   a fingerprint of it all (a rerun with other input or options is refused)
    .avdata/shards/<shard>.json    a finished shard's sidecar: its size and sha256, keys, class counts,
                                   skipped clips, sources' sha256, per-sample stats
    .avdata/work-*/                a --jobs > 1 run's hand-off folder (workers' encoded samples)
    .avdata/raw/                   what `Recipe.prepare_raw` unpacked (e.g. a zip given as --raw)
    .avdata/*.lock                 the output folder's lock while a run writes (`avdata.folder_lock`)

Only names the project wrote are ever replaced or deleted (`avdata.owned`): a first plan into a folder
holding a file of the user's under one of its names is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError
from avdata.hashing import sha256_bytes, sha256_file
from avdata.owned import PLAN_NAME, STATE_DIR, TEMP_SUFFIXES, owned_names, read_json_record, refuse_foreign
from avdata.shards.manifest import MANIFEST_NAME
from avdata.shards.tar import shard_name

__all__ = ["STATE_DIR", "state_dir", "plan_path", "sidecar_path", "raw_workdir", "load_plan", "plan_names", "save_plan",
           "clear_outputs", "read_sidecar", "write_sidecar", "shard_done", "missing_shards", "new_handoff_dir",
           "remove_stale_handoffs"]

HANDOFF_PREFIX = "work-"
log = logging.getLogger("avdata.prepare.state")


def state_dir(out: Path) -> Path:
    return Path(out) / STATE_DIR


def plan_path(out: Path) -> Path:
    return state_dir(out) / PLAN_NAME


def sidecar_dir(out: Path) -> Path:
    return state_dir(out) / "shards"


def sidecar_path(out: Path, shard_file: str) -> Path:
    return sidecar_dir(out) / (shard_file + ".json")


def raw_workdir(out: Path) -> Path:
    return state_dir(out) / "raw"


def _read_record(path: Path, what: str) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise AvdataError(f"{path}: the {what} is unreadable ({exc}); {_REDO}") from None
    if not isinstance(record, dict):
        raise AvdataError(f"{path}: the {what} is not a JSON object; {_REDO}")
    return record


_REDO = "delete it and rerun the `avdata prepare` command that made this folder"


def load_plan(out: Path) -> dict[str, Any]:
    path = plan_path(out)
    if not path.exists():
        raise AvdataError(f"{out}: no .avdata/plan.json; this is not an `avdata prepare` output folder")
    record = _read_record(path, "plan record")
    problem = _plan_problem(record)
    if problem:
        raise AvdataError(f"{path}: the plan record {problem}; {_REDO}")
    return record


def plan_fingerprint(record: dict[str, Any]) -> str:
    """The sha256 of a plan record's content (all but its fingerprint): it names the preparation, and a
    record whose content does not hash to its fingerprint was damaged or edited."""
    body = {k: v for k, v in record.items() if k != "fingerprint"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())


#: The plan record's fields that merge and assemble read, and their types.
_PLAN_FIELDS = {"dataset": str, "tool_version": str, "options": dict, "classes": list, "features": dict,
                "card": dict, "splits": list, "plan_skipped": list, "shards": list, "fingerprint": str}


def _plan_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a plan record read back (`merge` reads the ones of part folders made elsewhere),
    or None: every field of its type, each shard `<split>-NNNNNN.tar` of a listed split in the order the
    plan numbers them (never a path), its keys names, and the content matching its fingerprint."""
    for name, kind in _PLAN_FIELDS.items():
        if not isinstance(record.get(name), kind):
            return f"lacks its {name} (or it is not a {kind.__name__})"
    splits = record["splits"]
    if not all(isinstance(c, str) for c in record["classes"] + splits) or \
            not all(isinstance(s, dict) and isinstance(s.get("key"), str) for s in record["plan_skipped"]):
        return "has classes, splits or skipped clips of the wrong type"
    numbers: dict[str, int] = {}
    for shard in record["shards"]:
        split = shard.get("split") if isinstance(shard, dict) else None
        if not isinstance(split, str) or split not in splits:
            return f"lists a shard of no split of the plan ({shard!r:.80})"
        expected = shard_name(split, numbers.get(split, 0))
        numbers[split] = numbers.get(split, 0) + 1
        keys = shard.get("keys")
        if shard.get("file") != expected or not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            return f"lists a shard that is not {expected} with its sample keys ({shard!r:.80})"
    if plan_fingerprint(record) != record["fingerprint"]:
        return "does not match its fingerprint (it was damaged or edited)"
    return None


def plan_names(record: dict[str, Any]) -> list[str]:
    """The names a plan writes into its output folder: its shards, the manifest and the dataset card."""
    return [s["file"] for s in record["shards"]] + [MANIFEST_NAME, "README.md"]


def save_plan(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Write the plan record, or keep the one there if it is the same plan. Another plan's outputs are
    replaced with `overwrite`, else refused; a file the project did not write is never replaced."""
    path = plan_path(out)
    if path.exists():
        try:
            old: dict[str, Any] | None = load_plan(out)
        except AvdataError:  # damaged, or written by another version: another plan, which --overwrite replaces
            old = None
        if old is not None and old["fingerprint"] == record["fingerprint"]:
            return
        if not overwrite:
            how = _how_plans_differ(old, record) if old is not None else "by a plan this version cannot read"
            raise AvdataError(f"{out} holds shards prepared {how} (see {path}); use a new --out folder, or "
                              "--overwrite to replace them")
    elif not overwrite and any((Path(out) / n).exists() for n in owned_names(out)):
        raise AvdataError(f"{out} holds a shards folder avdata did not prepare here (e.g. one pulled or merged "
                          "without a plan); use a new --out folder, or --overwrite to replace it")
    refuse_foreign(out, plan_names(record), "avdata prepare")
    if overwrite or path.exists():
        clear_outputs(out)
    state_dir(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _how_plans_differ(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What a user changed between two plans of one --out, in their words: the dataset, the options (each
    named with both values), the avdata version, or else the raw input."""
    if old.get("dataset") != new.get("dataset"):
        return f"from another dataset ({old.get('dataset')!r}, not {new.get('dataset')!r})"
    was, now = old.get("options"), new.get("options")
    if isinstance(was, dict) and isinstance(now, dict) and was != now:
        changed = [f"--{k.replace('_', '-')} {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now))
                   if was.get(k) != now.get(k)]
        return "with other options (" + ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "") + ")"
    if old.get("tool_version") != new.get("tool_version"):
        return f"by another avdata version ({old.get('tool_version')}, now {new.get('tool_version')})"
    if old.get("features") != new.get("features"):
        return "with other field encodings (the manifest's features differ: e.g. another OpenCV or JPEG library build)"
    return "from other raw input (other clips, or other clips found usable, under --raw)"


def clear_outputs(out: Path) -> None:
    """Delete what the project wrote into `out` (`avdata.owned`), and the shard sidecars; nothing else."""
    for name in sorted(owned_names(out)):
        for candidate in (name, *(name + s for s in TEMP_SUFFIXES)):
            (Path(out) / candidate).unlink(missing_ok=True)
    shutil.rmtree(sidecar_dir(out), ignore_errors=True)


def read_sidecar(out: Path, shard_file: str) -> dict[str, Any]:
    """A finished shard's sidecar, checked for the fields `assemble` and `merge` use (a damaged one is an
    AvdataError naming it, not a traceback)."""
    path = sidecar_path(out, shard_file)
    side = _read_record(path, "shard record")
    info = side.get("shard")
    ok = (isinstance(info, dict) and isinstance(info.get("bytes"), int) and isinstance(info.get("sha256"), str)
          and isinstance(side.get("keys"), list) and isinstance(side.get("class_counts"), dict)
          and all(isinstance(n, int) for n in side["class_counts"].values())
          and isinstance(side.get("skipped"), list) and isinstance(side.get("sources"), dict)
          and all(isinstance(k, dict) and isinstance(k.get("key"), str) and isinstance(k.get("split", ""), str)
                  for k in side["skipped"])  # assemble sorts them by (split, key)
          and isinstance(side.get("stats", {}), dict)
          and all(isinstance(v, list) and v and all(type(x) in (int, float) for x in v)
                  for v in side.get("stats", {}).values()))  # summarize_stat needs numbers, at least one
    if not ok:
        raise AvdataError(f"{path}: the shard record lacks a field or has the wrong type; delete it and "
                          f"{shard_file}, and rerun the prepare (or part) that made it")
    return side


def write_sidecar(out: Path, shard_file: str, side: dict[str, Any]) -> None:
    atomic_write_text(sidecar_path(out, shard_file), json.dumps(side, indent=1, sort_keys=True) + "\n")


def shard_done(out: Path, shard: dict[str, Any], raw: Path | None = None) -> bool:
    """Whether a shard of the plan is finished: its file matches its sidecar (keys, size, sha256), and
    (given the `raw` folder) no source it was made from was modified since (a file replaced by another
    version between a run that was stopped and its rerun: the shard would hold the old version, and the
    manifest its sha256, unlike a run from the start)."""
    side = sidecar_path(out, shard["file"])
    tar = Path(out) / shard["file"]
    if not side.exists() or not tar.exists():
        return False
    rec = read_json_record(side)
    if not isinstance(rec, dict):
        return False
    info = rec.get("shard", {})
    if rec.get("keys") != shard["keys"] or info.get("bytes") != tar.stat().st_size:
        return False
    if raw is not None and _source_changed(raw, rec.get("sources"), side, shard["file"]):
        return False
    return info.get("sha256") == sha256_file(tar)


def _source_changed(raw: Path, sources: Any, side: Path, shard_file: str) -> bool:
    """Whether a source file of a finished shard is gone, or was written after its record (the record is
    written once the sources were read) and no longer holds the sha256 recorded for it: a stat per file, and
    a hash only of one written since (copied again or touched, the same bytes keep the shard)."""
    made = side.stat().st_mtime_ns
    for rel, sha in sources.items() if isinstance(sources, dict) else ():
        path = Path(raw) / rel
        try:
            changed = path.stat().st_mtime_ns > made and sha256_file(path) != sha
        except OSError:
            changed = True
        if changed:
            log.warning("%s changed since %s was made from it; making that shard again", rel, shard_file)
            return True
    return False


def missing_shards(out: Path, record: dict[str, Any] | None = None) -> list[str]:
    record = record or load_plan(out)
    return [s["file"] for s in record["shards"]
            if not (Path(out) / s["file"]).exists() or not sidecar_path(out, s["file"]).exists()]


def new_handoff_dir(out: Path, owner: str | None = None) -> Path:
    """A hand-off folder for one run, so that --part runs sharing one output folder keep out of each
    other's way. `owner`: the name of the lock the run holds (`avdata.folder_lock`), which goes into the
    folder's name: no other live run holds that lock, so the folders named after it are a killed run's
    (with its workers' unread samples, megabytes each) and are removed at once, not an hour later."""
    state_dir(out).mkdir(parents=True, exist_ok=True)
    prefix = HANDOFF_PREFIX + (f"{owner}-" if owner else "")
    if owner:
        for dead in state_dir(out).glob(prefix + "*"):
            shutil.rmtree(dead, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=state_dir(out)))


def remove_stale_handoffs(out: Path, age_s: float = 3600.0) -> None:
    """Hand-off folders of runs that were killed. A live run touches its folder with every clip, so one
    left alone for an hour is not in use (another --part run may share the output folder)."""
    for d in state_dir(out).glob(HANDOFF_PREFIX + "*"):
        try:
            if time.time() - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:
            pass
