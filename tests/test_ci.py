"""What CI checks besides the tests: ruff and mypy run by `.ci/run`, over a set that cannot shrink unseen.

mypy itself is not run here (CI runs it once, in its own step); these tests hold its configuration.
"""

from __future__ import annotations

import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10, which the project supports: pytest's own TOML reader there
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_ci_runs_ruff_and_mypy_before_the_tests():
    commands = _ci_commands()
    assert "python -m ruff check ." in commands
    # no arguments: mypy checks the `files` of [tool.mypy] below, the one list of what is checked
    assert "python -m mypy" in commands
    assert commands.index("python -m mypy") < commands.index("python -m pytest -n 2")


def test_mypy_checks_every_installed_package_whole():
    cfg = PYPROJECT["tool"]["mypy"]
    installed = {name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert installed == {"avdata", "scmrl"}
    assert sorted(cfg["files"]) == sorted(installed)
    # an override may relax third-party imports only: none may exempt a module of the project from the check
    for override in cfg.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        ours = [m for m in modules if m.split(".")[0] in installed]
        assert not ours, f"pyproject.toml: a [[tool.mypy.overrides]] names the project's own modules {ours}"
        assert not override.get("ignore_errors"), f"ignore_errors for {modules}: fix the errors instead"
    assert "exclude" not in cfg
    assert cfg["warn_unused_ignores"] is True


def test_mypy_is_pinned_in_the_dev_extra():
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    pins = [req for req in dev if re.match(r"mypy\b", req)]
    assert len(pins) == 1 and re.fullmatch(r"mypy==\d+\.\d+(\.\d+)?", pins[0]), pins



#: standard-library modules newer than the oldest Python pyproject.toml allows (3.10)
NEWER_THAN_FLOOR = {"tomllib"}


def test_no_module_imports_what_the_oldest_supported_python_lacks():
    """`requires-python = ">=3.10"`: an unguarded `import tomllib` stopped the whole test run at collection on
    3.10. Such an import must sit in a `try` that handles ModuleNotFoundError."""
    import ast

    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    bad = []
    for path in sorted([*ROOT.glob("avdata/**/*.py"), *ROOT.glob("scmrl/**/*.py"), *ROOT.glob("tests/**/*.py"),
                        *ROOT.glob("benchmarks/**/*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any(isinstance(h.type, ast.Name) and h.type.id in ("ModuleNotFoundError", "ImportError")
                           for h in t.handlers) for n in ast.walk(ast.Module(body=t.body, type_ignores=[]))}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in NEWER_THAN_FLOOR for n in names) and id(node) not in guarded:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad
