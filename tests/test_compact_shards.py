"""Compact shards (`--frame-format jpeg`, `--spec-dtype float16`): round trip within the documented error,
the same bytes with any --jobs, stock webdataset reads every field, old npy shards still read everywhere,
and the trainer learns from JPEG shards."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

from avdata.contact_sheet import contact_sheet
from avdata.datasets.cremad.recipe import CremadOptions
from avdata.datasets.cremad.synth import make_cremad_raw
from avdata.datasets.registry import get_recipe
from avdata.errors import FieldError
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.shards.frames import JPEG_FRAMES, frame_fields, frames_feature
from avdata.shards.jpeg import MAX_JPEG_PIXELS, decode_jpeg, encode_jpeg, encoder, jpeg_size
from avdata.shards.location import open_shards
from avdata.shards.manifest import Manifest, data_kind
from tests.manifests import load_manifest
from avdata.shards.npy import decode_npy
from avdata.shards.reader import iter_shard
from avdata.shards.tar import write_shard
from avdata.shards.tar_list import manifest_of_files
from avdata.summary import summarize
from avdata.verify import verify_shards
from scmrl.data.config import StreamConfig
from scmrl.data.stream import ShardStream
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.data.spec_resize import resize_spectrogram
from scmrl.train.config import TrainConfig
from scmrl.train.loop import train

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow

SMALL = dict(width=480, height=360, fps=30, duration_range=(1.2, 2.6))  # the real clips' size
#: The documented bounds (avdata.shards.frames, README): JPEG quality 95 and float16 after the 128 resize.
JPEG_MEAN_ERROR = 1.5
SPEC16_MAX_ERROR = 0.01


def _prepare(raw: Path, out: Path, jobs: int = 1, **options) -> Path:
    prepare(get_recipe("cremad"), raw, out, CremadOptions(short_side=256, val_fraction=0.0, **options),
            PrepareSettings(samples_per_shard=4, jobs=jobs, progress=False))
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compact")
    make_cremad_raw(root / "raw", n_clips=8, seed=5, **SMALL)
    return {"raw": root / "raw",
            "npy": _prepare(root / "raw", root / "npy", frame_format="npy"),
            "jpeg16": _prepare(root / "raw", root / "jpeg16", spec_dtype="float16"),
            "jpeg16_j2": _prepare(root / "raw", root / "jpeg16_j2", jobs=2, spec_dtype="float16")}


def _samples(folder: Path) -> dict[str, dict[str, bytes]]:
    return {key: fields for f in sorted(folder.glob("*.tar")) for key, fields in iter_shard(f)}


def test_codec_round_trip_bytes_and_bounds():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([(xx * 2) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    data = encode_jpeg(img, 95)
    assert data == encode_jpeg(img.copy(), 95)  # same bytes every time
    assert jpeg_size(data) == (96, 128, 3)
    back = decode_jpeg(data)
    assert back.shape == img.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img).mean() < 2.0
    assert np.abs(decode_jpeg(encode_jpeg(img, 50)).astype(int) - img).mean() > np.abs(back.astype(int) - img).mean()
    assert "OpenCV" in encoder() and "JPEG" in encoder()
    # the direct-to-RGB decode gives the pixels of a BGR decode converted (R and B not swapped)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(back, bgr[..., ::-1])
    with pytest.raises(FieldError, match="not a JPEG"):
        decode_jpeg(b"\x93NUMPY garbage")
    huge = bytearray(data)  # a header claiming 60000 x 60000 pixels is refused before decoding
    sof = huge.index(b"\xff\xc0")
    huge[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    with pytest.raises(FieldError, match=f"{MAX_JPEG_PIXELS:,}"):
        decode_jpeg(bytes(huge))
    with pytest.raises(ValueError, match="uint8"):
        encode_jpeg(img.astype(np.float32), 95)


def test_jpeg_float16_round_trip_within_the_stated_error(made):
    npy, small = _samples(made["npy"]), _samples(made["jpeg16"])
    assert set(npy) == set(small) and len(npy) >= 6
    errors = []
    for key, fields in small.items():
        frames = decode_npy(npy[key]["frames.npy"])
        names = [f"frames.{i}.jpg" for i in range(frames.shape[0])]
        assert [n for n in fields if n.endswith(".jpg")] == names and "frames.npy" not in fields
        errors += [np.abs(decode_jpeg(fields[n]).astype(int) - f).mean() for n, f in zip(names, frames)]
        spec32, spec16 = decode_npy(npy[key]["spec.npy"]), decode_npy(fields["spec.npy"])
        assert spec32.dtype == np.float32 and spec16.dtype == np.float16 and spec16.shape == spec32.shape
        diff = np.abs(resize_spectrogram(spec16, 128) - resize_spectrogram(spec32, 128))
        assert diff.max() <= SPEC16_MAX_ERROR
    assert 0 < np.mean(errors) <= JPEG_MEAN_ERROR, np.mean(errors)
    m = load_manifest(made["jpeg16"])
    feature = m["features"][JPEG_FRAMES]
    assert feature["encoder"] == encoder() and feature["quality"] == 95 and feature["shape"] == [5, "H", "W", 3]
    assert m["features"]["spec.npy"]["dtype"] == "float16" and "frames.npy" not in m["features"]
    assert m["options"]["frame_format"] == "jpeg" and m["options"]["spec_dtype"] == "float16"
    size = lambda d: sum(f.stat().st_size for f in Path(d).glob("*.tar"))  # noqa: E731
    assert size(made["jpeg16"]) < 0.3 * size(made["npy"])


def test_byte_identical_across_jobs(made):
    for a, b in zip(sorted(made["jpeg16"].glob("*.tar")), sorted(made["jpeg16_j2"].glob("*.tar"))):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert (made["jpeg16"] / "manifest.json").read_bytes() == (made["jpeg16_j2"] / "manifest.json").read_bytes()


def test_stock_webdataset_decodes_every_field(made):
    m = load_manifest(made["jpeg16"])
    urls = [str(made["jpeg16"] / s["file"]) for e in m["splits"].values() for s in e["shards"]]
    n = 0
    for s in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        fields = {k: v for k, v in s.items() if not k.startswith("__")}
        assert not any(isinstance(v, bytes) for v in fields.values()), fields.keys()
        assert isinstance(s["cls"], int) and isinstance(s["json"], dict) and s["spec.npy"].dtype == np.float16
        frames = [v for k, v in fields.items() if k.endswith(".jpg")]
        assert frames and all(f.shape == (256, 341, 3) and f.dtype == np.uint8 for f in frames)
        n += 1
    assert n == sum(e["num_samples"] for e in m["splits"].values())


def test_trainer_reads_both_layouts_alike(made):
    """The same clips as npy and as JPEG shards: same keys, labels and spectrogram size; the chosen frame
    within the JPEG error; only that frame's member is read (the rest stay in the file)."""
    out = {}
    for name in ("npy", "jpeg16"):
        src = open_shards(str(made[name]))
        assert data_kind(src.manifest) == "static"
        cfg = StreamConfig(kind="static", image_size=32, seed=3, train=False, shuffle_buffer=1, with_keys=True)
        out[name] = {key: (a, v, y) for a, v, y, key in ShardStream(src, "train", cfg).iter_slot()}
    assert set(out["npy"]) == set(out["jpeg16"]) and out["npy"]
    for key, (a, v, y) in out["npy"].items():
        a2, v2, y2 = out["jpeg16"][key]
        assert y == y2 and a.shape == a2.shape == (1, 32, 32) and v.shape == v2.shape
        assert (v.int() - v2.int()).abs().float().mean() <= JPEG_MEAN_ERROR
        assert (a - a2).abs().max() <= SPEC16_MAX_ERROR


