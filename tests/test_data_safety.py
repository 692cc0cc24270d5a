"""Every folder the project writes: it creates, replaces or deletes only files it wrote (`avdata.owned`).

A user's files (README.md, notes.txt, thesis.pdf, a.tar, x.tmp) placed where prepare, merge, pull or push
write must survive byte for byte; --out apart from --raw; one prepare per --out at a time (parts share it);
a manifest names only `<split>-NNNNNN.tar` shards of its own splits, each once.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.datasets.registry import get_recipe, register_recipe
from avdata.errors import AvdataError
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.prepare.merge import merge
from avdata.shards.manifest import Manifest
from avdata.shards.schema import problems
from tests.toy_recipe import ToyOptions, make_toy_raw

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

register_recipe("toy", "tests.toy_recipe:ToyRecipe")

USER_FILES = {"README.md": b"# my project\n", "notes.txt": b"do not lose\n", "thesis.pdf": b"%PDF-1.7 chapter 1\n",
              "a.tar": b"my own archive\n", "x.tmp": b"my scratch\n"}


def plant(folder: Path, names=tuple(USER_FILES)) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(USER_FILES[name])
    return {n: USER_FILES[n] for n in names}


def survived(folder: Path, planted: dict[str, bytes]) -> bool:
    return all((folder / n).read_bytes() == data for n, data in planted.items())


def run(raw: Path, out: Path, part=None, overwrite=False, per_shard=4, **opts):
    settings = PrepareSettings(samples_per_shard=per_shard, part=part, overwrite=overwrite, progress=False)
    return prepare(get_recipe("toy"), raw, out, ToyOptions(**opts), settings)


def cli(*args: str):
    return CliRunner().invoke(app, [*args])


def shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*-0*.tar"))


def listed(folder: Path) -> list[str]:
    return sorted(e.file for _split, e in Manifest.load(folder).shard_entries())


# ------------------------------------------------------------------------------------------ prepare


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_refuses_out_equal_to_raw(tmp_path, overwrite):
    raw = tmp_path / "R"
    planted = plant(raw)
    args = ["prepare", "cremad", "--raw", str(raw), "--out", str(raw)] + (["--overwrite"] if overwrite else [])
    r = cli(*args)
    assert r.exit_code == 2 and "is the --raw folder" in r.output and "R-shards" in r.output, r.output
    assert survived(raw, planted) and sorted(p.name for p in raw.iterdir()) == sorted(planted)


def test_prepare_refuses_out_above_raw(tmp_path):
    raw = make_toy_raw(tmp_path / "top" / "R")
    planted = plant(tmp_path / "top")
    with pytest.raises(AvdataError, match=r"holds the --raw folder .*R"):
        run(raw, tmp_path / "top", overwrite=True)
    assert survived(tmp_path / "top", planted) and not (tmp_path / "top" / ".avdata").exists()
    assert run(raw, raw / "shards").complete  # --out inside --raw is a folder of its own


def test_prepare_never_replaces_a_users_readme(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    planted = plant(out)
    for overwrite in (False, True):
        with pytest.raises(AvdataError, match=r"holds README.md, which avdata did not write.*with --overwrite or"):
            run(raw, out, overwrite=overwrite)
    assert survived(out, planted) and not shard_names(out)


def test_prepare_and_its_overwrite_delete_only_their_own_files(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    planted = plant(out, ("notes.txt", "thesis.pdf", "a.tar", "x.tmp"))
    first = run(raw, out, per_shard=4)
    assert first.complete and survived(out, planted)
    assert shard_names(out) == listed(out) and len(listed(out)) == 8
    (out / "train-000001.tar.tmp").write_bytes(b"half")  # a killed run's temp file: ours
    with pytest.raises(AvdataError, match=r"prepared with other options \(--samples-per-shard 4 -> 10\).*--overwrite"):
        run(raw, out, per_shard=10)
    again = run(raw, out, per_shard=10, overwrite=True)
    assert again.complete and survived(out, planted)
    assert shard_names(out) == listed(out) and len(listed(out)) == 4  # the first run's other shards: gone
    assert not (out / "train-000001.tar.tmp").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        [*planted, *shard_names(out), "README.md", "manifest.json"])


def test_prepare_does_not_take_over_a_pulled_folder_without_overwrite(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    src = tmp_path / "src"
    run(raw, src)
    pulled = tmp_path / "pulled"
    assert cli("pull", str(src), "--to", str(pulled)).exit_code == 0
    with pytest.raises(AvdataError, match="avdata did not prepare here.*--overwrite"):
        run(raw, pulled, per_shard=10)
    assert run(raw, pulled, per_shard=10, overwrite=True).complete
    assert shard_names(pulled) == listed(pulled) and len(listed(pulled)) == 4


# --------------------------------------------------------------------------------------------- lock


def _lock(out: Path, name: str, pid: int, part=None) -> Path:
    (out / ".avdata").mkdir(parents=True, exist_ok=True)
    path = out / ".avdata" / name
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "part": part}))
    return path


def test_a_second_prepare_on_one_out_is_refused_naming_the_lock_and_pid(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    held = _lock(out, "prepare.lock", os.getpid())  # a live run (this very process) holds it
    with pytest.raises(AvdataError, match=rf"pid {os.getpid()} .*holds the lock {held}"):
        run(raw, out)
    with pytest.raises(AvdataError, match=rf"pid {os.getpid()}"):  # a part waits for a whole run too
        run(raw, out, part=(0, 2))
    assert held.exists() and not shard_names(out)


def test_a_prepare_running_in_another_process_holds_the_out(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    code = ("import sys; from pathlib import Path; from avdata.folder_lock import output_lock\n"
            "with output_lock(Path(sys.argv[1]), None):\n    print('held', flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert other.stdout.readline() == "held\n"
        with pytest.raises(AvdataError, match=rf"pid {other.pid} .*holds the lock {out / '.avdata' / 'prepare.lock'}"):
            run(raw, out)
    finally:
        other.communicate("")
    assert other.returncode == 0 and run(raw, out).complete


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    _lock(out, "prepare.lock", dead)
    _lock(out, "part-1-of-2.lock", dead, [1, 2])
    _lock(out, "prepare.lock.takeover", dead)  # a run that died while it took the lock over
    assert run(raw, out).complete
    assert not list((out / ".avdata").glob("*.lock*"))


def test_another_hosts_lock_is_taken_over_only_when_its_heartbeat_stopped(tmp_path):
    """A part resubmitted on another node after its node was lost: that host's pid cannot be asked about,
    so its lock counts as held while its holder touches it, and as dead once untouched for STALE_S."""
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    held = _lock(out, "part-0-of-1.lock", 12345, [0, 1])
    held.write_text(json.dumps({"pid": 12345, "host": "node-lost-7", "part": [0, 1]}))
    with pytest.raises(AvdataError, match=r"pid 12345 on node-lost-7\) .*taken over once untouched for 10 minutes"):
        run(raw, out, part=(0, 1))
    os.utime(held, (0, 0))  # untouched since 1970: no heartbeat, its run is gone
    assert run(raw, out, part=(0, 1)).complete and not held.exists()


@pytest.mark.parametrize("pid", [10 ** 20, -1, 0, True])
def test_a_lock_with_a_damaged_pid_is_taken_over(tmp_path, pid):
    """10**20 made os.kill raise OverflowError (a traceback); -1 and 0 asked about every process and the
    process group, True about pid 1: each read as a live holder the user was told to delete by hand."""
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    _lock(out, "prepare.lock", pid)
    assert run(raw, out).complete
    assert not list((out / ".avdata").glob("*.lock"))


def test_the_lock_never_writes_through_a_link_planted_at_its_temp_name(tmp_path):
    from avdata import folder_lock as lock

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "out" / ".avdata").mkdir(parents=True)
    (tmp_path / "out" / ".avdata" / f"prepare.lock.{os.getpid()}.tmp").symlink_to(victim)
    with lock.output_lock(tmp_path / "out", None) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert victim.read_text() == "keep me"
    assert not list((tmp_path / "out" / ".avdata").iterdir())

def test_two_runs_taking_over_one_dead_lock_do_not_both_hold_it(tmp_path, monkeypatch):
    """B saw the dead run's lock, then A took it over before B acted: B must see A's live lock (it removed
    it and took it over too before)."""
    from avdata import folder_lock as lock

    real, stale_views = lock._alive, [True]

    def alive(path, info, *args):  # B's first look: the dead run's lock it saw before A took it over
        return False if stale_views and not stale_views.pop() else real(path, info, *args)

    with lock.output_lock(tmp_path, None) as a_lock:
        stale_views[0] = False
        monkeypatch.setattr(lock, "_alive", alive)
        with pytest.raises(AvdataError, match=rf"pid {os.getpid()} .*holds the lock"):
            with lock.output_lock(tmp_path, None):
                pass
        assert json.loads(a_lock.read_text())["pid"] == os.getpid()
    assert not list((tmp_path / ".avdata").iterdir())


def test_a_reading_run_excludes_writers_and_not_other_readers(tmp_path):
    """push reads a folder whole (verify, then upload): a prepare or pull into it meanwhile would replace a
    shard between the check and its upload. Readers share the folder; writers wait for them, and they for
    writers. A folder that had no state folder is left without one."""
    from avdata import folder_lock as lock

    folder = tmp_path / "shards"
    folder.mkdir()
    with lock.reading_lock(folder) as one, lock.reading_lock(folder) as two:
        assert one != two and one.exists() and two.exists()
        assert json.loads(one.read_text()) == {"pid": os.getpid(), "host": socket.gethostname(), "reader": True}
        with pytest.raises(AvdataError, match=rf"an `avdata push` \(pid {os.getpid()} on .*\) is uploading from "
                                              rf"{folder}; it holds the lock {folder / '.avdata'}/read-"):
            with lock.output_lock(folder, None):
                pass
        with pytest.raises(AvdataError, match="is uploading from"):
            with lock.output_lock(folder, (0, 2)):
                pass
    assert not (folder / ".avdata").exists()
    with lock.output_lock(folder, None) as writer:
        with pytest.raises(AvdataError, match=rf"another `avdata prepare` \(pid {os.getpid()} .*holds the lock "
                                              rf"{writer}"):
            with lock.reading_lock(folder):
                pass
        assert writer.exists()
    with lock.output_lock(folder, None):
        pass  # the refused reader left nothing behind
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _lock(folder, f"read-{socket.gethostname()}-{int(child.stdout)}-0.lock", int(child.stdout))
    with lock.output_lock(folder, None):  # a dead reader's lock is taken over like a writer's
        assert [p.name for p in (folder / ".avdata").glob("read-*")] == []


def test_a_read_only_folder_is_read_without_a_lock(tmp_path, monkeypatch):
    from avdata import folder_lock as lock

    def refused(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with lock.reading_lock(tmp_path) as held:
        assert held is None


def test_the_lock_is_touched_while_the_run_lasts(tmp_path, monkeypatch):
    from avdata import folder_lock as lock

    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.01)
    with lock.output_lock(tmp_path, None) as path:
        os.utime(path, (0, 0))
        for _ in range(500):  # wait for a beat, counted in attempts rather than seconds
            if path.stat().st_mtime > 0:
                break
            threading.Event().wait(0.01)
        assert path.stat().st_mtime > 0
    assert not path.exists()


def test_parts_of_one_split_share_the_out_and_others_are_refused(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    other = _lock(out, "part-1-of-2.lock", os.getpid(), [1, 2])  # part 1/2 running right now
    assert not run(raw, out, part=(0, 2)).complete  # part 0/2 runs beside it
    for part, why in (((1, 2), "the same part"), ((0, 3), "another split into parts"), (None, "a whole run")):
        with pytest.raises(AvdataError, match=rf"holds the lock {other}"):
            run(raw, out, part=part)
    other.unlink()
    assert run(raw, out, part=(1, 2)).complete


# -------------------------------------------------------------------------------------------- merge


def test_merge_never_replaces_a_users_readme(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    parts = [tmp_path / "p0", tmp_path / "p1"]
    run(raw, parts[0], part=(0, 2))
    run(raw, parts[1], part=(1, 2))
    into = tmp_path / "mine"
    planted = plant(into)
    with pytest.raises(AvdataError, match=r"holds README.md, which avdata did not write"):
        merge(into, parts)
    assert survived(into, planted) and not shard_names(into) and not (into / ".avdata").exists()
    (into / "README.md").unlink()
    del planted["README.md"]
    merge(into, parts)
    assert survived(into, planted) and shard_names(into) == listed(into) and len(listed(into)) == 8


def test_merge_never_replaces_a_pulled_dataset(tmp_path):
    """A folder pulled there has no plan record: merge replaced its shards and manifest with another
    preparation's, with no --overwrite to ask for it (prepare refuses the same folder)."""
    from avdata.share.pull import pull

    raw = make_toy_raw(tmp_path / "raw")
    parts = [tmp_path / "p0", tmp_path / "p1"]
    run(raw, parts[0], part=(0, 2))
    run(raw, parts[1], part=(1, 2))
    run(raw, tmp_path / "other", seed=7)
    into = tmp_path / "mine"
    pull(str(tmp_path / "other"), into, progress=False)
    before = {p.name: p.read_bytes() for p in into.iterdir() if p.is_file()}
    with pytest.raises(AvdataError, match=rf"{into}: holds a shards folder avdata did not merge or prepare here "
                                          r"\(manifest.json and more"):
        merge(into, parts)
    assert {p.name: p.read_bytes() for p in into.iterdir() if p.is_file()} == before
    assert not (into / ".avdata" / "plan.json").exists()


