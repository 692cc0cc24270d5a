"""`--protocol reference` sets every row of the README's protocol table (scmrl.train.protocol.TABLE), and
`--protocol ours` keeps our defaults; `avdata prepare --protocol reference` makes no validation split."""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from avdata.errors import AvdataError
from avdata.prepare.protocol import resolve_prepare_protocol
from avdata.shards.manifest import Manifest
from avdata.cli.avdata_app import app as avdata_app
from tests.manifests import load_manifest
from scmrl.train.checkpoint import load_checkpoint
from scmrl.model.config import ModelConfig
from scmrl.train.evaluate import autocast_for
from scmrl.model.models import build_model
from scmrl.train.optim import build_optimizer
from scmrl.train.protocol import TABLE, get_protocol
from scmrl.train.schedule import make_schedule, scaled_lr
from scmrl.data.spec_resize import resize_spectrogram
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train.config import TrainConfig, model_config, resolve_protocol
from scmrl.train.loop import train
from scmrl.data.transforms import BatchTransform

TINY = dict(batch_size=32, lr=5e-3, warmup_epochs=1, embed_dim=32, heads=4, time_steps=2, image_size=32,
            shuffle_buffer=128, workers=0)


def _resolved(protocol: str) -> tuple[TrainConfig, object]:
    return resolve_protocol(TrainConfig(shards="s", out="o", protocol=protocol, amp=True, noise_on="eval"))


def test_the_table_has_a_reason_for_every_row():
    assert len(TABLE) == 10 and all(len(row) == 4 and all(row) for row in TABLE)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for row in TABLE:  # the README prints the table as it is here
        assert "| " + " | ".join(row) + " |" in readme, row[0]


def test_training_frame_is_the_clips_one_frame_under_reference(tmp_path):
    from avdata.shards.location import open_shards
    from scmrl.train.distributed import DistContext
    from scmrl.train.loaders import make_run_data

    source = open_shards(make_synthetic_av_shards(tmp_path / "s", 8, 0, 0, per_shard=8))
    for name, frame in (("reference", "per-clip"), ("ours", "per-epoch")):
        cfg, proto = resolve_protocol(TrainConfig(shards="s", out="o", protocol=name, batch_size=4))
        data = make_run_data(source, [], cfg, model_config(cfg, source), proto, DistContext())
        assert data.train_ds.cfg.train_frame == frame


def test_learning_rate_scales_linearly_under_reference_at_every_batch():
    """The authors' script scales 5e-3 x batch / 1024 at every batch (their run.sh trains at 64); ours takes
    the square-root rule below 128. The two agree from 128 up."""
    ref, ours = (get_protocol(p).lr_rule for p in ("reference", "ours"))
    assert scaled_lr(64, rule=ref) == pytest.approx(3.125e-4)
    assert scaled_lr(64, rule=ours) == pytest.approx(6.25e-4 * 0.5 ** 0.5)
    assert scaled_lr(256, rule=ref) == scaled_lr(256, rule=ours) == pytest.approx(1.25e-3)


def test_precision_float32_under_reference():
    ref, _ = _resolved("reference")
    ours, _ = _resolved("ours")
    assert ref.amp is False and ours.amp is True
    assert isinstance(autocast_for(torch.device("cuda"), ref.amp), contextlib.nullcontext)  # no bf16 autocast
    with warnings.catch_warnings():  # CPU-only machine: torch warns that CUDA autocast is disabled
        warnings.simplefilter("ignore")
        assert isinstance(autocast_for(torch.device("cuda"), ours.amp), torch.autocast)


