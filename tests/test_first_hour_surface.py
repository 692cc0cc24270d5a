"""The first hour's surface: the contact sheet, inspect's tables, verify after a partial pull, push's help
and its log lines, and the install hints of the optional extras."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from scmrl.data.synthetic import CLASSES, make_synthetic_av_shards


def _shards(tmp_path: Path, n_train: int, n_val: int, n_test: int, name: str = "s") -> Path:
    return make_synthetic_av_shards(tmp_path / name, n_train, n_val, n_test, per_shard=8, seed=1,
                                    frame_shape=(24, 32), spec_shape=(16, 12), frames=3, vary_frames=False)


# --- contact sheet ---------------------------------------------------------------------------------------


def test_contact_sheet_shows_every_class_from_the_other_splits(tmp_path):
    from avdata.contact_sheet import choose_samples

    folder = _shards(tmp_path, 2, 4, 4)  # train holds only 2 of the 4 classes
    _, split, rows = choose_samples(folder, 2)
    assert split.split("+")[0] == "train" and set(split.split("+")) == {"train", "val", "test"}
    assert [len(r) for r in rows] == [2, 2, 2, 2]
    assert {where for r in rows[2:] for _k, _a, where in r} <= {"val", "test"}
    assert rows[0][0][2] == "train"
    _, split, rows = choose_samples(folder, 2, split="train")  # a split asked for is the only one drawn
    assert split == "train" and [len(r) for r in rows] == [1, 1, 0, 0]


def test_contact_sheet_grid_is_as_wide_as_what_is_shown(tmp_path):
    from avdata.contact_sheet import CELL_W_IN, DPI, HEADER_IN, ROW_H_IN, contact_sheet

    folder = _shards(tmp_path, 4, 0, 4)  # 2 samples of each class in all
    png = contact_sheet(folder, tmp_path / "sheet.png", per_class=4)
    with Image.open(png) as im:
        assert im.size == (round(2 * 2 * CELL_W_IN * DPI), round((HEADER_IN + len(CLASSES) * ROW_H_IN) * DPI))


def _texts(fig):
    yield fig._suptitle
    for ax in fig.axes:
        yield from (ax.title, ax._left_title, ax.xaxis.label, *ax.texts)


def test_contact_sheet_labels_fit_their_cells_at_show_1(tmp_path):
    from avdata.contact_sheet import draw_sheet

    folder = _shards(tmp_path, 8, 0, 0)
    long = [f"a class name as long as some real ones get, number {i}" for i in range(len(CLASSES))]
    manifest = json.loads((folder / "manifest.json").read_text())
    rename = dict(zip(manifest["classes"], long))
    manifest["classes"] = long
    for sp in manifest["splits"].values():
        sp["class_counts"] = {rename[k]: v for k, v in sp["class_counts"].items()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    fig = draw_sheet(folder, per_class=1)
    renderer = fig.canvas.get_renderer()
    right = fig.bbox.x1
    checked = 0
    for text in _texts(fig):
        if text is None or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= right, (text.get_text(), box.x1, right)
        checked += 1
    assert checked >= 3 * len(CLASSES)
    titles = [ax._left_title.get_text() for ax in fig.axes if ax._left_title.get_text()]
    assert titles[0].startswith("0: a class name") and titles[0].split("\n")[0].endswith("\u2026")


def test_contact_sheet_captions_name_the_frame(tmp_path):
    from avdata.contact_sheet import draw_sheet

    fig = draw_sheet(_shards(tmp_path, 4, 0, 0), per_class=1)
    labels = [ax.xaxis.label.get_text() for ax in fig.axes]
    assert labels[0] == "frame 2 of 3" and labels[1].startswith("spectrogram 16 x ")


# --- inspect and verify ----------------------------------------------------------------------------------


def test_inspect_tables_fit_80_columns(tmp_path, monkeypatch):
    from rich.console import Console

    from avdata.summary import print_shards_summary, summarize

    console = Console(width=80, record=True, file=open("/dev/null", "w"))
    print_shards_summary(summarize(str(_shards(tmp_path, 8, 0, 4))), console)
    text = console.export_text()
    assert "\u2026" not in text  # nothing cut with an ellipsis
    tables = [line for line in text.splitlines()[2:]]  # below the location and options lines (soft-wrapped)
    assert tables and max(len(line) for line in tables) <= 80
    header = next(line for line in text.splitlines() if line.startswith("field"))
    assert header.split() == ["field", "dtype", "shape", "values", "size", "present"]


def test_verify_after_a_partial_pull_checks_what_is_there(tmp_path):
    source = _shards(tmp_path, 8, 8, 8)
    dest = tmp_path / "pulled"
    runner = CliRunner()
    r = runner.invoke(app, ["pull", str(source), "--to", str(dest), "--split", "test"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(dest)])
    assert r.exit_code == 0, r.output
    assert "split(s) train, val not pulled" in r.output and "1 shards OK" in r.output
    assert "splits: test" in r.output
    r = runner.invoke(app, ["verify", str(dest), "--split", "val"])  # asked for by name: missing
    assert r.exit_code == 1 and "val-000000.tar" in r.output and "missing" in r.output
    (dest / "test-000000.tar").unlink()  # a pulled split's shard gone is still a problem
    r = runner.invoke(app, ["verify", str(dest)])
    assert r.exit_code == 1 and "test-000000.tar" in r.output
    r = runner.invoke(app, ["pull", str(source), "--to", str(dest)])  # the rest: the folder is whole again
    assert r.exit_code == 0, r.output
    assert not (dest / ".avdata" / "pulled-splits.json").exists()
    r = runner.invoke(app, ["verify", str(dest)])
    assert r.exit_code == 0 and "3 shards OK" in r.output and "not pulled" not in r.output
    r = runner.invoke(app, ["pull", str(source), "--to", str(dest), "--split", "val"])  # whole, then one split
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(dest)])
    assert r.exit_code == 0 and "3 shards OK" in r.output and "not pulled" not in r.output


# --- push: help, log lines, install hints -----------------------------------------------------------------


def test_push_help_says_content_is_compared():
    r = CliRunner().invoke(app, ["push", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "right size are skipped" not in r.output
    assert "content is known to be the same" in " ".join(r.output.split())


@pytest.mark.parametrize("verbose", [False, True])
def test_push_hides_storage_libraries_info_lines_unless_verbose(tmp_path, monkeypatch, caplog, verbose):
    import avdata.share.push as push_module

    class Report:
        url = "s3://b/p"

        def summary(self) -> str:
            return "3 uploaded"

    def fake_push(directory, url, jobs, overwrite):
        logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
        for _ in range(3):
            logging.getLogger("httpx").info("HTTP Request: PUT http://x/y 200")
        logging.getLogger("avdata.share.push").info("uploading 3 objects")
        return Report()

    monkeypatch.setattr(push_module, "push", fake_push)
    caplog.set_level(logging.INFO)
    try:
        r = CliRunner().invoke(app, ["push", str(tmp_path), "s3://b/p", *(["-v"] if verbose else [])])
    finally:
        from avdata.progress import CHATTY_LOGGERS

        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert r.exit_code == 0, r.output
    messages = [rec.getMessage() for rec in caplog.records]
    assert "uploading 3 objects" in messages
    assert ("Found credentials in environment variables." in messages) is verbose
    assert sum(m.startswith("HTTP Request") for m in messages) == (3 if verbose else 0)


def test_missing_extra_hint_works_from_the_checkout(monkeypatch):
    from avdata.errors import AvdataError
    from avdata.fetch.objstore import filesystem
    from avdata.prepare.dask_executor import EXTRA_HINT

    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(AvdataError) as err:
        filesystem("s3://bucket/x")
    assert 'pip install -e ".[s3]" in the avdata checkout (or pip install s3fs)' in str(err.value)
    assert "avdata-scmrl[" not in str(err.value) and "avdata-scmrl[" not in EXTRA_HINT
    assert 'pip install -e ".[dask]"' in EXTRA_HINT


def test_contact_sheet_draws_the_clips_own_frames_not_the_padding():
    """Samples store K frame slots and a short clip repeats its last frame: the sheet draws the middle of
    the json's num_frames (and says "frame 2 of 2"), not the middle slot ("frame 3 of 5", a padding copy)."""
    from avdata.contact_sheet import _arrays
    from avdata.shards.frames import JPEG_FRAMES
    from avdata.shards.jpeg import encode_jpeg
    from avdata.shards.npy import encode_npy

    frames = np.stack([np.full((16, 16, 3), 40 * (i + 1), np.uint8) for i in (0, 1, 1, 1, 1)])  # 2 own + 3 copies
    meta = json.dumps({"num_frames": 2}).encode()
    jpeg = {f"frames.{i}.jpg": encode_jpeg(f, 95) for i, f in enumerate(frames)}
    drawn = _arrays({**jpeg, "json": meta})[JPEG_FRAMES]
    assert drawn.shape[0] == 2 and abs(int(drawn[1].mean()) - 80) <= 2  # frame 2 of 2: the clip's last own
    assert _arrays({"frames.npy": encode_npy(frames), "json": meta})["frames.npy"].shape[0] == 2
    assert _arrays(jpeg)[JPEG_FRAMES].shape[0] == 5  # shards made before padding: every stored frame is own


