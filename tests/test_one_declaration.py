"""One declaration per thing (issue #25): the options every `avdata prepare <name>` / `avdata download <name>`
takes are the fields of one dataclass each, one helper builds every generated dataset command, and prepare
and inspect render the per-class count table with one renderer."""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass

import pytest
from rich.console import Console
from click.testing import CliRunner as ClickRunner
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.cli.cmd_download import DownloadRunOptions, build_download_command
from avdata.cli.cmd_prepare import PrepareRunOptions, build_prepare_command, print_prepare_result
from avdata.cli.dataclass_options import command_from
from avdata.cli.dataset_group import dataset_command
from avdata.datasets.registry import downloads, recipe_class, recipe_names, register_recipe
from avdata.option_fields import opt
from tests.toy_recipe import make_toy_raw

register_recipe("toy", "tests.toy_recipe:ToyRecipe")
runner = CliRunner()


def _options(command) -> dict[str, object]:
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("name", [n for n in recipe_names() if n != "toy"])
def test_prepare_flags_are_the_common_dataclass_then_the_recipes(name):
    recipe = recipe_class(name)
    common = [f.name for f in dataclasses.fields(PrepareRunOptions)
              if f.name != "protocol" or recipe.reference is not None]
    own = [f.name for f in dataclasses.fields(recipe.options_type)]
    params = _options(build_prepare_command(name))
    assert list(params) == common + own  # nothing declared outside the two dataclasses, in help order
    assert params["raw"].help == recipe.raw_help and params["raw"].required
    assert params["samples_per_shard"].default == recipe.samples_per_shard
    for f in dataclasses.fields(PrepareRunOptions):
        if f.name in params and f.name != "raw":
            assert params[f.name].help == f.metadata["help"], f.name
    assert params["jobs"].opts == ["--jobs", "-j"] and params["verbose"].opts == ["--verbose", "-v"]
    for plain in ("strict", "overwrite", "verbose"):  # on-flags only: no --no-strict
        assert params[plain].is_flag and params[plain].secondary_opts == []


@pytest.mark.parametrize("name", list(downloads()))
def test_download_flags_are_the_common_dataclass_then_the_datasets(name):
    own = [f.name for f in dataclasses.fields(downloads()[name].options)]
    params = _options(build_download_command(name))
    assert list(params) == [f.name for f in dataclasses.fields(DownloadRunOptions)] + own
    assert params["jobs"].default == 8 and params["stall_timeout"].opts == ["--stall-timeout"]
    assert params["quick"].is_flag and params["quick"].secondary_opts == []


def test_a_plain_flag_has_no_negative_form():
    res = runner.invoke(app, ["prepare", "cremad", "--raw", "r", "--out", "o", "--no-strict"])
    # click words it "No such option: --no-strict" or "No such option '--no-strict'" by version
    assert res.exit_code == 2 and re.search(r"No such option:? '?--no-strict", res.output)


@dataclass
class Common:
    out: str = opt(help="Where.")
    verbose: bool = opt(False, short="v", negatable=False, help="Talk.")


@dataclass
class Own:
    size: int = opt(3, min=1, help="How big.")


def test_one_helper_builds_a_command_from_two_dataclasses():
    seen = []
    command = dataset_command("thing", (Common, Own), lambda common, own: seen.append((common, own)))
    assert [p.name for p in command.params] == ["out", "verbose", "size"]
    res = ClickRunner().invoke(command, ["--out", "x", "-v", "--size", "5"])
    assert res.exit_code == 0, res.output
    assert seen == [(Common(out="x", verbose=True), Own(size=5))]
    res = ClickRunner().invoke(command, ["--out", "x", "--size", "0"])
    assert res.exit_code == 2 and "--size" in res.output


def test_a_field_declared_in_both_dataclasses_is_refused():
    @dataclass
    class Clash:
        out: str = opt("y", help="Also where.")

    with pytest.raises(ValueError, match=r"\['out'\] are also fields of Clash"):
        command_from((Common, Clash), lambda common, clash: None)


def test_prepare_and_inspect_show_the_same_class_table(tmp_path, monkeypatch):
    from avdata.datasets.registry import get_recipe
    from avdata.prepare.engine import PrepareSettings, prepare
    from avdata.summary import print_shards_summary, summarize
    from tests.toy_recipe import ToyOptions

    raw = make_toy_raw(tmp_path / "raw")
    result = prepare(get_recipe("toy"), raw, tmp_path / "out", ToyOptions(),
                     PrepareSettings(samples_per_shard=4, progress=False))
    m = result.manifest

    def table_rows(text: str) -> list[str]:
        """The class table's header and rows, its splits in the order it shows them, the box lines removed."""
        box = {c: " " for c in map(chr, range(0x2500, 0x2580))}
        lines = [" ".join(line.translate(str.maketrans(box)).split()) for line in text.splitlines()]
        start = next(i for i, line in enumerate(lines) if line.startswith("label class"))
        return [line for line in lines[start:start + len(m.classes) + 4] if line and line[0].isalnum()]

    def expected(splits: list[str]) -> list[str]:
        return [" ".join(["label", "class", *splits])] + [
            f"{i} {c} " + " ".join(str(m.splits[s].class_counts[c]) for s in splits) for i, c in enumerate(m.classes)
        ] + ["all " + " ".join(str(m.splits[s].num_samples) for s in splits)]

    import avdata.cli.cmd_prepare as cmd_prepare

    out = Console(file=io.StringIO(), width=100)
    monkeypatch.setattr(cmd_prepare, "console", out)
    print_prepare_result(result)
    shown = Console(file=io.StringIO(), width=100)
    print_shards_summary(summarize(str(tmp_path / "out")), shown)
    prepared, inspected = table_rows(out.file.getvalue()), table_rows(shown.file.getvalue())
    assert sorted(prepared[0].split()[2:]) == sorted(inspected[0].split()[2:]) == ["test", "train", "val"]
    assert prepared == expected(prepared[0].split()[2:])
    assert inspected == expected(inspected[0].split()[2:])
    assert len(prepared) == len(m.classes) + 2 == 4