def test_inspect_verify_contact_sheet_and_bare_tars_read_jpeg_and_npy(made, tmp_path):
    for name in ("npy", "jpeg16"):
        split = summarize(made[name])["splits"]["train"]["read"]
        frames = split["fields"]["frames.npy" if name == "npy" else JPEG_FRAMES]
        assert frames["count"] == split["samples"] and frames["dtype"] == "uint8" and frames["errors"] == 0
        assert frames["shape_max"][1:] == [256, 341, 3] and frames["shape_min"][0] == frames["shape_max"][0] == 5
        assert not any(f.startswith("frames.0") for f in split["fields"])
        report = verify_shards(made[name])
        assert report.ok and not report.warnings, (report.problems, report.warnings)
        png = contact_sheet(made[name], tmp_path / f"{name}.png", per_class=1)
        assert png.stat().st_size > 10_000
        tars = [str(p) for p in sorted(made[name].glob("train-*.tar"))]
        bare, _ = manifest_of_files(tars, get_recipe("cremad").classes)
        assert data_kind(bare) == "static"
        key = "frames.npy" if name == "npy" else JPEG_FRAMES
        assert bare.features[key]["shape"] == ["K", 256, 341, 3]


def _as_jpeg_shards(src: Path, dst: Path) -> Path:
    """Synthetic shards made the old way (frames.npy) rewritten with JPEG frames, nothing else changed."""
    m = Manifest.load(src)
    dst.mkdir(parents=True)
    for entry in m.splits.values():
        for i, shard in enumerate(entry.shards):
            samples = []
            for key, fields in iter_shard(src / shard.file):
                frames = frame_fields(decode_npy(fields.pop("frames.npy")), "jpeg", 95)
                samples.append((key, {**fields, **frames}))
            entry.shards[i] = write_shard(dst / shard.file, samples)
    meaning = m.features.pop("frames.npy")["meaning"]
    m.features.update(frames_feature("jpeg", 95, ["K", 64, 85, 3], meaning))
    m.save(dst)
    return dst


def test_trainer_learns_from_jpeg_shards(tmp_path):
    old = make_synthetic_av_shards(tmp_path / "npy", 160, 0, 48, per_shard=64, seed=2)
    shards = _as_jpeg_shards(old, tmp_path / "jpeg")
    assert json.loads((shards / "manifest.json").read_text())["features"][JPEG_FRAMES]["encoder"] == encoder()
    res = train(TrainConfig(shards=str(shards), out=str(tmp_path / "run"), model="scmrl", epochs=5, batch_size=16,
                            lr=5e-3, warmup_epochs=1, embed_dim=32, heads=4, time_steps=2, image_size=32,
                            shuffle_buffer=128, workers=0))
    # the class is the visual bit (a red or blue cast) and the audio bit: both must come through
    assert res["test_acc_last_epoch"] >= 0.75, res  # one modality alone tops out at 0.5