# --- the demo's folder -----------------------------------------------------------------------------------


def test_demo_rerun_replaces_only_the_clips_an_earlier_demo_recorded(tmp_path):
    """A rerun of `avdata demo` (other --clips or --seed) removes the earlier demo's clips, so its shards hold
    the new clips only; a file it did not record writing is never touched, and stops it first."""
    from avdata.demo import RECORD, _replace_earlier_demo
    from avdata.errors import AvdataError

    out = tmp_path / "demo"
    raw = out / "raw"
    _replace_earlier_demo(out, ["VideoFlash/1001_DFA_ANG_XX.flv", "AudioWAV/1001_DFA_ANG_XX.wav"])
    for name in ("VideoFlash/1001_DFA_ANG_XX.flv", "AudioWAV/1001_DFA_ANG_XX.wav"):  # what that demo wrote
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(b"generated")
    _replace_earlier_demo(out, ["VideoFlash/1002_DFA_ANG_XX.flv"])
    assert not list(raw.rglob("*.*"))  # the stale clips are gone before the new ones are written
    assert json.loads((out / RECORD).read_text()) == {"raw": ["VideoFlash/1002_DFA_ANG_XX.flv"]}

    mine = raw / "VideoFlash" / "1003_DFA_ANG_XX.flv"  # e.g. a real clip: --out pointed at a raw tree's parent
    mine.write_bytes(b"a real clip")
    with pytest.raises(AvdataError, match=r"1003_DFA_ANG_XX\.flv, which no avdata demo recorded writing"):
        _replace_earlier_demo(out, ["VideoFlash/1003_DFA_ANG_XX.flv"])
    assert mine.read_bytes() == b"a real clip"
    assert json.loads((out / RECORD).read_text()) == {"raw": ["VideoFlash/1002_DFA_ANG_XX.flv"]}

    outside = tmp_path / "thesis.wav"  # a record edited to reach outside raw/ owns nothing there
    outside.write_bytes(b"keep")
    mine.unlink()
    (out / RECORD).write_text(json.dumps({"raw": ["../../thesis.wav", "AudioWAV/../../../thesis.wav"]}))
    _replace_earlier_demo(out, [])
    assert outside.read_bytes() == b"keep"

    sheet_only = tmp_path / "mine"  # a folder of the user's with a contact_sheet.png of its own
    sheet_only.mkdir()
    (sheet_only / "contact_sheet.png").write_bytes(b"png")
    with pytest.raises(AvdataError, match="contact_sheet.png, which no avdata demo"):
        _replace_earlier_demo(sheet_only, [])
    assert not (sheet_only / RECORD).exists()