def test_merge_copies_only_the_plans_shards_and_names_a_damaged_sidecar(tmp_path):
    raw = make_toy_raw(tmp_path / "raw")
    parts = [tmp_path / "p0", tmp_path / "p1"]
    run(raw, parts[0], part=(0, 2))
    run(raw, parts[1], part=(1, 2))
    # a part folder with a sidecar for a file that is no shard of the plan: never copied
    (parts[0] / "notes.txt").write_bytes(b"part's own note")
    (parts[0] / ".avdata" / "shards" / "notes.txt.json").write_text(json.dumps({"shard": {"sha256": "0" * 64}}))
    side = parts[1] / ".avdata" / "shards" / "train-000001.tar.json"
    good = json.loads(side.read_text())
    side.write_text('{"shard": ')
    into = tmp_path / "merged"
    with pytest.raises(AvdataError, match=rf"{side}: the shard record is unreadable"):
        merge(into, parts)
    side.write_text(json.dumps({"shard": [], "keys": []}))
    with pytest.raises(AvdataError, match=rf"{side}: the shard record lacks a field"):
        merge(into, parts)
    for skipped in ([1], [{"split": "train"}], [{"key": "a", "split": 3}, {"key": "b"}]):  # a traceback each
        side.write_text(json.dumps({**good, "skipped": skipped}))
        with pytest.raises(AvdataError, match=rf"{side}: the shard record lacks a field"):
            merge(into, parts)
    assert not (into / "notes.txt").exists()



