"""The prepare engine on a toy recipe: determinism, resume, parts + merge, skips, strict, overwrite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import webdataset as wds

from avdata.errors import AvdataError
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, parse_part, prepare
from avdata.datasets.registry import get_recipe, register_recipe
from tests.toy_recipe import ToyOptions, make_toy_raw

register_recipe("toy", "tests.toy_recipe:ToyRecipe")


def run(raw: Path, out: Path, jobs: int = 1, part=None, strict=False, overwrite=False, per_shard=4, **opts):
    settings = PrepareSettings(samples_per_shard=per_shard, jobs=jobs, part=part, strict=strict,
                               overwrite=overwrite, progress=False)
    return prepare(get_recipe("toy"), raw, out, ToyOptions(**opts), settings)


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_shards_manifest_and_card(tmp_path):
    raw = make_toy_raw(tmp_path / "raw", bad=("s005",))
    res = run(raw, tmp_path / "out")
    assert res.complete
    m = load_manifest(tmp_path / "out")
    # 20 train-ish (5 held out for val, stratified 0.25 of 10 per class rounded), 6 test, 1 bad skipped
    assert m["splits"]["test"]["num_samples"] == 6
    assert m["splits"]["val"]["num_samples"] + m["splits"]["train"]["num_samples"] == 19
    assert m["splits"]["val"]["num_samples"] in (4, 5, 6)
    assert [s["key"] for s in m["skipped"]] == ["s005"]
    assert m["skipped"][0]["reason"] == "unreadable toy file"
    assert m["skipped"][0]["path"] == "s005.txt"
    assert m["options"] == {"samples_per_shard": 4, "scale": 1, "seed": 42, "val_fraction": 0.25}
    assert len(m["sources"]["sha256"]) == 26
    # class counts add up and match what stock webdataset reads back
    for split, entry in m["splits"].items():
        assert sum(entry["class_counts"].values()) == entry["num_samples"]
        urls = [str(tmp_path / "out" / s["file"]) for s in entry["shards"]]
        samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
        assert len(samples) == entry["num_samples"]
        assert sum(1 for s in samples if s["cls"] == 1) == entry["class_counts"]["b"]
        for s in samples:
            assert s["json"]["split"] == split
            assert s["x.npy"].shape == (3,)
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlicense: cc0-1.0\n")
    assert "avdata prepare toy --raw RAW --out OUT" in card
    # README: the manifest (and the card, the shards) hold no timestamps and no absolute paths
    for name, data in folder_bytes(tmp_path / "out").items():
        assert str(tmp_path).encode() not in data and b"/raw" not in data, name
        assert not re.search(rb"\b20\d\d-[01]\d-[0-3]\d", data), name


@pytest.mark.slow
def test_deterministic_across_jobs_and_parts(tmp_path):
    raw = make_toy_raw(tmp_path / "raw", bad=("s002",))
    run(raw, tmp_path / "one", jobs=1)
    run(raw, tmp_path / "two", jobs=2)
    r0 = run(raw, tmp_path / "parts", part=(0, 2))
    assert not r0.complete and not (tmp_path / "parts" / "manifest.json").exists()
    r1 = run(raw, tmp_path / "parts", jobs=2, part=(1, 2))
    assert r1.complete
    a, b, c = (folder_bytes(tmp_path / d) for d in ("one", "two", "parts"))
    assert a == b == c
    # that common order is the seeded random one, not the recipe's listing order
    order = written_keys(tmp_path / "one", "train")
    assert order != sorted(order) and len(order) >= 13
    assert "manifest.json" in a and sum(n.endswith(".tar") for n in a) == 8  # train 15 -> 4, val 5 -> 2, test 6 -> 2


def test_part_runs_sharing_one_folder_leave_each_others_files_alone(tmp_path):
    """A --part run starting while another writes into the same --out removes only its own leftovers."""
    raw = make_toy_raw(tmp_path / "raw")
    run(raw, tmp_path / "one")
    out = tmp_path / "parts"
    run(raw, out, part=(0, 2))
    shards = json.loads((out / ".avdata" / "plan.json").read_text())["shards"]
    theirs = out / (shards[1]["file"] + ".tmp")  # part 1/2 writing its first shard right now
    mine = out / (shards[0]["file"] + ".tmp")  # left by a killed part-0 run
    theirs.write_bytes(b"half a shard")
    mine.write_bytes(b"junk")
    run(raw, out, part=(0, 2))
    assert theirs.read_bytes() == b"half a shard" and not mine.exists()
    theirs.unlink()  # part 1 ends (here: is run again)
    assert run(raw, out, part=(1, 2)).complete
    assert folder_bytes(out) == folder_bytes(tmp_path / "one")


def written_keys(out: Path, split: str) -> list[str]:
    """A split's sample keys as stock webdataset reads its shards in file order."""
    urls = [str(out / s["file"]) for s in load_manifest(out)["splits"][split]["shards"]]
    return [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]