# ------------------------------------------------------------------- the model's settings (ModelConfig)

#: a valid value other than both defaults for every setting ModelConfig shares with TrainConfig
_NOT_DEFAULT = {"model": "cmci", "attention": "temporal", "residual_proj": False, "embed_dim": 48, "heads": 6,
                "mlp_ratio": 2.5, "time_steps": 3, "alpha": 0.7, "tau": 3.0, "threshold": 0.6,
                "attn_threshold": 0.5, "detach_membrane": False, "surrogate_alpha": 2.0, "tau_s": 0.2,
                "sao_weight": 0.3, "label_smoothing": 0.05, "lif": "loop"}


def test_every_model_option_is_declared_once_on_model_config():
    from scmrl.model.config import ModelConfig
    from scmrl.train.config import MODEL_OPTIONS, TrainConfig

    model_fields = {f.name: f for f in dataclasses.fields(ModelConfig) if f.metadata}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(MODEL_OPTIONS) == set(model_fields) == set(_NOT_DEFAULT)
    for name, f in model_fields.items():
        shared = train_fields[name].metadata
        assert {k: v for k, v in shared.items() if k != "help"} == {k: v for k, v in f.metadata.items()
                                                                    if k != "help"}, name
        assert shared["help"].startswith(f.metadata["help"]), name  # at most a sentence on the run's default
    # the run's own defaults: decided by the dataset or the protocol when left None
    assert [n for n in model_fields if train_fields[n].default is None] == ["attention", "embed_dim", "time_steps",
                                                                            "tau_s"]
    assert train_fields["embed_dim"].metadata["help"].startswith("Embedding size C. Default: the one the shards'")
    assert train_fields["lif"].metadata["choices"] == ("fused", "loop")


def test_model_config_carries_every_shared_option(tmp_path):
    from avdata.shards.manifest import Manifest
    from scmrl.model.config import ModelConfig
    from scmrl.train.config import TrainConfig, model_config

    for name, value in _NOT_DEFAULT.items():
        assert value != getattr(ModelConfig(num_classes=2), name) and value != getattr(TrainConfig("s", "o"), name)
    manifest = Manifest("cremad", ["a", "b", "c"], {"frames.npy": {}, "spec.npy": {}})
    got = model_config(TrainConfig(shards="s", out="o", image_size=64, **_NOT_DEFAULT), manifest)
    assert {name: getattr(got, name) for name in _NOT_DEFAULT} == _NOT_DEFAULT
    assert (got.num_classes, got.audio_size, got.embedding) == (3, 64, "sps")
    assert (got.lif_spec().v_threshold, got.lif_spec().impl) == (0.6, "loop")  # the neuron's own names


def test_a_model_config_stored_under_the_earlier_names_still_loads():
    from dataclasses import asdict

    from scmrl.model.config import ModelConfig

    old = {k: v for k, v in asdict(ModelConfig(num_classes=4)).items() if k not in ("threshold", "lif")}
    old |= {"v_threshold": 0.8, "lif_impl": "loop"}
    cfg = ModelConfig.from_dict(old)
    assert (cfg.threshold, cfg.lif, cfg.num_classes) == (0.8, "loop", 4)
    assert ModelConfig.stored_fields(old)["threshold"] == 0.8 and "v_threshold" not in ModelConfig.stored_fields(old)
    new = ModelConfig(num_classes=5, threshold=0.9, lif="loop")
    assert ModelConfig.from_dict(asdict(new)) == new


def test_init_from_reads_a_checkpoint_with_the_earlier_names(tmp_path):
    from dataclasses import asdict

    import torch

    from scmrl.model.config import ModelConfig
    from scmrl.model.models import build_model
    from scmrl.train.checkpoint import save_checkpoint
    from scmrl.train.start import init_weights

    cfg = ModelConfig(num_classes=3, embed_dim=16, heads=2, time_steps=2, audio_size=32, visual_size=32)
    torch.manual_seed(0)
    saved = build_model(cfg)
    stored = {k: v for k, v in asdict(cfg).items() if k not in ("threshold", "lif")}
    save_checkpoint(tmp_path / "old.pt", {"model": saved.state_dict(),
                                          "model_config": stored | {"v_threshold": 1.0, "lif_impl": "fused"}})
    torch.manual_seed(1)
    fresh = build_model(cfg)
    init_weights(fresh, cfg, str(tmp_path / "old.pt"))
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), fresh.state_dict().values()))
