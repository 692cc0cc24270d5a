"""`avdata demo`: the whole data path on a small generated CREMA-D-format tree, in under a minute.

It writes real FLV and WAV files (with a few deliberately broken clips), prepares shards, verifies them
and draws a contact sheet, so a new user sees every step and its output on their own machine; the
training command it suggests (`train_command`) learns the generated classes in about a minute on a
2-core CPU (tests/test_first_hour_train.py runs it as printed).

The raw clips it writes are recorded in `OUT/.avdata/demo.json` before they are written: a rerun (with
other --clips or --seed) first removes those, so the new shards hold the new clips only, and a file under
`OUT/raw` (or an `OUT/contact_sheet.png`) that no demo wrote stops the demo before anything is written.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

from avdata.errors import AvdataError

log = logging.getLogger("avdata.demo")

__all__ = ["DEMO_CLIPS", "MIN_DEMO_CLIPS", "RECORD", "run_demo", "demo_clips", "train_command", "inspect_command"]

#: Good clips the demo generates by default: enough training clips for its suggested run to learn.
DEMO_CLIPS = 72
#: The fewest good clips whose train split still fills one batch of the suggested run per process and worker.
MIN_DEMO_CLIPS = 24
#: The demo's record of the raw files it writes, relative to --out.
RECORD = Path(".avdata") / "demo.json"
_SHEET = "contact_sheet.png"
_RAW_NAME = re.compile(r"(VideoFlash/[0-9A-Za-z_]+\.flv|AudioWAV/[0-9A-Za-z_]+\.wav)")
# Clips of 1-2 s (the real ones run 1.5-5 s): generating them is most of the demo's time.
_DURATIONS = (1.0, 2.0)


def demo_clips(good: int, seed: int) -> list[str]:
    """`good` clips, three from the published train split for each one from test (every emotion in both,
    round robin), then the 6 that `make_cremad_raw(..., with_bad=True)` damages. Why: a training run on
    the demo learns from its train split, and half of a random pick would be test clips."""
    from avdata.datasets.cremad.recipe import all_clips
    from avdata.datasets.cremad.synth import BAD_KINDS, pick_clips

    standard = all_clips()
    n_test = max(1, good // 4)
    want = {"train": good - n_test, "test": n_test}
    chosen: list[str] = []
    for clip in pick_clips(2 * good + 2 * len(BAD_KINDS), seed):
        split = standard[clip]
        if want[split] > 0:
            want[split] -= 1
            chosen.append(clip)
    rest = [c for c in pick_clips(2 * good + 4 * len(BAD_KINDS), seed) if c not in chosen]
    return chosen + rest[: len(BAD_KINDS)]


def train_command(shards: Path, run: Path) -> str:
    """The `scmrl-train` run the demo suggests: a small network (C 32, 4 heads) at the peak rate 5e-3
    after one warm-up epoch; the defaults (batch 128, 5 warm-up epochs of 100, the rate scaled to the
    batch) are for the full dataset and would not move on a few dozen clips in a few epochs."""
    # 20 epochs of batch 8 (about 90 steps) settle: shorter runs of batch 4 ended anywhere between 0.44 and
    # 0.83 test accuracy with the thread count and seed, these at 0.67-0.83
    return (f"scmrl-train --shards {shlex.quote(str(shards))} --out {shlex.quote(str(run))} --epochs 20 "
            "--batch-size 8 --lr 5e-3 --warmup-epochs 1 --embed-dim 32 --heads 4")


def inspect_command(shards: Path) -> str:
    """The `avdata inspect` line the demo prints (quoted like `train_command`, for an --out with spaces)."""
    return f"avdata inspect {shlex.quote(str(shards))}"


def _files_under(folder: Path) -> Iterator[str]:
    """Every file, link or other non-folder entry under `folder`, as a path relative to it (links not followed)."""
    for top, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            yield Path(os.path.relpath(os.path.join(top, name), folder)).as_posix()


def _replace_earlier_demo(out: Path, names: list[str]) -> None:
    """Remove the raw files an earlier demo in `out` recorded, after checking that `out/raw` holds nothing
    else (a user's files are never replaced), then record `names` (relative to out/raw) as the demo's."""
    from avdata.atomic import atomic_write_text
    from avdata.owned import read_json_record

    record = read_json_record(out / RECORD)
    earlier = record.get("raw") if isinstance(record, dict) else None
    # only names the demo can have written: a record edited to name ../../x owns nothing outside out/raw
    ours = {n for n in earlier if isinstance(n, str) and _RAW_NAME.fullmatch(n)} if isinstance(earlier, list) else set()
    raw = out / "raw"
    foreign = [raw / n for n in itertools.islice((n for n in _files_under(raw) if n not in ours), 6)]
    if (out / _SHEET).exists() and record is None:
        foreign.insert(0, out / _SHEET)
    if foreign:
        shown = ", ".join(map(str, foreign[:5])) + (" and more" if len(foreign) > 5 else "")
        raise AvdataError(f"{out} holds {shown}, which no avdata demo recorded writing (in {out / RECORD}); the "
                          f"demo never replaces such files: choose a new --out, or move them away (or delete "
                          f"{out} if an older avdata demo made it)")
    for name in sorted(ours):
        with contextlib.suppress(FileNotFoundError):
            (raw / name).unlink()
    atomic_write_text(out / RECORD, json.dumps({"raw": sorted(set(names))}, indent=1) + "\n")


def run_demo(out: Path, clips: int = DEMO_CLIPS, jobs: int = 2, seed: int = 0) -> dict[str, Any]:
    """Generate raw data under out/raw, shards under out/shards, a contact sheet at out/contact_sheet.png;
    what an earlier demo wrote in out/raw is replaced (see the module docstring)."""
    from avdata.contact_sheet import contact_sheet
    from avdata.datasets.cremad.recipe import CremadOptions
    from avdata.datasets.registry import get_recipe
    from avdata.prepare.engine import PrepareResult, PrepareSettings, prepare
    from avdata.datasets.cremad.synth import BAD_KINDS, make_cremad_raw
    from avdata.verify import verify_shards

    out = Path(out)
    raw, shards, png = out / "raw", out / "shards", out / "contact_sheet.png"
    if clips < MIN_DEMO_CLIPS:
        raise AvdataError(f"--clips {clips}: the demo needs at least {MIN_DEMO_CLIPS} good clips, so that its "
                          "suggested training run has a batch to train on")
    chosen = demo_clips(clips, seed)
    _replace_earlier_demo(out, [f"{sub}/{clip}.{ext}" for clip in chosen
                                for sub, ext in (("VideoFlash", "flv"), ("AudioWAV", "wav"))])
    log.info("generating %d CREMA-D-format clips (FLV + WAV) and %d deliberately broken ones under %s", clips,
             len(BAD_KINDS), raw)
    made = make_cremad_raw(raw, clips=chosen, seed=seed, with_bad=True, duration_range=_DURATIONS)
    log.info("preparing shards into %s", shards)
    # val 0.3: the split keeps clips beside the deliberately broken ones, so a training run can select on it
    result: PrepareResult = prepare(get_recipe("cremad"), raw, shards, CremadOptions(val_fraction=0.3),
                                    PrepareSettings(samples_per_shard=8, jobs=jobs, overwrite=True))
    report = verify_shards(str(shards))
    contact_sheet(str(shards), png, per_class=2)
    return {"raw": raw, "shards": shards, "contact_sheet": png, "made": made, "result": result,
            "verified": report.ok, "problems": report.problems, "train_command": train_command(shards, out / "run"),
            "inspect_command": inspect_command(shards)}