def _edit_plan(folder: Path, edit, refingerprint: bool) -> Path:
    from avdata.prepare.state import plan_fingerprint

    path = folder / ".avdata" / "plan.json"
    record = json.loads(path.read_text())
    edit(record)
    if refingerprint:  # what someone making a hostile part folder would do
        record["fingerprint"] = plan_fingerprint(record)
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("edit, refingerprint, why", [
    (lambda r: r["shards"][0].pop("file"), True, r"lists a shard that is not train-000000.tar"),  # KeyError
    (lambda r: r["shards"][0].update(file="../elsewhere/train-000000.tar"), True,
     r"lists a shard that is not train-000000.tar"),
    (lambda r: r.update(shards=[1, 2]), True, r"lists a shard of no split of the plan \(1\)"),  # TypeError
    (lambda r: r.pop("classes"), True, r"lacks its classes"),  # KeyError
    (lambda r: r["shards"][0].update(split="zzz"), True, r"lists a shard of no split"),  # KeyError
    (lambda r: r["options"].update(samples_per_shard=5), False, r"does not match its fingerprint"),
], ids=["no-file", "a-path", "not-dicts", "no-classes", "unknown-split", "edited"])
def test_merge_names_a_part_whose_plan_record_is_damaged_or_edited(tmp_path, edit, refingerprint, why):
    """Each of these ended merge with a traceback (or, edited by hand, went unnoticed) before; nothing is
    written into the destination."""
    raw = make_toy_raw(tmp_path / "raw")
    parts = [tmp_path / "p0", tmp_path / "p1"]
    run(raw, parts[0], part=(0, 2))
    run(raw, parts[1], part=(1, 2))
    plan = _edit_plan(parts[1], edit, refingerprint)
    with pytest.raises(AvdataError, match=rf"{plan}: the plan record {why}"):
        merge(tmp_path / "merged", parts)
    assert not (tmp_path / "merged").exists() or not list((tmp_path / "merged").iterdir())