def test_weight_decay_exclusions():
    model = build_model(ModelConfig(num_classes=4, embed_dim=32, heads=4, time_steps=2, audio_size=32, visual_size=32))
    named = dict(model.named_parameters())
    ref = build_optimizer(model, 1e-3, 1e-4, get_protocol("reference").exclude_1d_decay)
    no_decay, decay = ref.param_groups
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    ids = {id(p): n for n, p in named.items()}
    assert {ids[id(p)] for p in no_decay["params"]} == {n for n, p in named.items() if p.ndim == 1}
    assert all(p.ndim > 1 for p in decay["params"]) and "head.bias" not in {ids[id(p)] for p in decay["params"]}
    assert any(n.endswith("bn.weight") for n in (ids[id(p)] for p in no_decay["params"]))
    ours = build_optimizer(model, 1e-3, 1e-4, get_protocol("ours").exclude_1d_decay)
    assert len(ours.param_groups) == 1 and ours.param_groups[0]["weight_decay"] == 1e-4
    assert len(ours.param_groups[0]["params"]) == len(named)


def test_schedule_steps_per_epoch_as_timm():
    peak, lo, w = 6.25e-4, 1e-5, 1e-6
    ref = make_schedule(get_protocol("reference").schedule, peak, 100, 5, w, lo)
    assert ref.lr_at_step(0, 0, 50) == w and ref.lr_at_step(0, 49, 50) == w  # constant within an epoch
    assert ref.lr_at_step(2, 30, 50) == pytest.approx(w + 2 * (peak - w) / 5)
    # after warm-up the cosine is counted from epoch 0: epoch 5 is already below the peak
    assert ref.lr_at_step(5, 0, 50) == pytest.approx(lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * 5 / 100)))
    assert ref.lr_at_step(99, 10, 50) == pytest.approx(lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * 99 / 100)))
    ours = make_schedule(get_protocol("ours").schedule, peak, 100, 5, w, lo)
    assert ours.lr_at_step(5, 0, 50) == pytest.approx(peak) and ours.lr_at_step(0, 25, 50) > w
    assert ours.lr(100) == pytest.approx(lo)


def test_spectrogram_resize_is_pils_antialiased_bilinear():
    spec = np.random.default_rng(0).standard_normal((257, 190)).astype(np.float32)
    ref = resize_spectrogram(spec, 128, get_protocol("reference").spec_resize)
    # torch's antialiased bilinear follows Pillow's filter: an independent check of the same maths
    want = F.interpolate(torch.from_numpy(spec)[None, None], size=(128, 128), mode="bilinear", antialias=True,
                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ref, want, atol=2e-5)
    ours = resize_spectrogram(spec, 128, get_protocol("ours").spec_resize)
    plain = F.interpolate(torch.from_numpy(spec)[None, None], size=(128, 128), mode="bilinear",
                          align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, plain, atol=1e-4)
    assert ref.std() < 0.8 * ours.std()  # the low-pass shows: shrinking noise by 2 halves its variance


