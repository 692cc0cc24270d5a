"""`scmrl-convert`: a state dict saved by the authors' code becomes a checkpoint `scmrl-eval` reads.

The reference tensors are made from the parity fixture's names, shapes and seeds (tests/test_parity.py
says how); the converted model must give the reference's logits.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from typer.testing import CliRunner

from avdata.errors import AvdataError
from scmrl.cli.convert_app import convert_app
from scmrl.cli.train_app import eval_app
from scmrl.train.checkpoint import load_checkpoint
from scmrl.model.config import ModelConfig
from scmrl.train.convert import load_reference_state_dict
from scmrl.model.models import build_model
from scmrl.data.synthetic import CLASSES, make_synthetic_av_shards
from tests.test_parity import CASES, _inputs, _reference_state


def _save(sd: dict, path) -> str:
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # as a DDP run saves it
    return str(path)


@pytest.mark.slow
def test_converted_checkpoint_reproduces_the_reference(tmp_path):
    case = CASES["cremad/scmrl-spatiotemporal"]
    ref = _save(_reference_state(case), tmp_path / "ref.pth")
    out = tmp_path / "ours.pt"
    r = CliRunner().invoke(convert_app, [ref, str(out), "--dataset", "cremad", "--heads", "4"])
    assert r.exit_code == 0, r.output
    assert "scmrl (spatiotemporal-reference)" in r.output
    ckpt = load_checkpoint(out)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    assert (cfg.time_steps, cfg.tau_s, cfg.residual_proj) == (4, 0.07, True)
    assert ckpt["classes"] == ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    a, v, _ = _inputs(case["params"], case["seed"])
    with torch.no_grad():
        logits = model(a, v).logits
    torch.testing.assert_close(logits, torch.tensor(case["eval_logits"]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_scmrl_eval_runs_a_converted_checkpoint(tmp_path):
    sd = _reference_state(CASES["cremad/add"])
    g = torch.Generator().manual_seed(0)
    sd["head.weight"] = torch.randn(len(CLASSES), sd["head.weight"].shape[1], generator=g) * 0.1
    sd["head.bias"] = torch.zeros(len(CLASSES))
    shards = make_synthetic_av_shards(tmp_path / "s", 0, 0, 24, per_shard=24, seed=3)
    out = tmp_path / "ours.pt"
    r = CliRunner().invoke(convert_app, [_save(sd, tmp_path / "ref.pth"), str(out), "--dataset", "cremad",
                                         "--classes", ",".join(CLASSES), "--time-steps", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(eval_app, ["--checkpoint", str(out), "--shards", str(shards), "--device", "cpu",
                                      "--workers", "0", "--batch-size", "8", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["samples"] == 24 and sum(res["class_samples"]) == 24 and 0.0 <= res["accuracy"] <= 1.0


def test_single_branch_attention_must_be_named(tmp_path):
    ref = _save(_reference_state(CASES["event/scmrl-spatial"]), tmp_path / "ref.pth")
    r = CliRunner().invoke(convert_app, [ref, str(tmp_path / "o.pt"), "--dataset", "mnistdvs-ntidigits"])
    assert r.exit_code == 2 and "--attention spatial or --attention temporal-reference" in r.output
    r = CliRunner().invoke(convert_app, [ref, str(tmp_path / "o.pt"), "--dataset", "mnistdvs-ntidigits",
                                         "--attention", "spatial", "--heads", "4"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "o.pt")["model_config"]["time_steps"] == 16


def test_class_count_must_match(tmp_path):
    ref = _save(_reference_state(CASES["cremad/add"]), tmp_path / "ref.pth")
    r = CliRunner().invoke(convert_app, [ref, str(tmp_path / "o.pt"), "--dataset", "urbansound8k-av"])
    assert r.exit_code == 2 and "the head has 6 classes, --classes names 10" in r.output
    assert not (tmp_path / "o.pt").exists()


def test_checkpoint_with_pickled_objects_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {"head.weight": torch.zeros(2, 2)}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(AvdataError, match=r"refused: it holds Python objects besides tensors.*"
                                          r"Ask whoever made it for a file of plain tensors"):
        load_reference_state_dict(path)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"head.weight": torch.zeros(2, 2)}, "epoch": 3}, plain)
    assert list(load_reference_state_dict(plain)) == ["head.weight"]
    with pytest.raises(AvdataError, match="not a state dict of the authors"):
        from scmrl.train.convert import infer_config

        infer_config(load_reference_state_dict(plain))


@pytest.mark.slow
def test_a_converted_checkpoint_fine_tunes_with_init_from(tmp_path):
    from scmrl.train.config import TrainConfig
    from scmrl.train.loop import train

    sd = _reference_state(CASES["cremad/add"])
    sd["head.weight"] = torch.randn(len(CLASSES), sd["head.weight"].shape[1],
                                    generator=torch.Generator().manual_seed(1))
    sd["head.bias"] = torch.zeros(len(CLASSES))
    out = tmp_path / "ours.pt"
    r = CliRunner().invoke(convert_app, [_save(sd, tmp_path / "ref.pth"), str(out), "--dataset", "cremad",
                                         "--classes", ",".join(CLASSES), "--time-steps", "2"])
    assert r.exit_code == 0, r.output
    shards = make_synthetic_av_shards(tmp_path / "s", 32, 0, 16, per_shard=32, seed=4)
    run = dict(shards=str(shards), model="add", embed_dim=32, heads=16, time_steps=2, image_size=128, batch_size=32,
               workers=0, epochs=1, max_steps=1, lr=1e-12, protocol="reference", init_from=str(out))
    with pytest.raises(AvdataError, match="another architecture.*embed_dim"):
        train(TrainConfig(out=str(tmp_path / "bad"), **{**run, "embed_dim": 64}))
    train(TrainConfig(out=str(tmp_path / "r"), **run))
    tuned = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["model"]
    # one step at the warm-up lr 1e-6
    torch.testing.assert_close(tuned["head.weight"], sd["head.weight"], atol=1e-5, rtol=0)
    torch.testing.assert_close(tuned["audio_embed.stages.0.conv.weight"], sd["audio_patch_embed.proj_conv.weight"],
                               atol=1e-5, rtol=0)


def test_sizes_a_reference_file_implies_are_checked_before_the_network_is_built(tmp_path):
    """The embedding size is read from one tensor's shape: 32,768 rows (128 KB in the file) made
    scmrl-convert build a network of 32,768 channels (tens of GB of weights) before any check."""
    sd = _reference_state(CASES["cremad/add"])
    sd["head.weight"] = torch.zeros(len(CLASSES), sd["head.weight"].shape[1])
    sd["head.bias"] = torch.zeros(len(CLASSES))
    sd["audio_patch_embed.rpe_conv.weight"] = torch.zeros(1 << 15, 1, 1, 1)
    r = CliRunner().invoke(convert_app, [_save(sd, tmp_path / "ref.pth"), str(tmp_path / "o.pt"), "--dataset",
                                         "cremad", "--classes", ",".join(CLASSES), "--time-steps", "2"])
    assert r.exit_code == 2, r.output
    assert "from the reference, model wants" in " ".join(r.output.split()), r.output
    assert not (tmp_path / "o.pt").exists()