def test_prepare_overwrites_a_plan_record_it_cannot_read_only_with_overwrite(tmp_path):
    """A plan record damaged, or written by a version with other fields, is another plan: refused without
    --overwrite, replaced with it (not a dead end asking to delete it by hand)."""
    raw = make_toy_raw(tmp_path / "raw")
    out = tmp_path / "out"
    run(raw, out)
    _edit_plan(out, lambda r: r.pop("card"), refingerprint=True)
    with pytest.raises(AvdataError, match="holds shards prepared by a plan this version cannot read"):
        run(raw, out)
    assert run(raw, out, overwrite=True).complete
    assert shard_names(out) == listed(out)


# --------------------------------------------------------------------------------------------- pull


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    run(make_toy_raw(root / "raw"), root / "shards")
    return root / "shards"


def _copy_with(src: Path, dst: Path, change) -> Path:
    import shutil

    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    change(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_pull_of_a_manifest_naming_a_users_file_is_refused(toy_shards, tmp_path):
    """A stranger's manifest listing thesis.pdf as a shard: the schema refuses it before anything is touched."""
    def rename(m):
        m["splits"]["train"]["shards"][0]["file"] = "thesis.pdf"
    served = _copy_with(toy_shards, tmp_path / "served", rename)
    to = tmp_path / "mine"
    planted = plant(to)
    r = cli("pull", str(served), "--to", str(to), "--retries", "0")
    assert r.exit_code == 2 and "$.splits.train.shards[0].file" in r.output and "train-NNNNNN.tar" in r.output
    assert survived(to, planted) and sorted(p.name for p in to.iterdir()) == sorted(planted)


def test_pull_never_replaces_a_users_readme(toy_shards, tmp_path):
    to = tmp_path / "mine"
    planted = plant(to)
    for extra in ([], ["--overwrite"]):
        r = cli("pull", str(toy_shards), "--to", str(to), *extra)
        assert r.exit_code == 2 and "holds README.md, which avdata did not write" in r.output, r.output
    assert survived(to, planted) and sorted(p.name for p in to.iterdir()) == sorted(planted)
    (to / "README.md").unlink()
    del planted["README.md"]
    r = cli("pull", str(toy_shards), "--to", str(to))
    assert r.exit_code == 0 and survived(to, planted) and shard_names(to) == listed(to) and len(listed(to)) == 8


def test_pull_over_the_same_dataset_prepared_otherwise_needs_overwrite(toy_shards, tmp_path):
    to = tmp_path / "mine"
    assert cli("pull", str(toy_shards), "--to", str(to)).exit_code == 0
    before = (to / "manifest.json").read_bytes()
    other = _copy_with(toy_shards, tmp_path / "other", lambda m: m["options"].update(seed=7))
    r = cli("pull", str(other), "--to", str(to))
    assert r.exit_code == 2 and "prepared with other options (seed differs)" in r.output, r.output
    assert (to / "manifest.json").read_bytes() == before
    assert cli("pull", str(toy_shards), "--to", str(to)).exit_code == 0  # the same one again: fine
    r = cli("pull", str(other), "--to", str(to), "--overwrite")
    assert r.exit_code == 0 and json.loads((to / "manifest.json").read_text())["options"]["seed"] == 7


def test_a_pull_cut_short_resumes_over_its_own_files(toy_shards, tmp_path):
    """The names a pull claims (.avdata/owned.json) stay its own when no manifest is there yet."""
    to = tmp_path / "mine"
    assert cli("pull", str(toy_shards), "--to", str(to)).exit_code == 0
    (to / "manifest.json").unlink()  # as a pull cut short leaves it
    (to / "train-000000.tar").write_bytes(b"cut")
    r = cli("pull", str(toy_shards), "--to", str(to))
    assert r.exit_code == 0, r.output
    assert (to / "train-000000.tar").read_bytes() == (toy_shards / "train-000000.tar").read_bytes()


# --------------------------------------------------------------------------------------------- push


def test_push_never_replaces_an_object_it_did_not_write(toy_shards, tmp_path):
    from tests.s3server import moto_s3, s3_env, skip_without_s3

    skip_without_s3()
    (tmp_path / "aws").mkdir()
    with moto_s3(tmp_path / "aws") as server, s3_env(server):
        server.client.create_bucket(Bucket="bkt")
        server.client.put_object(Bucket="bkt", Key="lab/README.md", Body=USER_FILES["README.md"])
        for extra in ([], ["--overwrite"]):
            r = cli("push", str(toy_shards), "s3://bkt/lab", *extra)
            assert r.exit_code == 2 and "lab/README.md is there with no avdata manifest" in r.output, r.output
        assert server.client.get_object(Bucket="bkt", Key="lab/README.md")["Body"].read() == USER_FILES["README.md"]
        keys = [o["Key"] for o in server.client.list_objects_v2(Bucket="bkt")["Contents"]]
        assert keys == ["lab/README.md"]
        # an object of someone else's under one of the shard names, with no avdata manifest beside it
        server.client.put_object(Bucket="bkt", Key="other/train-000000.tar", Body=USER_FILES["a.tar"])
        for extra in ([], ["--overwrite"]):
            r = cli("push", str(toy_shards), "s3://bkt/other", *extra)
            assert r.exit_code == 2 and "holds train-000000.tar, which avdata did not write" in r.output, r.output
        body = server.client.get_object(Bucket="bkt", Key="other/train-000000.tar")["Body"].read()
        assert body == USER_FILES["a.tar"]
        # what avdata uploaded itself is its own: a replacing push cut short after it removed the old
        # manifest resumes over the old shards (other bytes under the same names)
        other = tmp_path / "other"
        run(make_toy_raw(tmp_path / "raw"), other, scale=3)
        assert cli("push", str(toy_shards), "s3://bkt/mine").exit_code == 0
        server.client.delete_object(Bucket="bkt", Key="mine/manifest.json")
        r = cli("push", str(other), "s3://bkt/mine")
        assert r.exit_code == 0 and "0 already there" in r.output, r.output
        body = server.client.get_object(Bucket="bkt", Key="mine/train-000000.tar")["Body"].read()
        assert body == (other / "train-000000.tar").read_bytes() != (toy_shards / "train-000000.tar").read_bytes()


# ------------------------------------------------------------------------------------------- schema


def _manifest(toy_shards: Path) -> dict:
    return json.loads((toy_shards / "manifest.json").read_text())


def test_schema_refuses_shards_listed_twice_or_in_another_split(toy_shards):
    m = _manifest(toy_shards)
    m["splits"]["train"]["shards"].append(dict(m["splits"]["train"]["shards"][0]))
    found = problems(m)
    n = len(m["splits"]["train"]["shards"]) - 1
    assert found == [f"$.splits.train.shards[{n}].file: 'train-000000.tar' is already listed at "
                     "$.splits.train.shards[0].file; a shard file belongs to one split, once"]

    m = _manifest(toy_shards)
    m["splits"]["test"]["shards"] = [dict(s) for s in m["splits"]["train"]["shards"]]  # train data as "test"
    found = problems(m)
    assert found[0] == ("$.splits.test.shards[0].file: shard file name 'train-000000.tar' must be "
                        "test-NNNNNN.tar (the split that lists it, a number, .tar)")
    a, b = "$.splits.test.shards[0].file", "$.splits.train.shards[0].file"  # whichever split comes first
    assert {f"{a}: 'train-000000.tar' is already listed at {b}; a shard file belongs to one split, once",
            f"{b}: 'train-000000.tar' is already listed at {a}; a shard file belongs to one split, once"} & set(found)
    with pytest.raises(AvdataError, match="not a valid manifest"):
        Manifest.from_dict(m)


@pytest.mark.parametrize("name", ["thesis.pdf", "README.md", "train-.tar", "train-0001.tar.tmp", "train-000000.tar.gz",
                                  "val-000000.tar", "train-000000.TAR"])
def test_schema_takes_only_split_shard_names(toy_shards, name):
    m = _manifest(toy_shards)
    m["splits"]["train"]["shards"][0]["file"] = name
    assert [p for p in problems(m) if "must be train-NNNNNN.tar" in p] == [
        f"$.splits.train.shards[0].file: shard file name {name!r} must be train-NNNNNN.tar (the split that lists "
        "it, a number, .tar)"]


def test_verify_refuses_a_manifest_listing_train_shards_as_test(toy_shards, tmp_path):
    folder = _copy_with(toy_shards, tmp_path / "f", lambda m: m["splits"]["test"].update(
        shards=[dict(s) for s in m["splits"]["train"]["shards"]]))
    r = cli("verify", str(folder))
    assert r.exit_code != 0 and "$.splits.test.shards[0].file" in r.output, r.output
