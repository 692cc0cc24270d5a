"""The `.avdata/` state folder inside a shards folder: what a rerun, the `--part i/N` runs and `avdata merge`
share.

    .avdata/plan.json              the plan record: options, features, card, each shard's sample keys and
                                   a fingerprint of it all (a rerun with other input or options is refused)
    .avdata/shards/<shard>.json    a finished shard's sidecar: its size and sha256, keys, class counts,
                                   skipped clips, sources' sha256, per-sample stats
    .avdata/work-*/                a --jobs > 1 run's hand-off folder (workers' encoded samples)
    .avdata/raw/                   what `Recipe.prepare_raw` unpacked (e.g. a zip given as --raw)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from avdata.atomic import atomic_write_text
from avdata.errors import AvdataError
from avdata.hashing import sha256_file
from avdata.shards.manifest import MANIFEST_NAME

__all__ = ["STATE_DIR", "state_dir", "plan_path", "sidecar_path", "raw_workdir", "load_plan", "save_plan",
           "clear_outputs", "read_sidecar", "write_sidecar", "shard_done", "missing_shards", "new_handoff_dir",
           "remove_stale_handoffs"]

STATE_DIR = ".avdata"
PLAN_NAME = "plan.json"
HANDOFF_PREFIX = "work-"


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


def load_plan(out: Path) -> dict[str, Any]:
    path = plan_path(out)
    if not path.exists():
        raise AvdataError(f"{out}: no .avdata/plan.json; this is not an `avdata prepare` output folder")
    return json.loads(path.read_text())


def save_plan(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Write the plan record, or keep the one there if it is the same plan. Another plan's outputs are
    replaced with `overwrite`, else refused."""
    path = plan_path(out)
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("fingerprint") == record["fingerprint"]:
            return
        if not overwrite:
            raise AvdataError(
                f"{out} holds shards prepared from other input or options (see {path}); "
                "use a new --out folder, or --overwrite to replace them"
            )
    if overwrite or path.exists():
        clear_outputs(out)
    state_dir(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def clear_outputs(out: Path) -> None:
    for p in Path(out).glob("*.tar"):
        p.unlink()
    for name in (MANIFEST_NAME, "README.md"):
        (Path(out) / name).unlink(missing_ok=True)
    shutil.rmtree(sidecar_dir(out), ignore_errors=True)


def read_sidecar(out: Path, shard_file: str) -> dict[str, Any]:
    return json.loads(sidecar_path(out, shard_file).read_text())


def write_sidecar(out: Path, shard_file: str, side: dict[str, Any]) -> None:
    atomic_write_text(sidecar_path(out, shard_file), json.dumps(side, indent=1, sort_keys=True) + "\n")


def shard_done(out: Path, shard: dict[str, Any]) -> bool:
    """Whether a shard of the plan is finished: its file matches its sidecar (keys, size, sha256)."""
    side = sidecar_path(out, shard["file"])
    tar = Path(out) / shard["file"]
    if not side.exists() or not tar.exists():
        return False
    try:
        rec = json.loads(side.read_text())
    except json.JSONDecodeError:
        return False
    info = rec.get("shard", {})
    if rec.get("keys") != shard["keys"] or info.get("bytes") != tar.stat().st_size:
        return False
    return info.get("sha256") == sha256_file(tar)


def missing_shards(out: Path, record: dict[str, Any] | None = None) -> list[str]:
    record = record or load_plan(out)
    return [s["file"] for s in record["shards"]
            if not (Path(out) / s["file"]).exists() or not sidecar_path(out, s["file"]).exists()]


def new_handoff_dir(out: Path) -> Path:
    """A hand-off folder for one run, so that --part runs sharing one output folder keep out of each
    other's way."""
    state_dir(out).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=HANDOFF_PREFIX, dir=state_dir(out)))


def remove_stale_handoffs(out: Path, age_s: float = 3600.0) -> None:
    """Hand-off folders of runs that were killed. A live run touches its folder with every clip, so one
    left alone for an hour is not in use (another --part run may share the output folder)."""
    for d in state_dir(out).glob(HANDOFF_PREFIX + "*"):
        try:
            if time.time() - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:
            pass