def test_each_split_is_written_in_a_seeded_random_order(tmp_path):
    raw = make_toy_raw(tmp_path / "raw", n_train=40)
    a = run(raw, tmp_path / "a", val_fraction=0.0)
    run(raw, tmp_path / "b", val_fraction=0.0, seed=7)
    again = run(raw, tmp_path / "a", val_fraction=0.0)  # a rerun keeps every shard: same order
    assert again.written == [] and load_manifest(tmp_path / "b")["options"]["seed"] == 7
    for split in ("train", "test"):
        ka, kb = written_keys(tmp_path / "a", split), written_keys(tmp_path / "b", split)
        assert sorted(ka) == sorted(kb) and ka != kb  # the seed decides the order, not the set
        assert ka != sorted(ka)
    # the classes alternate in the listing (s000 a, s001 b, ...); sorted by class they would sit in two
    # runs, in a random order they change about every other sample
    labels = [int(k[-1]) % 2 for k in written_keys(tmp_path / "a", "train")]
    assert 10 <= sum(x != y for x, y in zip(labels, labels[1:])) <= 30
    assert a.complete


def test_merge_parts_made_in_separate_folders(tmp_path):
    from avdata.prepare.merge import merge

    raw = make_toy_raw(tmp_path / "raw")
    run(raw, tmp_path / "single")
    run(raw, tmp_path / "p0", part=(0, 3))
    run(raw, tmp_path / "p1", part=(1, 3))
    with pytest.raises(AvdataError, match="not made yet"):
        merge(tmp_path / "merged", [tmp_path / "p0", tmp_path / "p1"])
    run(raw, tmp_path / "p2", part=(2, 3))
    merge(tmp_path / "merged", [tmp_path / "p0", tmp_path / "p1", tmp_path / "p2"])
    assert folder_bytes(tmp_path / "merged") == folder_bytes(tmp_path / "single")


