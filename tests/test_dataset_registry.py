"""The CLI is generated from the registry: every option field of a recipe or a download is a flag with its
help, and a dataset package plus one registry line is all a new dataset needs."""

from __future__ import annotations

import dataclasses
import re
import zipfile

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.datasets import registry
from tests.manifests import load_manifest
from tests.toy_recipe import make_toy_raw

WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}


def help_text(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env=WIDE)
    assert res.exit_code == 0, res.output
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", res.output).replace("│", " ").split())
    return re.sub(r"(\w)- (\w)", r"\1-\2", text)  # a line wrapped at a hyphen ("spoken-digit")


def flag(field: dataclasses.Field) -> str:
    return "--" + (field.metadata.get("flag") or field.name.replace("_", "-"))


@pytest.mark.parametrize("name", list(registry.DATASETS))
def test_prepare_flags_are_the_options_fields(name):
    recipe = registry.recipe_class(name)
    text = help_text("prepare", name)
    for f in dataclasses.fields(recipe.options_type):
        words = " ".join(f.metadata["help"].split()[:6])
        assert flag(f) in text and words in text, (name, f.name)
    for common in ("--raw", "--out", "--jobs", "--samples-per-shard", "--part", "--strict", "--overwrite",
                   "--verbose"):
        assert common in text
    # --protocol only where the authors' protocol differs (AVE's validation split is published: none)
    assert ("--protocol" in text) == (recipe.reference is not None)
    assert f"[default: {recipe.samples_per_shard}" in text and recipe.summary in text, text


@pytest.mark.parametrize("name", list(registry.downloads()))
def test_download_flags_are_the_download_options_fields(name):
    download = registry.get_download(name)
    text = help_text("download", name)
    for f in dataclasses.fields(download.options):
        assert flag(f) in text and " ".join(f.metadata["help"].split()[:6]) in text
    for common in ("--to", "--jobs", "--retries", "--backoff", "--quick", "--stall-timeout", "--verbose"):
        assert common in text
    assert ("--include" in text) == (name == "cremad")


def test_unknown_names_list_the_known_ones(tmp_path):
    for group in ("prepare", "download", "verify-raw"):
        res = CliRunner().invoke(app, [group, "nosuch", "--to", str(tmp_path)], env=WIDE)
        assert res.exit_code == 2 and "nosuch" in res.output and "cremad" in res.output


def test_a_dataset_package_and_its_registry_line_give_download_and_prepare(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.DATASETS, "fake", "tests.fake_dataset")
    mirror = tmp_path / "mirror"
    make_toy_raw(mirror / "files", n_train=8, n_test=4)
    mirror.mkdir(exist_ok=True)
    with zipfile.ZipFile(mirror / "fake.zip", "w") as zf:
        for p in sorted((mirror / "files").iterdir()):
            zf.write(p, p.name)
    raw, out = tmp_path / "raw", tmp_path / "out"
    res = CliRunner().invoke(app, ["download", "fake", "--to", str(raw), "--mirror", str(mirror)], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "fake: 12 files unpacked" in res.output and len(list(raw.glob("*.txt"))) == 12  # the finish step ran
    text = help_text("prepare", "fake")
    assert "--frames" in text and "Frames per clip" in text and "--protocol" not in text
    res = CliRunner().invoke(app, ["prepare", "fake", "--raw", str(raw), "--out", str(out), "--scale", "3",
                                   "--frames", "2"], env=WIDE)
    assert res.exit_code == 0, res.output
    m = load_manifest(out)
    assert m["options"]["scale"] == 3 and m["options"]["frames"] == 2 and m["options"]["samples_per_shard"] == 4
    assert sum(s["num_samples"] for s in m["splits"].values()) == 12
    res = CliRunner().invoke(app, ["prepare", "fake", "--raw", str(raw), "--out", str(out), "--scale", "5"], env=WIDE)
    assert res.exit_code == 2 and "is not one of: 1, 2, 3" in " ".join(res.output.replace("│", " ").split())


def test_a_dataset_brings_its_own_model_defaults_to_the_trainer_and_the_converter(tmp_path, monkeypatch):
    """The trainer and scmrl-convert read a dataset's model settings through the registry: a new dataset's
    package declares them, nothing in scmrl lists datasets."""
    from avdata.datasets.recipe import STATIC_MODEL_DEFAULTS
    from avdata.shards.manifest import Manifest
    from scmrl.train.config import TrainConfig, model_config
    from scmrl.train.convert import dataset_preset

    monkeypatch.setitem(registry.DATASETS, "fake", "tests.fake_dataset")
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_toy_raw(raw, n_train=8, n_test=4)
    res = CliRunner().invoke(app, ["prepare", "fake", "--raw", str(raw), "--out", str(out)], env=WIDE)
    assert res.exit_code == 0, res.output
    manifest = Manifest.load(out / "manifest.json")
    manifest.features = {"frames.npy": {"dtype": "uint8"}, "spec.npy": {"dtype": "float32"}}  # as a static set's
    cfg = model_config(TrainConfig(shards=str(out), out=str(tmp_path / "run")), manifest)
    assert (cfg.embed_dim, cfg.tau_s, cfg.time_steps) == (48, 0.2, 3)
    cfg = model_config(TrainConfig(shards=str(out), out=str(tmp_path / "run"), embed_dim=16, tau_s=0.5), manifest)
    assert (cfg.embed_dim, cfg.tau_s) == (16, 0.5)  # the options still win
    classes, preset = dataset_preset("fake")
    assert classes == list(registry.recipe_class("fake").classes) and (preset.time_steps, preset.image_size) == (3, 32)
    # shards of a dataset this installation does not know get the defaults of their kind of data
    manifest.dataset = "someone-elses"
    cfg = model_config(TrainConfig(shards=str(out), out=str(tmp_path / "run")), manifest)
    assert (cfg.embed_dim, cfg.tau_s) == (STATIC_MODEL_DEFAULTS.embed_dim, STATIC_MODEL_DEFAULTS.tau_s)


@pytest.mark.parametrize("name, embed, tau", [("cremad", 256, 0.07), ("urbansound8k-av", 64, 0.08),
                                              ("mnistdvs-ntidigits", 256, 0.1), ("ave", 256, 0.07)])
def test_the_papers_settings_per_dataset(name, embed, tau):
    defaults = registry.model_defaults(name, events=False)  # docs/reference.md §1
    assert (defaults.embed_dim, defaults.tau_s) == (embed, tau)