def test_noise_on_training_inputs_per_batch_and_per_time_step():
    ref, proto = _resolved("reference")
    assert ref.noise_on == "train" and proto.noise == "per-batch"
    visual = torch.zeros(2, 40, 40, 3, dtype=torch.uint8)
    visual[0], visual[1] = 255, 116  # a bright sample and one at the normalisation mean (about zero)
    audio = torch.zeros(2, 1, 32, 32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    clean = BatchTransform("static", 3, 32)(audio, visual, False, g())[1]
    tf = BatchTransform("static", 3, 32, noise_snr=0.0, noise_on=ref.noise_on, noise=proto.noise)
    assert torch.equal(tf(audio, visual, False, g())[1], clean)  # evaluation inputs stay clean
    noise = tf(audio, visual, True, g())[1] - BatchTransform("static", 3, 32)(audio, visual, True, g())[1]
    assert not torch.allclose(noise[0], noise[1])  # fresh at every time step
    power = clean.pow(2).mean()  # of the whole batch: both samples get the same noise power
    for b in range(2):
        assert noise[:, b].pow(2).mean() == pytest.approx(float(power), rel=0.05)
    ours = BatchTransform("static", 3, 32, noise_snr=0.0, noise_on="train")
    noise = ours(audio, visual, True, g())[1] - BatchTransform("static", 3, 32)(audio, visual, True, g())[1]
    assert torch.equal(noise[0], noise[1])  # ours: one noisy image repeated over T, per-sample power
    assert noise[:, 0].pow(2).mean() > 2 * noise[:, 1].pow(2).mean()


@pytest.mark.parametrize("dataset,t,c,tau", [("cremad", 4, 256, 0.07), ("urbansound8k-av", 4, 64, 0.08),
                                             ("mnistdvs-ntidigits", 16, 256, 0.1)])
def test_per_dataset_settings_and_attention(dataset, t, c, tau):
    static = dataset != "mnistdvs-ntidigits"
    feats = ({"frames.npy": {}, "spec.npy": {}} if static else {"visual.npy": {"shape": [32, 2, 28, 28]},
                                                                  "audio.npy": {}})
    manifest = Manifest(dataset, ["a", "b"], feats)
    ref = model_config(TrainConfig(shards="s", out="o", protocol="reference"), manifest)
    assert (ref.time_steps, ref.embed_dim, ref.tau_s) == (t, c, tau)
    assert ref.attention == "spatiotemporal-reference"
    ours = model_config(TrainConfig(shards="s", out="o"), manifest)
    assert ours.attention == "spatiotemporal" and ours.time_steps == (4 if static else 32)


@pytest.mark.slow
def test_reference_training_refuses_a_validation_split_and_trains_without_one(tmp_path):
    with_val = make_synthetic_av_shards(tmp_path / "v", 64, 32, 32, per_shard=32, seed=1)
    with pytest.raises(AvdataError, match="validation split"):
        train(TrainConfig(shards=str(with_val), out=str(tmp_path / "r0"), protocol="reference", **TINY))
    no_val = make_synthetic_av_shards(tmp_path / "n", 64, 0, 32, per_shard=32, seed=1)
    res = train(TrainConfig(shards=str(no_val), out=str(tmp_path / "r"), protocol="reference", epochs=2,
                            **{**TINY, "lr": None}))
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ckpt["schedule"]["peak"] == pytest.approx(5e-3 * 32 / 1024)  # linear below batch 128, as theirs
    assert ckpt["train_config"]["protocol"] == "reference" and ckpt["train_config"]["amp"] is False
    assert [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]] == [0.0, 1e-4]
    assert res["val_best_epoch"] is None and res["best_test_acc_over_epochs"] is not None
    assert res["model_config"]["attention"] == "spatiotemporal-reference"


def test_resume_refuses_another_protocol_and_names_what_it_changes():
    """--resume under another --protocol used to end in torch's "loaded state dict has a different number of
    parameter groups" traceback (with --attention given, so the model config agreed); options the checkpoint
    overrides or that change the data order were taken silently."""
    from dataclasses import asdict

    from scmrl.train.start import resume_differences

    started = asdict(TrainConfig(shards="s", out="o", batch_size=64, workers=8))
    ckpt = {"train_config": started, "processes": 2, "device_type": "cpu"}
    same = TrainConfig(shards="s", out="o", resume=True, workers=8, max_steps=5, stop_after_epochs=1, epochs=200)
    assert resume_differences(ckpt, same, world=2) == []  # batch None keeps the run's; --epochs may grow
    with pytest.raises(AvdataError, match="started with --protocol ours, not reference"):
        resume_differences(ckpt, TrainConfig(shards="s", out="o", protocol="reference", attention="spatiotemporal"),
                           world=2)
    unused, changed = resume_differences(ckpt, TrainConfig(shards="s", out="o", lr=1e-3, weight_decay=0.05, seed=1,
                                                           workers=7, batch_size=64, amp=False), world=1,
                                           device_type="cuda")
    assert unused.startswith("not used on --resume: --lr 0.001 (the run's: None), --weight-decay 0.05 (the run's: "
                             "0.0001)")
    assert changed.startswith("resuming with --seed 1 (the run's: 42), --workers 7 (the run's: 8), --no-amp (the "
                              "run's: True), 1 process(es) (the run's: 2), a cuda device (the run's: cpu): from here "
                              "on the data order")