def test_demo_refuses_fewer_clips_than_its_training_command_needs(tmp_path):
    from avdata.demo import MIN_DEMO_CLIPS, run_demo
    from avdata.errors import AvdataError

    with pytest.raises(AvdataError, match=f"at least {MIN_DEMO_CLIPS} good clips"):
        run_demo(tmp_path / "d", clips=MIN_DEMO_CLIPS - 1)
    assert not (tmp_path / "d").exists()
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--clips", "6"])
    assert r.exit_code == 2 and "--clips" in r.output


def test_prepare_into_an_earlier_out_names_what_changed():
    """A rerun into the same --out with other options (or input) is refused; the message says what differs,
    e.g. the --seed changed, instead of "other input or options (see .avdata/plan.json)"."""
    from avdata.prepare.state import _how_plans_differ

    plan = {"dataset": "cremad", "tool_version": "0.1.0", "features": {"cls": {}},
            "options": {"seed": 42, "jpeg_quality": 95, "split": "standard"}, "shards": [{"keys": ["a"]}]}
    assert _how_plans_differ(plan, {**plan, "options": {**plan["options"], "seed": 1, "jpeg_quality": 90}}) == (
        "with other options (--jpeg-quality 95 -> 90, --seed 42 -> 1)")
    assert _how_plans_differ(plan, {**plan, "dataset": "ave"}) == "from another dataset ('cremad', not 'ave')"
    assert _how_plans_differ(plan, {**plan, "tool_version": "0.2.0"}).startswith("by another avdata version (0.1.0")
    assert "features differ" in _how_plans_differ(plan, {**plan, "features": {"cls": {"dtype": "int"}}})
    assert _how_plans_differ(plan, {**plan, "shards": [{"keys": ["b"]}]}).startswith("from other raw input")


