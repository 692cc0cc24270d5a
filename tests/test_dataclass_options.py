"""Flags generated from an options dataclass (cli/dataclass_options.py) reach the dataclass intact."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from avdata.cli.dataclass_options import command_from, options_command, typer_params
from avdata.errors import AvdataError
from avdata.option_fields import opt


@dataclass
class Toy:
    name: str = opt(help="Required name.")
    split: str = opt("standard", help="Which split.", choices=("standard", "actor"))
    jobs: int = opt(1, help="Worker count.", short="-j", min=1, max=64)
    rate: float = opt(0.1, help="A fraction.", min=0.0, max=0.9)
    share: float = opt(0.5, help="With --split actor: a share.", applies_when=("split", "actor"))
    frames: int | None = opt(None, help="Frames per clip.", min=1)
    tau: float | None = opt(None, help="Temperature.")
    amp: bool = opt(True, help="Mixed precision.")
    verbose: bool = opt(False, help="Say more.", flag="loud")
    classes: list[str] = opt(["a", "b"], help="Class names.")
    sizes: list[int] | None = opt(None, help="Sizes.")
    where: Path = opt(Path("x"), help="A path.")
    secret: int = opt(7, help="Not shown.", hidden=True)
    plain: int = 3  # no metadata: generic help

    def __post_init__(self) -> None:
        if self.name == "bad":
            raise AvdataError("name must not be 'bad'")


received: list[tuple[Toy, dict]] = []
app = typer.Typer(add_completion=False)


@app.command("toy")
@options_command(Toy, overrides={"plain": {"help": "Plain, overridden.", "default": 5}})
def toy_cmd(opts: Toy, out: Path = typer.Option(Path("o"), "--out", help="Output folder.")) -> None:
    """Run the toy command."""
    received.append((opts, {"out": out}))


@app.command("other")  # a second command, so Typer keeps the "toy" sub-command name
def other() -> None:
    """Nothing."""


def invoke(*args: str) -> tuple[int, str, Toy | None]:
    received.clear()
    result = CliRunner().invoke(app, ["toy", *args], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    out = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    return result.exit_code, out, received[0][0] if received else None


def test_defaults_and_types() -> None:
    code, out, t = invoke("--name", "n")
    assert code == 0, out
    assert t == Toy(name="n", plain=5)
    assert t.classes == ["a", "b"] and t.sizes is None and t.frames is None and t.tau is None
    assert isinstance(t.rate, float) and isinstance(t.where, Path) and t.amp is True
    assert received[0][1] == {"out": Path("o")}
    assert Toy(name="m").classes is not Toy(name="k").classes  # mutable default copied per instance


def test_values_reach_the_instance() -> None:
    code, out, t = invoke("--name", "n", "--split", "actor", "-j", "4", "--rate", "0.5", "--frames", "8",
                          "--tau", "0.07", "--no-amp", "--loud", "--classes", "x, y,z", "--sizes", "1,2",
                          "--where", "p/q", "--secret", "9", "--plain", "1", "--out", "d")
    assert code == 0, out
    assert t == Toy(name="n", split="actor", jobs=4, rate=0.5, frames=8, tau=0.07, amp=False, verbose=True,
                    classes=["x", "y", "z"], sizes=[1, 2], where=Path("p/q"), secret=9, plain=1)
    assert received[0][1] == {"out": Path("d")}


def test_help_lists_every_flag_with_its_help() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    text = " ".join(out.split())
    for flag, helptext in [("--name", "Required name."), ("--split", "One of: standard, actor."),
                           ("--jobs", "Worker count."), ("-j", ""), ("--rate", "A fraction."),
                           ("--frames", "Frames per clip."), ("--tau", "Temperature."),
                           ("--amp", "Mixed precision."), ("--no-amp", ""), ("--loud", "Say more."),
                           ("--classes", "Class names. Comma-separated."), ("--sizes", "Sizes."),
                           ("--where", "A path."), ("--plain", "Plain, overridden."), ("--out", "Output folder."),
                           ("", "Run the toy command.")]:
        assert flag in text and helptext in text, (flag, helptext)
    assert "--secret" not in text and "--verbose" not in text


@pytest.mark.parametrize("args, flag, words", [
    (["--split", "nope"], "--split", ["'nope' is not one of: standard, actor"]),
    (["--jobs", "0"], "--jobs", ["1"]),  # the bound; Typer versions word the rest differently
    (["--rate", "2"], "--rate", ["0.9"]),
    (["--rate", "-1"], "--rate", ["0"]),  # min=0 is kept, not dropped as falsy
    (["--frames", "0"], "--frames", ["1"]),
    (["--sizes", "1,b"], "--sizes", ["comma-separated list of int"]),
])
def test_bad_values_name_the_flag(args: list[str], flag: str, words: list[str]) -> None:
    code, out, t = invoke("--name", "n", *args)
    text = " ".join(out.replace("│", " ").split())
    assert code == 2 and t is None
    assert f"Invalid value for '{flag}'" in text or f"Invalid value for {flag}" in text, text
    message = text.split("Invalid value for", 1)[1]
    for w in words:
        assert w in message, text


def test_missing_required_and_dataclass_checks() -> None:
    code, out, _ = invoke()
    assert code == 2 and "--name" in out
    code, out, _ = invoke("--name", "bad")
    assert code == 2 and "name must not be 'bad'" in out


def test_params_exclude_and_clashes() -> None:
    names = [p.name for p in typer_params(Toy, exclude=("secret", "plain"))]
    assert names == [f.name for f in dataclasses.fields(Toy) if f.name not in ("secret", "plain")]
    with pytest.raises(ValueError, match="also fields"):
        command_from(Toy, lambda opts, jobs=1: None)
    with pytest.raises(ValueError, match="no default"):
        command_from(Toy, lambda opts: None, exclude=("name",))
    with pytest.raises(ValueError, match="unknown keys"):
        typer_params(Toy, overrides={"jobs": {"hlep": "typo"}})


def test_a_flag_without_effect_with_the_others_is_refused() -> None:
    """`applies_when`: a flag the user gives whose condition does not hold is a usage error naming both
    flags (`--test-fraction` with `--split standard` was dropped without a word); left at its default, the
    field is not in the way."""
    code, out, t = invoke("--name", "n", "--share", "0.3")
    text = " ".join(out.replace("│", " ").split())
    assert code == 2 and t is None
    assert ("--share has an effect only with --split actor, and this command has --split standard: drop --share, "
            "or pass --split actor") in text
    assert invoke("--name", "n", "--share", "0.3", "--split", "actor")[2].share == 0.3
    assert invoke("--name", "n")[2].share == 0.5  # the default, not given: no complaint