def test_resume_keeps_good_shards_and_redoes_damaged(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    first = run(raw, out)
    before = folder_bytes(out)
    again = run(raw, out)
    assert again.written == [] and len(again.kept) == len(first.written)
    # a shard cut short and a missing shard are redone; the others are kept
    names = sorted(n for n in before if n.endswith(".tar"))
    (out / names[0]).write_bytes(before[names[0]][:1000])
    (out / names[1]).unlink()
    (out / (names[2] + ".tmp")).write_bytes(b"junk")  # a killed run's half-written shard: removed
    (out / "leftover.tar.tmp").write_bytes(b"junk")  # not a name of ours: left alone
    third = run(raw, out)
    assert sorted(third.written) == names[:2]
    assert folder_bytes(out) == {**before, "leftover.tar.tmp": b"junk"}


def test_strict_stops_and_leaves_nothing_half_written(tmp_path):
    raw = make_toy_raw(tmp_path / "raw", bad=("s001",))
    out = tmp_path / "out"
    with pytest.raises(AvdataError, match="s001.txt: unreadable toy file"):
        run(raw, out, strict=True)
    assert not list(out.glob("*.tmp")) and not (out / "manifest.json").exists()


def test_other_options_need_overwrite(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    run(raw, out)
    with pytest.raises(AvdataError, match="--overwrite"):
        run(raw, out, scale=2)
    res = run(raw, out, scale=2, overwrite=True)
    assert res.complete and load_manifest(out)["options"]["scale"] == 2


def test_pool_hand_off_folder_is_removed_and_stale_ones_cleared(tmp_path):
    import os

    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    (out / ".avdata").mkdir(parents=True)
    stale, fresh = out / ".avdata" / "work-dead", out / ".avdata" / "work-live"
    for d in (stale, fresh):
        d.mkdir()
        (d / "s001.part").write_bytes(b"x" * 512)
    os.utime(stale, (0, 0))  # untouched for decades: its run was killed
    assert run(raw, out, jobs=2).complete
    left = sorted(p.name for p in (out / ".avdata").iterdir())
    assert left == ["plan.json", "shards", "work-live"]  # a folder another run may still use is kept


def test_disk_full_in_a_worker_stops_with_the_fix(tmp_path, monkeypatch):
    import builtins
    import errno

    import avdata.prepare.workers as prepare_mod

    real_open = builtins.open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    # the pool forks after this, so its workers see the full disk too
    monkeypatch.setattr(prepare_mod, "open", full_disk_open, raising=False)
    out = tmp_path / "out"
    full = (r"disk full while writing .*train-000000.tar \(.* bytes free in .*out; the 8 shard\(s\) left "
            r"\(26 clips\) need more\); free space and rerun")
    with pytest.raises(AvdataError, match=full):
        run(make_toy_raw(tmp_path / "raw"), out, jobs=2)
    assert not list(out.glob("*.tar*")) and not list((out / ".avdata").glob("work-*"))


def test_a_split_whose_clips_are_all_skipped_gets_an_empty_shard_that_verifies(tmp_path):
    from avdata.verify import verify_shards

    raw = make_toy_raw(tmp_path / "raw")
    run(raw, tmp_path / "first")
    val = [k for k, s in _split_of(tmp_path / "first").items() if s == "val"]
    raw = make_toy_raw(tmp_path / "raw2", bad=tuple(val))
    out = tmp_path / "out"
    assert run(raw, out).complete
    m = load_manifest(out)
    assert m["splits"]["val"]["num_samples"] == 0 and len(m["skipped"]) == len(val) > 0
    empty = out / m["splits"]["val"]["shards"][0]["file"]
    assert empty.stat().st_size == 10240
    assert list(wds.WebDataset(str(empty), shardshuffle=False, empty_check=False)) == []
    assert verify_shards(out).ok
    empty.write_bytes(bytes(512))  # one zero block: cut before the second
    assert not verify_shards(out).ok


def _split_of(out: Path) -> dict[str, str]:
    m = load_manifest(out)
    urls = {split: [str(out / s["file"]) for s in e["shards"]] for split, e in m["splits"].items()}
    return {s["__key__"]: split for split, u in urls.items() for s in wds.WebDataset(u, shardshuffle=False)}


@pytest.mark.slow
def test_a_worker_killed_mid_clip_stops_the_run_naming_the_clip(tmp_path):
    import os
    import signal

    raw = make_toy_raw(tmp_path / "raw")
    (raw / "t003.txt").write_text(f"die {os.getpid()}")  # the worker processing it is killed (as by the OOM killer)
    out = tmp_path / "out"
    def hung(*_):
        raise TimeoutError("prepare hung after a worker died")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)  # a regression here would hang: fail instead
    try:
        with pytest.raises(AvdataError, match="worker process died while preparing (one of )?(t00[0-5], )?t003"
                                              "(, t00[4-5])?: killed by the system"):
            run(raw, out, jobs=2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not (out / "manifest.json").exists() and not list((out / ".avdata").glob("work-*"))
    kept = sorted(p.name for p in out.glob("*.tar"))
    plan = json.loads((out / ".avdata" / "plan.json").read_text())
    files = [s["file"] for s in plan["shards"]]
    dead = next(i for i, s in enumerate(plan["shards"]) if "t003" in s["keys"])
    # shards finished before it are kept (the one before may share the dead worker's task of two clips)
    assert kept and set(kept) <= set(files[:dead]) and len(kept) >= dead - 1
    (raw / "t003.txt").write_text("3 4 5")
    again = run(raw, out, jobs=2)
    assert again.complete and sorted(again.kept) == kept


def test_parse_part():
    assert parse_part("1/4") == (1, 4)
    assert parse_part(None) is None
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(AvdataError):
            parse_part(bad)


def test_an_unreadable_source_is_skipped_not_an_internal_error(tmp_path, monkeypatch):
    """A raw file the user cannot read (copied from another account, a failing disk) is bad input: skipped and
    recorded with its path and the system's reason. It ended the run as an "internal error" with a
    traceback, since hashing it raised PermissionError outside every recipe's checks."""
    import os

    from avdata.prepare import workers

    raw = make_toy_raw(tmp_path / "raw")
    locked = raw / "s003.txt"
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads whatever the mode says: the read fails as it would for a user
        real = workers.sha256_file

        def deny(path, *a, **kw):
            if Path(path).name == locked.name:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **kw)

        monkeypatch.setattr(workers, "sha256_file", deny)
    try:
        run(raw, tmp_path / "out")
    finally:
        locked.chmod(0o644)
    m = load_manifest(tmp_path / "out")
    assert [(s["key"], s["path"], s["reason"]) for s in m["skipped"]] == [
        ("s003", "s003.txt", "cannot read (Permission denied)")]
    assert sum(e["num_samples"] for e in m["splits"].values()) == 25
