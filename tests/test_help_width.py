"""`--help` of every command shows every option name (and every sub-command's summary) whole, on an
80-column terminal (click's plain layout, wrapped) and on a wide one (Typer's rich panels); see
avdata.cli.help_format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter per width: the layout is chosen when the apps are made (at import).
WALK = r"""
import json, click, typer
from typer.testing import CliRunner
from avdata.cli.avdata_app import app
from scmrl.cli.train_app import train_app, eval_app
from scmrl.cli.convert_app import convert_app

def walk(cmd, ctx, path, out):
    out.append((path, cmd))
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            walk(cmd.get_command(ctx, name), ctx, path + [name], out)

def options(cmd):
    return sorted({o for p in cmd.params for o in [*p.opts, *p.secondary_opts]
                   if o.startswith("--") and not getattr(p, "hidden", False)})

runner = CliRunner()
result = {}
names = {}
for prog, a in (("avdata", app), ("scmrl-train", train_app), ("scmrl-eval", eval_app), ("scmrl-convert", convert_app)):
    top = typer.main.get_command(a)
    paths = []
    walk(top, click.Context(top), [], paths)
    for p, cmd in paths:
        r = runner.invoke(a, p + ["--help"], terminal_width=COLUMNS, catch_exceptions=False)
        result[" ".join([prog] + p)] = r.output
        names[" ".join([prog] + p)] = options(cmd)
print(json.dumps({"helps": result, "names": names}))
"""


def _helps(columns: int) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Each command's --help and its long options (from click itself), in a fresh interpreter that sees
    only the registry's datasets (tests of this process may have added some)."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    code = WALK.replace("COLUMNS", str(columns))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    return got["helps"], {k: set(v) for k, v in got["names"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("columns", [80, 120])
def test_every_option_name_is_shown_whole(columns):
    helps, names = _helps(columns)
    assert set(helps) == set(names) and len(helps) >= 20  # every command and every dataset sub-command
    assert "avdata prepare cremad" in helps and "scmrl-train" in helps
    for command, text in helps.items():
        words = set(re.findall(r"--[a-z0-9][a-z0-9-]*", text))
        missing = names[command] - words
        assert not missing, f"{command} --help at {columns} columns does not show {sorted(missing)} whole"
        if columns == 80:
            assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, command
            assert "..." not in text.split("Commands:")[-1] or "Commands:" not in text, command  # whole summaries
    # wide terminals keep Typer's panels; narrow ones get click's plain layout
    assert ("╭─ Options" in helps["scmrl-train"]) == (columns >= 120)


def _every_command():
    import click
    import typer

    from avdata.cli.avdata_app import app
    from scmrl.cli.convert_app import convert_app
    from scmrl.cli.train_app import eval_app, train_app

    def walk(cmd, ctx):
        yield cmd
        for name in getattr(cmd, "list_commands", lambda _ctx: [])(ctx):
            yield from walk(cmd.get_command(ctx, name), ctx)

    for a in (app, train_app, eval_app, convert_app):
        top = typer.main.get_command(a)
        yield from walk(top, click.Context(top))


def test_positional_arguments_are_named_in_capitals():
    """Usage lines and help name arguments as the README does (`avdata merge OUT`, `scmrl-convert REF_CKPT
    OUT`), not `{out}` / `{ref_ckpt}` beside `{DIR}` and `{URL}`."""
    names = {p.metavar or p.name for cmd in _every_command() for p in cmd.params if p.param_type_name == "argument"}
    assert {"OUT", "REF_CKPT", "DIR", "URL", "SHARDS"} <= names and all(n == n.upper() for n in names), names


def test_no_help_text_is_taken_for_rich_markup():
    """Wide terminals draw help through rich, which reads `[word]` as a style tag and drops it (the
    --executor help lost "[dask]"): every command's and option's help comes out of rich's markup as written."""
    from rich.text import Text

    texts = []
    for cmd in _every_command():
        texts += [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    assert len(texts) > 200
    changed = [t for t in texts if Text.from_markup(t).plain != t]
    assert not changed, changed
