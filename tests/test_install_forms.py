"""Two ways to install: the data side alone (`pip install avdata-scmrl`: prepare, verify, inspect, share, no
torch) and with the trainer (`.[train]`, or `.[dev]` which pins the CPU build used in CI)."""

from __future__ import annotations

import pytest
import ast
import os
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10, which the project supports: pytest's own TOML reader there
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Runs a module with torch made unimportable, as on a machine where only the data side is installed.
WITHOUT_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
import importlib.util
importlib.util.find_spec = (lambda real: lambda name, *a: None if name.split(".")[0] == "torch" else real(name, *a))(
    importlib.util.find_spec)
module, *sys.argv[1:] = sys.argv[1:]
if module == "--import-all":
    import pkgutil, avdata
    names = [m.name for m in pkgutil.walk_packages(avdata.__path__, "avdata.")]
    for name in names:
        __import__(name)
    print(len(names), "modules")
else:
    sys.argv[0] = module
    runpy.run_module(module, run_name="__main__")
"""


def _without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_torch_is_an_extra_not_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()  # noqa: E731
                          for r in reqs}
    assert "torch" not in names(project["dependencies"])
    assert "torch" in names(project["optional-dependencies"]["train"])
    assert "torch==2.13.0" in project["optional-dependencies"]["dev"]  # CI's CPU build


@pytest.mark.slow
def test_the_data_library_never_imports_torch_or_the_trainer():
    bad = []
    for path in sorted((ROOT / "avdata").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("torch", "scmrl")]
    assert not bad, bad


@pytest.mark.slow
def test_every_data_module_and_command_works_without_torch(tmp_path):
    res = _without_torch("--import-all")
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout.split()[0]) > 60  # every module of avdata, the CLI included
    res = _without_torch("avdata.cli.avdata_app", "prepare", "cremad", "--help")
    assert res.returncode == 0 and "--raw" in res.stdout, res.stderr[-3000:]


@pytest.mark.slow
def test_the_trainer_without_torch_says_how_to_install_it(tmp_path):
    res = _without_torch("scmrl.cli.train_app", "--shards", str(tmp_path), "--out", str(tmp_path / "run"))
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, said[-3000:]
    assert "scmrl-train needs PyTorch" in said and 'pip install -e ".[train]"' in said
    assert "Traceback" not in said
    res = _without_torch("scmrl.cli.train_app", "--help")  # help needs no torch
    assert res.returncode == 0 and "--shards" in res.stdout
