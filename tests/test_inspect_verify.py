"""`avdata verify` and `avdata inspect` (and the contact sheet) on real shards folders, local and over http.

Three kinds of folder: one made by the prepare engine with the toy recipe, one hand-built with the
static audio-visual fields (`frames.npy` uint8 [K,H,W,3], `spec.npy` float32 [F,T]) and one hand-built
with the event fields (`visual.npy` uint16 [T,2,28,28], `audio.npy` uint16 [T,64]).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from avdata.atomic import atomic_write_text
from avdata.shards.card import render_card
from avdata.errors import AvdataError
from avdata.shards.manifest import Manifest, SplitEntry
from tests.manifests import load_manifest
from avdata.datasets.recipe import CardInfo, cls_bytes, sample_json
from avdata.shards.npy import encode_npy
from avdata.shards.tar import shard_name, write_shard

AV_CLASSES = ["dog_bark", "rain", "siren"]
EVENT_CLASSES = ["zero", "one", "two", "three"]
AV_CARD = CardInfo(title="hand-built AV", description="Frames and spectrograms made in a test.",
                   license="CC0", license_id="cc0-1.0", homepage="http://127.0.0.1/", citation="@misc{av}")


# --- building folders ----------------------------------------------------------------------------------


def _av_sample(i: int, label: int, split: str) -> tuple[str, dict[str, bytes]]:
    rng = np.random.default_rng(i)
    frames = rng.integers(0, 256, size=(2, 32, 40, 3), dtype=np.uint8)
    t = 18 + i % 5  # 18..22 time steps: variable-length spectrograms like the real recipes
    spec = (rng.standard_normal((257, t)) - 4.0).astype(np.float32)
    key = f"clip{i:04d}"
    meta = {"key": key, "label": label, "label_name": AV_CLASSES[label], "split": split,
            "audio": {"duration_s": round(t * 0.016, 4), "sample_rate": 22050}}
    return key, {"cls": cls_bytes(label), "json": sample_json(meta),
                 "frames.npy": encode_npy(frames), "spec.npy": encode_npy(spec)}


def _event_sample(i: int, label: int, split: str) -> tuple[str, dict[str, bytes]]:
    rng = np.random.default_rng(1000 + i)
    visual = rng.poisson(0.3, size=(8, 2, 28, 28)).astype(np.uint16)
    audio = rng.poisson(1.0, size=(8, 64)).astype(np.uint16)
    key = f"ev{i:04d}"
    meta = {"key": key, "label": label, "split": split, "audio_duration_s": 0.5 + 0.1 * (i % 3)}
    return key, {"cls": cls_bytes(label), "json": sample_json(meta),
                 "visual.npy": encode_npy(visual), "audio.npy": encode_npy(audio)}


def build_folder(out: Path, dataset: str, classes: list[str], make_sample, layout: dict[str, int],
                 per_shard: int, features: dict, skipped: list[dict] | None = None,
                 card: CardInfo = AV_CARD) -> Path:
    """A shards folder written with write_shard + a manifest + a dataset card, like prepare makes.

    layout: split -> number of samples; labels cycle through the classes.
    """
    from dataclasses import asdict

    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(dataset, classes, features, options={"samples_per_shard": per_shard})
    i = 0
    for split, n in layout.items():
        samples = []
        counts = {c: 0 for c in classes}
        for _ in range(n):
            label = i % len(classes)
            samples.append(make_sample(i, label, split))
            counts[classes[label]] += 1
            i += 1
        shards = [write_shard(out / shard_name(split, k // per_shard), samples[k:k + per_shard])
                  for k in range(0, n, per_shard)]
        manifest.splits[split] = SplitEntry.of_shards(shards, counts)
    manifest.skipped = list(skipped or [])
    manifest.save(out)
    atomic_write_text(out / "README.md", render_card(manifest, asdict(card)))
    return out


def make_av_folder(out: Path) -> Path:
    features = {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                "frames.npy": {"dtype": "uint8", "shape": ["K", "H", "W", 3], "meaning": "RGB frames"},
                "spec.npy": {"dtype": "float32", "shape": [257, "T"], "meaning": "log spectrogram"}}
    skipped = [{"key": "bad0001", "split": "train", "path": "a/bad0001.flv", "reason": "video decoded to zero frames"},
               {"key": "bad0002", "split": "train", "path": "a/bad0002.wav", "reason": "truncated WAV"},
               {"key": "bad0003", "split": "test", "path": "a/bad0003.wav", "reason": "truncated WAV"}]
    return build_folder(out, "handmade-av", AV_CLASSES, _av_sample, {"train": 11, "test": 6}, per_shard=4,
                        features=features, skipped=skipped)


def make_event_folder(out: Path) -> Path:
    features = {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                "visual.npy": {"dtype": "uint16", "shape": [8, 2, 28, 28], "meaning": "DVS counts, 0 OFF 1 ON"},
                "audio.npy": {"dtype": "uint16", "shape": [8, 64], "meaning": "cochlea counts"}}
    card = CardInfo(title="hand-built events", description="Event counts made in a test.", license="CC0",
                    license_id="cc0-1.0", homepage="http://127.0.0.1/", citation="@misc{ev}",
                    task_categories=("audio-classification", "image-classification"))
    return build_folder(out, "handmade-events", EVENT_CLASSES, _event_sample, {"train": 10, "val": 4, "test": 4},
                        per_shard=5, features=features, card=card)


def make_toy_folder(out: Path, raw: Path) -> Path:
    from avdata.prepare.engine import PrepareSettings, prepare
    from avdata.datasets.registry import get_recipe, register_recipe
    from tests.toy_recipe import ToyOptions, make_toy_raw

    register_recipe("toy", "tests.toy_recipe:ToyRecipe")
    make_toy_raw(raw, bad=("s004",))
    prepare(get_recipe("toy"), raw, out, ToyOptions(), PrepareSettings(samples_per_shard=4, progress=False))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    return {"av": make_av_folder(root / "av"), "events": make_event_folder(root / "events"),
            "toy": make_toy_folder(root / "toy", root / "toy_raw")}


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of that folder on a loopback http server (stopped after the test)."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def cli(*args: str):
    from avdata.cli.avdata_app import app

    return CliRunner().invoke(app, list(args))


def manifest_shards(folder: Path, split: str) -> list[dict]:
    return load_manifest(folder)["splits"][split]["shards"]


def member_offsets(path: Path) -> list[tuple[int, int]]:
    """(header offset, data offset) of every member."""
    with tarfile.open(path) as tar:
        return [(m.offset, m.offset_data) for m in tar.getmembers()]


# --- verify --------------------------------------------------------------------------------------------


def test_verify_fresh_folders_pass(folders):
    from avdata.verify import verify_shards

    for name, folder in folders.items():
        report = verify_shards(folder)
        m = load_manifest(folder)
        n_shards = sum(len(e["shards"]) for e in m["splits"].values())
        assert report.ok, (name, report.problems)
        assert report.checked == n_shards
        assert report.bytes_checked == sum(s["bytes"] for e in m["splits"].values() for s in e["shards"])
        assert report.warnings == []
        res = cli("verify", str(folder))
        assert res.exit_code == 0, res.output
        assert f"{n_shards} shards OK" in res.output
    quick = verify_shards(folders["av"], quick=True)
    assert quick.ok and quick.quick and quick.checked == 5


def test_verify_flipped_byte_is_a_sha256_mismatch_of_that_file(folders, tmp_path):
    from avdata.verify import verify_shards

    folder = copy_of(folders["av"], tmp_path)
    target = manifest_shards(folder, "train")[1]["file"]
    path = folder / target
    _, data_at = member_offsets(path)[2]  # inside the first sample's frames array, not a header
    raw = bytearray(path.read_bytes())
    raw[data_at + 200] ^= 0x01
    path.write_bytes(bytes(raw))

    report = verify_shards(folder)
    assert not report.ok
    assert report.bad_files == [target]
    assert len(report.problems) == 1 and report.problems[0][1].startswith("sha256 differs")
    assert verify_shards(folder, quick=True).ok  # same size: --quick cannot see it

    res = cli("verify", str(folder))
    assert res.exit_code == 1
    assert target in res.output and "sha256 differs" in res.output
    assert "1 problem(s) in 1 file(s)" in res.output
    res = cli("verify", str(folder), "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["problems"][0]["file"] == target
    assert cli("verify", str(folder), "--split", "test").exit_code == 0  # the damage is in train


def test_verify_truncated_shards(folders, tmp_path):
    from avdata.verify import verify_shards

    folder = copy_of(folders["av"], tmp_path)
    half, boundary = manifest_shards(folder, "train")[0], manifest_shards(folder, "train")[1]
    p = folder / half["file"]
    p.write_bytes(p.read_bytes()[: half["bytes"] // 2])  # cut inside a member's data
    q = folder / boundary["file"]
    header_of_second_sample = member_offsets(q)[4][0]  # 4 fields per sample: member 4 starts sample 2
    q.write_bytes(q.read_bytes()[:header_of_second_sample])  # cut exactly at a member boundary

    damaged = manifest_shards(folder, "train")[2]
    r = folder / damaged["file"]
    raw = bytearray(r.read_bytes())
    raw[member_offsets(r)[4][0] + 3] ^= 0x41  # a byte of the second sample's first member header
    r.write_bytes(bytes(raw))

    report = verify_shards(folder)
    problems = {}
    for file, what in report.problems:
        problems.setdefault(file, []).append(what)
    assert set(problems) == {half["file"], boundary["file"], damaged["file"]}
    assert problems[damaged["file"]][0].startswith("sha256 differs")
    assert problems[damaged["file"]][1].startswith("damaged tar: bad member header")
    for file in (half["file"], boundary["file"]):
        assert any(w.startswith("size differs") and "truncated" in w for w in problems[file])
        assert any("truncated" in w and "tar" in w for w in problems[file])
    assert any("after 1 sample(s)" in w for w in problems[boundary["file"]])

    quick = verify_shards(folder, quick=True)
    assert [f for f, _ in quick.problems] == [half["file"], boundary["file"]]  # same size when damaged
    assert all("size differs" in w for _, w in quick.problems)

    res = cli("verify", str(folder))
    assert res.exit_code == 1 and "truncated" in res.output


def test_verify_missing_and_extra_files(folders, tmp_path):
    from avdata.verify import verify_shards

    folder = copy_of(folders["events"], tmp_path)
    gone = manifest_shards(folder, "val")[0]["file"]
    (folder / gone).unlink()
    shutil.copy(folder / manifest_shards(folder, "train")[0]["file"], folder / "stray-000000.tar")

    report = verify_shards(folder)
    assert report.problems == [(gone, "missing")]
    assert report.warnings == [("stray-000000.tar", "tar file not listed in manifest.json")]
    res = cli("verify", str(folder))
    assert res.exit_code == 1 and gone in res.output and "missing" in res.output and "stray-000000.tar" in res.output
    res = cli("verify", str(folder), "--split", "train", "--split", "test")
    assert res.exit_code == 0 and "3 shards OK" in res.output  # a stray file only warns
    assert verify_shards(folder, splits=["train"]).ok


def test_verify_over_http(folders, tmp_path, serve):
    from avdata.verify import verify_shards

    url = serve(folders["events"])
    report = verify_shards(url)
    assert report.ok and report.checked == 4
    assert verify_shards(url.rstrip("/") + "/manifest.json", quick=True).ok
    res = cli("verify", url)
    assert res.exit_code == 0 and "4 shards OK" in res.output

    broken = copy_of(folders["events"], tmp_path)
    shards = manifest_shards(broken, "train")
    raw = bytearray((broken / shards[0]["file"]).read_bytes())
    raw[member_offsets(broken / shards[0]["file"])[2][1] + 10] ^= 0xFF
    (broken / shards[0]["file"]).write_bytes(bytes(raw))
    (broken / shards[1]["file"]).unlink()
    url = serve(broken)
    report = verify_shards(url)
    assert report.problems[0][0] == shards[0]["file"] and report.problems[0][1].startswith("sha256 differs")
    assert report.problems[1] == (shards[1]["file"], "missing (HTTP 404)")
    assert len(report.problems) == 2
    quick = verify_shards(url, quick=True)
    assert quick.problems == [(shards[1]["file"], "missing (HTTP 404)")]
    assert cli("verify", url).exit_code == 1


@pytest.mark.parametrize("fault", [dict(fail_first=1), dict(drop_after=1000)], ids=["500-once", "dropped-once"])
def test_verify_over_http_reads_a_shard_again_after_a_server_hiccup(folders, fault, monkeypatch):
    """One HTTP 500, or one connection dropped mid-body, was reported as damage ("truncated: N bytes
    missing"): the user re-uploads a dataset that is intact. A shard is read again; one that stays short,
    or a refusal (403) or a wrong hash, is reported after as few reads as it takes."""
    from avdata import samples, verify
    from tests.httpserver import serve_dir

    monkeypatch.setattr(samples, "RETRY_DELAY", 0.0)
    folder = folders["events"]
    first = next(iter(load_manifest(folder)["splits"].values()))["shards"][0]["file"]  # checked first
    with serve_dir(folder, only="*.tar", **fault) as url:
        full = verify.verify_shards(url)
        assert full.ok and full.checked == 4 and full.bytes_checked == sum(
            s["bytes"] for split in load_manifest(folder)["splits"].values() for s in split["shards"])
        assert len(url.requests_for(first)) == 2
    with serve_dir(folder, only="*.tar", **fault) as url:  # --quick: a HEAD each
        assert verify.verify_shards(url, quick=True).ok
        assert len(url.requests_for(first)) == (2 if "fail_first" in fault else 1)
    with serve_dir(folder, only="*.tar", **fault) as url:  # inspect reads every sample once, in order
        from avdata.summary import summarize

        remote, local = summarize(url, progress=False), summarize(folder, progress=False)
        assert remote["splits"] == local["splits"] and remote["splits"]["train"]["read"]["matches_manifest"]
    with serve_dir(folder, only="*.tar", drop_after=1000, drop_times=None) as url:
        report = verify.verify_shards(url)
        assert report.problems[0] == (first, f"size differs: expected {(folder / first).stat().st_size} bytes, "
                                             f"found 1000 (truncated: {(folder / first).stat().st_size - 1000} "
                                             "bytes missing)")
        assert len(url.requests_for(first)) == 1 + samples.REMOTE_RETRIES
    with serve_dir(folder, status_for={first: 403}, corrupt_byte_at=3000, only="*.tar") as url:
        report = verify.verify_shards(url)
        assert report.problems[0] == (first, "cannot be opened (HTTP Error 403: Forbidden)")
        assert report.problems[1][1].startswith("sha256 differs") and len(report.problems) == 4
        assert len(url.requests_for(first)) == 1 and all(len(url.requests_for(f)) == 1 for f, _ in report.problems)


def test_verify_errors_exit_2(tmp_path, folders):
    res = cli("verify", str(tmp_path / "nothing"))
    assert res.exit_code == 2 and "error" in res.output
    res = cli("verify", str(folders["av"]), "--split", "nosuch")
    assert res.exit_code == 2 and "no split 'nosuch'" in res.output
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "manifest.json").write_text('{"schema_version": 1, "dat')
    res = cli("verify", str(tmp_path / "cut"))
    assert res.exit_code == 2 and "not valid JSON" in res.output


# --- inspect -------------------------------------------------------------------------------------------


def test_inspect_json_static_av(folders):
    folder = folders["av"]
    m = load_manifest(folder)
    res = cli("inspect", str(folder), "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["dataset"] == "handmade-av" and s["tool"]["name"] == "avdata" and s["options"] == m["options"]
    assert list(s["splits"]) == list(m["splits"])
    for split, entry in m["splits"].items():
        sp = s["splits"][split]
        assert sp["num_samples"] == entry["num_samples"] and sp["class_counts"] == entry["class_counts"]
        assert sp["num_shards"] == len(entry["shards"])
        assert sp["bytes"] == sum(x["bytes"] for x in entry["shards"])
        assert sp["bytes_per_sample"] == round(sp["bytes"] / entry["num_samples"], 1)
        read = sp["read"]
        assert read["samples"] == entry["num_samples"] and read["complete"] and read["matches_manifest"]
        assert read["class_counts"] == entry["class_counts"]
        frames, spec = read["fields"]["frames.npy"], read["fields"]["spec.npy"]
        assert frames["dtype"] == "uint8" and frames["shape_min"] == frames["shape_max"] == [2, 32, 40, 3]
        assert 0 <= frames["value_min"] <= frames["value_max"] <= 255
        assert spec["dtype"] == "float32" and spec["nonfinite"] == 0
        assert set(read["fields"]) == {"cls", "json", "frames.npy", "spec.npy"}
        assert all(f["count"] == entry["num_samples"] and f["missing"] == 0 for f in read["fields"].values())
    train = s["splits"]["train"]["read"]
    assert train["fields"]["spec.npy"]["shape_min"] == [257, 18]
    assert train["fields"]["spec.npy"]["shape_max"] == [257, 22]
    ts = [18 + i % 5 for i in range(11)]
    d = train["durations"]
    assert d["count"] == 11 and d["min_s"] == pytest.approx(0.288) and d["max_s"] == pytest.approx(0.352)
    assert d["total_s"] == pytest.approx(sum(t * 0.016 for t in ts), abs=1e-3)
    assert s["skipped"]["count"] == 3 and s["skipped"]["by_split"] == {"test": 1, "train": 2}
    assert s["skipped"]["reasons"][0] == {"reason": "truncated WAV", "count": 2}
    assert s["totals"]["num_samples"] == 17 and s["totals"]["samples_read"] == 17


def test_inspect_events_sample_and_split(folders):
    from avdata.summary import summarize

    s = summarize(folders["events"], sample=3)
    for split, sp in s["splits"].items():
        assert sp["read"]["samples"] == 3 and not sp["read"]["complete"]
        assert "matches_manifest" not in sp["read"]
        v, a = sp["read"]["fields"]["visual.npy"], sp["read"]["fields"]["audio.npy"]
        assert v["dtype"] == "uint16" and v["shape_min"] == v["shape_max"] == [8, 2, 28, 28]
        assert a["dtype"] == "uint16" and a["shape_min"] == a["shape_max"] == [8, 64]
        assert sp["read"]["durations"]["count"] == 3
    assert s["totals"]["samples_read"] == 9 and s["totals"]["num_samples"] == 18
    only = summarize(folders["events"], splits=["val"])
    assert list(only["splits"]) == ["val"] and only["splits"]["val"]["read"]["samples"] == 4
    with pytest.raises(AvdataError, match="no split 'nosuch'"):
        summarize(folders["events"], splits=["nosuch"])


def test_inspect_toy_engine_folder_and_tables(folders):
    folder = folders["toy"]
    m = load_manifest(folder)
    res = cli("inspect", str(folder), "--json")
    s = json.loads(res.stdout)
    for split, entry in m["splits"].items():
        assert s["splits"][split]["read"]["class_counts"] == entry["class_counts"]
        x = s["splits"][split]["read"]["fields"]["x.npy"]
        assert x["dtype"] == "int64" and x["shape_min"] == x["shape_max"] == [3]
    assert s["skipped"]["reasons"] == [{"reason": "unreadable toy file", "count": 1}]
    res = cli("inspect", str(folder))
    assert res.exit_code == 0
    for text in ("samples per split and class", "x.npy", "int64", "unreadable toy file", "0.1.0"):
        assert text in res.stdout


def test_inspect_over_http_matches_local(folders, serve):
    from avdata.summary import summarize

    local = summarize(folders["av"])
    remote = summarize(serve(folders["av"]))
    assert remote["location"].startswith("http://127.0.0.1:")
    local.pop("location")
    remote.pop("location")
    assert remote == local


# --- contact sheet ---------------------------------------------------------------------------------------


def _png_stats(path: Path) -> tuple[tuple[int, int], float, int]:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    return (rgb.shape[1], rgb.shape[0]), float(rgb.std()), colours


@pytest.mark.slow
def test_contact_sheet_layout_and_content(folders, tmp_path):
    from avdata.contact_sheet import CELL_W_IN, DPI, HEADER_IN, ROW_H_IN, choose_samples, contact_sheet

    av2 = contact_sheet(folders["av"], tmp_path / "av2.png", per_class=2)
    ev2 = contact_sheet(folders["events"], tmp_path / "ev2.png", per_class=2)
    av1 = contact_sheet(folders["av"], tmp_path / "av1.png", per_class=1, split="test")
    sizes = {}
    for name, path, classes, per_class in (("av2", av2, 3, 2), ("ev2", ev2, 4, 2), ("av1", av1, 3, 1)):
        size, std, colours = _png_stats(path)
        assert size == (round(2 * per_class * CELL_W_IN * DPI), round((HEADER_IN + classes * ROW_H_IN) * DPI))
        assert std > 10 and colours > 100, name  # pictures drawn, not a blank canvas
        sizes[name] = size
    assert sizes["ev2"][1] > sizes["av2"][1] and sizes["ev2"][0] == sizes["av2"][0]  # a row per class
    assert sizes["av1"][0] < sizes["av2"][0]  # a cell pair per sample

    # deterministic choice: the first N of each class in shard order, and the same picture twice
    _, split, rows = choose_samples(folders["av"], 2)
    assert split == "train"
    assert [[k for k, *_ in r] for r in rows] == [["clip0000", "clip0003"], ["clip0001", "clip0004"],
                                                 ["clip0002", "clip0005"]]
    again = contact_sheet(folders["av"], tmp_path / "again.png", per_class=2)
    assert again.read_bytes() == av2.read_bytes()


@pytest.mark.slow
def test_inspect_cli_png_and_toy_sheet(folders, tmp_path):
    png = tmp_path / "sheet" / "ev.png"
    res = cli("inspect", str(folders["events"]), "--sample", "2", "--show", "1", "--png", str(png))
    assert res.exit_code == 0, res.output
    assert png.exists() and f"contact sheet: {png}" in res.stdout
    with Image.open(png) as im:
        assert im.format == "PNG"
    # a folder with nothing to draw still gives a sheet (cells say "no field"), one row per class
    toy_png = tmp_path / "toy.png"
    res = cli("inspect", str(folders["toy"]), "--json", "--png", str(toy_png))
    assert res.exit_code == 0 and json.loads(res.stdout)["contact_sheet"] == str(toy_png)
    assert _png_stats(toy_png)[1] > 0
    res = cli("inspect", str(folders["toy"]), "--show", "2")
    assert res.exit_code == 2 and "--png" in res.output