def test_prepare_protocol():
    assert resolve_prepare_protocol("ours", "cremad", None) == {"val_fraction": 0.1}
    assert resolve_prepare_protocol("reference", "cremad", None, split="standard", spectrogram="reference") == \
        {"val_fraction": 0.0}
    # an option left at our default takes the authors' value: UrbanSound8K-AV's cut at the file
    assert resolve_prepare_protocol("reference", "urbansound8k-av", None, train_fraction=0.7, train_cut="recording",
                                    spectrogram="reference") == {"val_fraction": 0.0, "train_cut": "file"}
    with pytest.raises(AvdataError, match="--train-fraction 0.7"):
        resolve_prepare_protocol("reference", "urbansound8k-av", None, train_fraction=0.8)
    with pytest.raises(AvdataError, match="--split standard"):
        resolve_prepare_protocol("reference", "cremad", None, split="actor")
    with pytest.raises(AvdataError, match="--per-class 1000"):
        resolve_prepare_protocol("reference", "mnistdvs-ntidigits", None, per_class=200)
    r = CliRunner().invoke(avdata_app, ["prepare", "urbansound8k-av", "--raw", "nowhere", "--out", "x",
                                        "--protocol", "reference", "--val-fraction", "0.2"])
    assert r.exit_code == 2 and "drop --val-fraction 0.2" in r.output


def test_prepare_reference_cuts_urbansound_at_the_file_and_ours_at_the_recording(tmp_path):
    """Five slices of one recording (fsID 7), then two of another, in one class: 70% is the first 4; the
    reference cuts there (a slice of recording 7 in test), ours at the recording boundary (5 train)."""
    import soundfile as sf
    from PIL import Image

    raw = tmp_path / "raw"
    for side in ("Dataset_v3_sound", "Dataset_v3_vision"):
        (raw / side / "dog_bark").mkdir(parents=True)
    names = [f"7-3-0-{i}" for i in range(5)] + [f"8-3-0-{i}" for i in range(2)]
    rng = np.random.default_rng(0)
    for name in names:
        sf.write(raw / "Dataset_v3_sound" / "dog_bark" / f"{name}.wav", rng.uniform(-0.5, 0.5, 8000), 16000)
        Image.fromarray(np.full((24, 32, 3), 99, np.uint8)).save(raw / "Dataset_v3_vision" / "dog_bark" / f"{name}.jpg")
    counts = {}
    for protocol in ("reference", "ours"):
        out = tmp_path / protocol
        r = CliRunner().invoke(avdata_app, ["prepare", "urbansound8k-av", "--raw", str(raw), "--out", str(out),
                                            "--protocol", protocol, "--val-fraction", "0", "--short-side", "16"])
        assert r.exit_code == 0, r.output
        m = load_manifest(out)
        counts[protocol] = (m["options"]["train_cut"], m["splits"]["train"]["num_samples"],
                            m["splits"]["test"]["num_samples"])
    assert counts == {"reference": ("file", 4, 3), "ours": ("recording", 5, 2)}


def test_the_loader_resizes_spectrograms_as_the_protocol_says(tmp_path):
    import io
    import tarfile

    from avdata.shards.location import open_shards
    from scmrl.data.batching import make_loader
    from scmrl.data.config import StreamConfig

    shards = make_synthetic_av_shards(tmp_path / "s", 0, 0, 4, per_shard=4, seed=2, spec_shape=(64, 24))
    with tarfile.open(shards / "test-000000.tar") as tar:
        raw = {m.name.split(".")[0]: np.load(io.BytesIO(tar.extractfile(m).read()))
               for m in tar.getmembers() if m.name.endswith(".spec.npy")}
    source = open_shards(shards)
    for name in ("reference", "ours"):
        method = get_protocol(name).spec_resize
        cfg = StreamConfig(kind="static", image_size=32, seed=0, with_keys=True, spec_resize=method)
        loader, _ = make_loader(source, "test", cfg, batch_size=4)
        audio, _, _, keys = next(iter(loader))
        for spec, key in zip(audio, keys):
            np.testing.assert_array_equal(spec[0].numpy(), resize_spectrogram(raw[key], 32, method))
