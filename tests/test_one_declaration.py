"""One declaration per thing (issue #25): the options every `avdata prepare <name>` / `avdata download <name>`
takes are the fields of one dataclass each, one helper builds every generated dataset command, and prepare
and inspect render the per-class count table with one renderer."""

from __future__ import annotations

import dataclasses
import io
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
    assert res.exit_code == 2 and "No such option: --no-strict" in res.output


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
