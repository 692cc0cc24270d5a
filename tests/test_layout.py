"""The shape of the code base: what the wheel installs, no import cycles, no oversized modules.

These guard the layout of docs/architecture.md: a dataset is one package, each module has one job, and
the installed distribution adds only the project's own top-level names.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("avdata", "scmrl")
#: The command-line packages: the only ones that may import typer or each other's apps.
CLI_PACKAGES = ("avdata.cli", "scmrl.cli")
#: Longest a library module may be without saying at its top why it is longer.
MAX_LINES = 350
LONG_REASON = "Why this file is long:"


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _top_level_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the project that `path` imports when it is imported (module level, not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks do not run
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break
            if isinstance(sub, ast.Import):
                found.update(filter(None, (resolve(a.name) for a in sub.names)))
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                for a in sub.names:
                    hit = resolve(f"{sub.module}.{a.name}") or resolve(sub.module)
                    if hit:
                        found.add(hit)
    found.discard(module)
    return found


@pytest.mark.slow
def test_no_import_cycle_between_modules():
    mods = _modules()
    known = set(mods)
    graph = {m: _top_level_imports(p, m, known) for m, p in mods.items()}
    # a package's __init__ importing its own submodules is not a cycle of jobs; only module -> module edges count
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if m.startswith(n + ".") or n.startswith(m + "."):
                continue  # package <-> its own submodule
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_library_modules_are_small_or_say_why():
    too_long = []
    for pkg in ("avdata", "scmrl"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            if len(lines) > MAX_LINES and not any(LONG_REASON in line for line in lines[:30]):
                too_long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not too_long, (f"modules over {MAX_LINES} lines without '{LONG_REASON}' in their docstring: "
                          + ", ".join(too_long))


#: The reference notes kept outside the repository (beside it, in ../shared); code cites docs/reference.md.
OUTSIDE_NOTES = "REFERENCE" + ".md"


def test_no_citation_of_files_outside_the_repository():
    bad = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if OUTSIDE_NOTES in path.read_text(encoding="utf-8"):
                bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"cite docs/reference.md instead of {OUTSIDE_NOTES}: {bad}"


def test_every_cited_reference_section_exists():
    """Code and docs cite the paper's numbers as `docs/reference.md §N`: each cited N is a section there."""
    import re

    sections = set(re.findall(r"^## §(\d+) ", (ROOT / "docs" / "reference.md").read_text(encoding="utf-8"), re.M))
    sources = [p for pkg in (*PACKAGES, "benchmarks") for p in (ROOT / pkg).rglob("*.py")]
    sources += [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    cited = {(str(p.relative_to(ROOT)), n) for p in sources
             for n in re.findall(r"reference\.md §(\d+)", p.read_text(encoding="utf-8"))}
    missing = sorted(c for c in cited if c[1] not in sections)
    assert len(cited) > 10 and not missing, missing


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_wheel_installs_only_the_projects_top_level_names(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.split("/")[0] in PACKAGES or f in ("pyproject.toml", "README.md"):
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    if res.returncode != 0 and "invalid command 'bdist_wheel'" in res.stderr:
        pytest.skip("this setuptools cannot build wheels without the wheel package")
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"avdata", "scmrl"}, top
    assert "avdata/cli/avdata_app.py" in names and "scmrl/cli/train_app.py" in names
    assert "avdata/datasets/cremad/lists/files.tsv" in names
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:
        assert set(zipfile.ZipFile(wheel).read(top_level[0]).decode().split()) == {"avdata", "scmrl"}


@pytest.mark.slow
def test_a_source_checkout_runs_without_an_install():
    """PYTHONPATH=checkout (a GPU machine that cannot pip-install, a benchmark of another tree) finds the
    command-line apps and the pinned lists, as the wheel installs them."""
    code = ("import sys; sys.meta_path = [m for m in sys.meta_path if 'ditable' not in repr(m)]; "
            "import avdata.cli.avdata_app as a, scmrl.cli.train_app as t; "
            "from avdata.datasets.cremad.sources import pinned_files; "
            "print(a.__file__); print(t.__file__); print(len(pinned_files()))")
    res = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    app, train, n = res.stdout.split()
    assert Path(app) == ROOT / "avdata" / "cli" / "avdata_app.py"
    assert Path(train) == ROOT / "scmrl" / "cli" / "train_app.py"
    assert int(n) == 22326


def _all_imports(path: Path) -> set[str]:
    """Every module name `path` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_library_never_imports_the_cli():
    """The CLI parses arguments and calls the library; the library imports neither the CLI nor typer (so
    it can be used, and its options declared, without them)."""
    bad = []
    for module, path in _modules().items():
        if _in(module, CLI_PACKAGES):
            continue
        for name in sorted(_all_imports(path)):
            if _in(name, CLI_PACKAGES) or _in(name, ("typer", "click")):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "library modules importing the CLI:\n" + "\n".join(bad)


def _unit(module: str) -> str:
    """The package a module belongs to for the package graph: `avdata.fetch` for `avdata.fetch.transfer`;
    a top-level module (`avdata.verify`) is its own unit."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / parts[0] / parts[1]).is_dir() else module


@pytest.mark.slow
def test_no_import_cycle_between_packages():
    """Subpackages depend one way (e.g. prepare -> datasets -> fetch), counting imports inside functions
    too: a lazy import hides a cycle from the module-level check above, not from the design."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        for name in _all_imports(path):
            if name.split(".")[0] not in PACKAGES:
                continue
            while name and name not in mods:
                name = name.rpartition(".")[0]
            a, b = _unit(module), _unit(name) if name else ""
            if b and a != b and b not in PACKAGES:
                graph.setdefault(a, set()).add(b)
    cycles = []
    for a, outs in graph.items():
        for b in outs:
            # b reaches a?
            seen, todo = set(), [b]
            while todo:
                n = todo.pop()
                if n == a:
                    cycles.append(f"{a} -> {b} -> ... -> {a}")
                    break
                if n not in seen:
                    seen.add(n)
                    todo.extend(graph.get(n, ()))
    assert not cycles, "package cycles:\n" + "\n".join(sorted(cycles))


def _layout_block() -> str:
    """The fenced tree of docs/architecture.md's "Layout" section."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_architecture_names_every_module_and_only_modules_that_exist():
    """docs/architecture.md stays true: each library module is named in it (by its name, or by a pattern
    such as `cmd_*.py`), and each `name.py` its layout tree names exists."""
    import fnmatch
    import re

    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", doc))
    patterns = set(re.findall(r"([A-Za-z0-9_]*\*[A-Za-z0-9_*]*)\.py", doc))
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py"]
    unnamed = [str(p.relative_to(ROOT)) for p in files
               if p.stem not in words and not any(fnmatch.fnmatch(p.stem, pat) for pat in patterns)]
    assert not unnamed, f"modules docs/architecture.md does not name: {unnamed}"
    stems = {p.stem for p in files}
    named = set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\.py\b", _layout_block()))
    assert not named - stems, f"docs/architecture.md names modules that do not exist: {sorted(named - stems)}"


def _layout_sections() -> dict[tuple[str, str], str]:
    """The layout tree's text per (package, folder): `avdata/` then `  media/ ...` and its continuation lines
    give ("avdata", "media"); a line of top-level modules (`  owned.py ...`) gives ("avdata", "")."""
    import re

    sections: dict[tuple[str, str], str] = {}
    package, key = "", ""
    for line in _layout_block().splitlines():
        if re.match(r"^[a-z]+/", line):
            package, key = line.split("/", 1)[0], ""
            continue
        head = re.match(r"^  (\S+)", line)
        if head:
            first = head.group(1)
            key = first.split("/", 1)[0] if "/" in first else ""
        sections[(package, key)] = sections.get((package, key), "") + "\n" + line
    return sections


def test_every_module_the_docs_name_exists():
    """A dotted `avdata.x.y` / `scmrl.x.y` in README.md, docs/*.md or BENCHMARKS.md names a module (or a
    module's attribute) that exists: readers look them up (`scmrl.convert` and `avdata.synth.cremad` had
    moved)."""
    import importlib.util
    import re

    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")]
    names = {n for p in pages for n in re.findall(r"\b(?:avdata|scmrl)(?:\.[a-z_]+)+", p.read_text(encoding="utf-8"))}

    def resolves(name: str) -> bool:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            module = ".".join(parts[:i])
            try:
                if importlib.util.find_spec(module) is None:
                    continue
            except ModuleNotFoundError:  # a parent that is a module, not a package
                continue
            if i == len(parts):  # a module: found without importing it (nor its optional dependencies)
                return True
            obj = importlib.import_module(module)
            return all((obj := getattr(obj, a, None)) is not None for a in parts[i:])
        return False

    assert len(names) > 20
    assert not [n for n in sorted(names) if not resolves(n)], [n for n in sorted(names) if not resolves(n)]


def test_every_repository_path_the_docs_name_exists():
    """`avdata/...`, `scmrl/...`, `tests/...`, `benchmarks/...` and `docs/...` paths in README.md, docs/*.md
    and BENCHMARKS.md exist (patterns such as `datasets/<pkg>/` and `cmd_*.py` aside)."""
    import re

    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")]
    pattern = r"(?<![\w./-])((?:avdata|scmrl|tests|benchmarks|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])(?![<*\w])"
    named = {(p.name, m) for p in pages for m in re.findall(pattern, p.read_text(encoding="utf-8"))}
    assert len(named) > 50
    assert not [n for n in sorted(named) if not (ROOT / n[1]).exists()]


def test_docs_name_every_manifest_key():
    """The manifest is a public contract: README.md's shard-format paragraph and architecture.md's Manifest
    contract name every key `Manifest` writes, top-level and per split (`notes` and `sample_stats` were
    written for months before either page named them)."""
    import re

    from avdata.shards.manifest import Manifest, SplitEntry

    keys = set(Manifest._KEYS) | set(SplitEntry._KEYS) | {"order"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    pages = {"README.md": readme.split("`manifest.json` (schema version 1)", 1)[1].split("```", 1)[0],
             "docs/architecture.md": arch.split("### Manifest", 1)[1].split("\n## ", 1)[0]}
    for page, text in pages.items():
        named = set(re.findall(r"`([a-z_]+)", text))
        assert not keys - named - {"schema_version"}, (page, sorted(keys - named))


def test_architecture_names_each_module_in_its_own_folder():
    """A module is named on its own folder's lines of the layout tree, not just somewhere in the page: a new
    `media/files.py` or `data/config.py` passed the test above because "files" and "config" occur elsewhere."""
    import fnmatch
    import re

    sections = _layout_sections()
    misplaced = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "__init__.py":
                continue
            parts = path.relative_to(ROOT / pkg).parts
            text = sections.get((pkg, parts[0] if len(parts) > 1 else ""), "")
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
            patterns = re.findall(r"([A-Za-z0-9_]*\*[A-Za-z0-9_*]*)\.py", text)
            if path.stem not in words and not any(fnmatch.fnmatch(path.stem, pat) for pat in patterns):
                misplaced.append(str(path.relative_to(ROOT)))
    assert not misplaced, f"modules not named in their folder's part of docs/architecture.md's tree: {misplaced}"


#: Built-in errors the library raises only for its own bugs: a user's input raises AvdataError.
BUILTIN_ERRORS = ("ValueError", "KeyError", "TypeError", "RuntimeError")
_BUILT = "a command or recipe declared wrongly: fails as the CLI is built, before any input is read"
_CHECKED_CONFIG = "ModelConfig.__post_init__ (an AvdataError) has checked the setting already"
_DECODED_SHAPES = "the batches' shapes: scmrl.data.decode refuses a sample of another layout (FieldError)"
#: The allow-list, "file:function" -> why no user input (an option value, a file, a shard, a manifest,
#: a config, a checkpoint) reaches it.
INTERNAL_RAISES = {
    "avdata/cli/cmd_prepare.py:_overrides": _BUILT,
    "avdata/cli/dataclass_options.py:typer_params": _BUILT,
    "avdata/cli/dataclass_options.py:command_from": _BUILT,
    "avdata/media/audio.py:spectrogram": "its callers mix the audio down to mono first",
    "avdata/shards/jpeg.py:encode_jpeg": "frames come from the video reader as uint8 [H, W, 3]",
    "avdata/shards/manifest.py:summarize_stat": "read_sidecar refuses a shard record's empty stats list",
    "avdata/shards/tar.py:encode_sample": "field names and bytes are a recipe's process output, fixed in code",
    "scmrl/data/transforms.py:upsample_event_audio": _DECODED_SHAPES,
    "scmrl/data/transforms.py:static_inputs": "decode picks T frames per clip when frames_per_step is on",
    "scmrl/data/transforms.py:BatchTransform.__post_init__": "TrainConfig checked noise_on; kind is the "
                                                             "manifest's data_kind",
    "scmrl/model/attention.py:SpikingAttention.__init__": _CHECKED_CONFIG,
    "scmrl/model/attention.py:SpikingAttention.forward": "its inputs are the model's own embeddings, whose token "
                                                         "counts build_model checked",
    "scmrl/model/attention.py:CrossModalAttention.__init__": _CHECKED_CONFIG,
    "scmrl/model/embedding.py:SpikingPatchEmbed.__init__": _CHECKED_CONFIG,
    "scmrl/model/embedding.py:SpikingPatchEmbed.forward": _DECODED_SHAPES,
    "scmrl/model/embedding.py:build_embedding": _CHECKED_CONFIG,
    "scmrl/model/lif.py:LIF.__init__": _CHECKED_CONFIG,
    "scmrl/model/losses.py:semantic_alignment_loss": "its inputs are one model's two [B, embed_dim] features",
    "scmrl/model/models.py:_check_input": _DECODED_SHAPES,
    "scmrl/model/models.py:_AudioVisualBase.embed": _DECODED_SHAPES,
    "scmrl/model/models.py:FusionBaseline.__init__": _CHECKED_CONFIG,
    "scmrl/model/models.py:UnimodalSpikformer.__init__": "build_model passes 'audio' or 'visual'",
    "scmrl/model/models.py:build_model": _CHECKED_CONFIG,
    "scmrl/train/schedule.py:make_schedule": "the schedule comes from the protocol table (scmrl.train.protocol)",
}


def _builtin_raises(path: Path) -> tuple[set[str], list[str]]:
    """(functions raising a built-in error, as "Class.method"; classes deriving from one without AvdataError)."""
    found: set[str] = set()
    bad_classes: list[str] = []

    def walk(node: ast.AST, qual: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in child.bases}
                if bases & set(BUILTIN_ERRORS) and not bases & {"AvdataError", "MediaError", "FieldError"}:
                    bad_classes.append(child.name)
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if getattr(exc, "id", None) in BUILTIN_ERRORS:
                    found.add(".".join(qual) or "<module>")
            inner = qual + [child.name] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                else qual
            walk(child, inner)

    walk(ast.parse(path.read_text(encoding="utf-8")), [])
    return found, bad_classes


def test_one_error_type_per_layer():
    """A problem a user can fix is an AvdataError naming the file or option (the CLI prints it without a
    traceback); ValueError, KeyError, TypeError and RuntimeError are raised only at the listed internal
    invariants, and an error class deriving from one of them is an AvdataError too (docs/architecture.md)."""
    sites: set[str] = set()
    bad_classes = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            functions, classes = _builtin_raises(path)
            sites |= {f"{rel}:{name}" for name in functions}
            bad_classes += [f"{rel}:{name}" for name in classes]
    unlisted = sorted(sites - set(INTERNAL_RAISES))
    assert not unlisted, ("raise AvdataError (avdata.errors) for what a user can reach, naming the file or option "
                          "and the fix; or, for an internal invariant, add the site to INTERNAL_RAISES with the "
                          "reason:\n" + "\n".join(unlisted))
    stale = sorted(set(INTERNAL_RAISES) - sites)
    assert not stale, f"INTERNAL_RAISES lists sites that raise no built-in error now: {stale}"
    assert not bad_classes, f"error classes that are not AvdataErrors: {bad_classes}"