def test_demo_next_commands_copy_whole_with_spaces_in_the_path():
    import shlex

    from avdata.demo import inspect_command, train_command

    argv = shlex.split(train_command(Path("my demo/shards"), Path("my demo/run")))
    assert argv[:5] == ["scmrl-train", "--shards", "my demo/shards", "--out", "my demo/run"]
    assert shlex.split(inspect_command(Path("it's/shards"))) == ["avdata", "inspect", "it's/shards"]
    assert train_command(Path("demo/shards"), Path("demo/run")).startswith(  # plain paths print as before
        "scmrl-train --shards demo/shards --out demo/run --epochs 20")


def test_a_shards_path_one_level_off_names_the_folder_meant(tmp_path):
    """`--shards demo` for `demo/shards`, or a shard file for its folder: the message names what to pass."""
    from avdata.errors import AvdataError
    from avdata.shards.manifest import Manifest

    folder = _shards(tmp_path / "demo", 4, 0, 4, name="shards")
    (tmp_path / "demo" / "raw").mkdir()
    with pytest.raises(AvdataError, match=f"no manifest.json here, but {folder} holds one: pass that folder$"):
        Manifest.load(tmp_path / "demo")
    with pytest.raises(AvdataError, match=f"a shard file, not a shards folder or its manifest.json; pass its folder "
                                          f"{folder}$"):
        Manifest.load(next(folder.glob("train-*.tar")))
    with pytest.raises(AvdataError, match="no manifest.json here; is this a shards folder"):  # nothing below
        Manifest.load(tmp_path / "demo" / "raw")
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "demo")])
    assert r.exit_code == 2 and f"but {folder} holds one" in " ".join(r.output.split())


@pytest.mark.parametrize("given", ["top", "top/raw/VideoFlash", "top/raw/AudioWAV"])
def test_prepare_raw_one_level_off_names_the_folder_meant(tmp_path, given):
    """`--raw` at the folder above CREMA-D's tree, or at one of its two media folders: the message says
    which folder to pass instead of sending the user to download it again (and a zip of the tree, that it
    must be unpacked)."""
    for sub in ("VideoFlash", "AudioWAV"):
        (tmp_path / "top" / "raw" / sub).mkdir(parents=True)
    r = CliRunner().invoke(app, ["prepare", "cremad", "--raw", str(tmp_path / given), "--out", str(tmp_path / "o")])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and f"pass --raw {tmp_path / 'top' / 'raw'}, which holds them" in text, text
    assert not (tmp_path / "o").exists()  # the refused run leaves no empty --out behind
    r = CliRunner().invoke(app, ["prepare", "cremad", "--raw", str(tmp_path / "top" / "raw"), "--out",
                                 str(tmp_path / "o")])
    assert r.exit_code == 2 and "avdata download cremad" in " ".join(r.output.split())  # the tree, but empty
    (tmp_path / "cremad.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # a zip of the tree: not read
    r = CliRunner().invoke(app, ["prepare", "cremad", "--raw", str(tmp_path / "cremad.zip"), "--out",
                                 str(tmp_path / "o")])
    assert r.exit_code == 2 and "a file; CREMA-D is read from a folder" in " ".join(r.output.split())


def test_every_console_script_answers_version():
    """`--version` on each console script in pyproject.toml (what a bug report and a manifest's tool.version
    are compared with); eager, so scmrl-train's required --shards/--out are not asked for."""
    from avdata import __version__
    from scmrl.cli.convert_app import convert_app
    from scmrl.cli.train_app import eval_app, train_app

    for cli in (app, train_app, eval_app, convert_app):
        r = CliRunner().invoke(cli, ["--version"])
        assert r.exit_code == 0 and r.output == f"avdata-scmrl {__version__}\n", r.output


def test_serve_refuses_a_folder_that_is_not_there(tmp_path):
    """A typo in `avdata serve DIR` served a folder answering 404 to everything (the pull elsewhere then
    found no manifest); now it stops at once, naming the path."""
    for path, what in ((tmp_path / "shrads", "no such folder"), (tmp_path / "f.txt", "not a folder")):
        if what == "not a folder":
            path.write_text("x")
        r = CliRunner().invoke(app, ["serve", str(path), "--port", "0"])
        assert r.exit_code == 2 and f"error: {path}: {what}" in " ".join(r.output.split()), r.output
