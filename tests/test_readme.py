"""The README as a tested contract: every command it prints is a promise, so a test runs it as printed.

The fenced ```bash and ```python blocks of README.md are discovered (never by line number) and each command
is handled by the first rule of `RULES` that matches it:

- run: executed through the real console entry point code (`avdata ...` is `python -m avdata.cli.avdata_app
  ...`, `scmrl-train` is `python -m scmrl.cli.train_app`, `torchrun` is `python -m torch.distributed.run`),
  in a temporary working folder, in README order (the demo first, then the data path producing raw/ and
  shards/ that the later sections use), asserting its exit code (0 unless the rule documents another);
  the sections that need none of that (INDEPENDENT_SECTIONS) run as a second test beside it;
- parse: given to the real CLI's parser with its arguments (nothing runs), for what cannot run here;
- skip: not run at all, with the reason.

What cannot run here as printed is changed by the rule's small, explicit substitutions (SUBSTITUTIONS below
lists the kinds), each with its reason: public hosts become 127.0.0.1 servers holding generated data,
training commands get the smallest settings (`SMALL_TRAIN`), a second machine is a second folder.
Slurm scripts are checked with `bash -n` and then run with sbatch/srun/scontrol stubbed, so every
avdata/scmrl/torchrun command they would start is parsed by the real CLI with the arguments bash gives it.

`test_every_readme_command_has_a_rule` fails for a README command no rule covers, so nothing is silently
skipped: a new command is either run or listed here with the reason. Python blocks run with `python -c` in
the folder where the paths they name exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: What a training command from the README gets added so that it runs in seconds on a CPU (the rest as printed).
SMALL_TRAIN = "--epochs 1 --max-steps 2 --batch-size 2 --embed-dim 32 --heads 4 --image-size 32 --workers 0"

#: The kinds of substitution the rules make, and why (the rules name theirs in their `why`).
SUBSTITUTIONS = {
    "host": "a public host or a placeholder address (lab-server:8000, URL, FOLDER_OR_URL, the default mirror) "
            "becomes a 127.0.0.1 server holding generated data in the real layout",
    "train": f"training commands get `{SMALL_TRAIN}` appended (or one process fewer) to run in seconds on CPU",
    "list": "the pinned CREMA-D list names the 14,884 public files: the generated tree's own list is given",
    "peer": "commands meant for another machine run in a working folder of their own (SECTION_FOLDERS)",
    "optional": "`[--split test]` is run with the optional part given",
}


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # README line of the opening fence
    heading: str
    text: str


@dataclass(frozen=True)
class Command:
    block: Block
    line: int
    text: str  # continuation lines joined, comment removed

    def where(self) -> str:
        return f"README.md:{self.line} ({self.block.heading})"


@dataclass(frozen=True)
class Rule:
    pattern: str  # regex searched in the command text
    action: str  # run | parse | skip
    why: str = ""  # required for parse and skip, and for any substitution
    subs: tuple[tuple[str, str], ...] = ()  # (regex, replacement) applied to the command; {name} from the context
    append: str = ""  # added at the end of the command
    rc: int = 0
    setup: str = ""  # name of a Context method that makes the data the command assumes
    cwd: str = "work"  # work | peer | store
    background: bool = False  # a server: started, used by the following commands, stopped at the end


TRAIN = (("train", ""),)
RULES: tuple[Rule, ...] = (
    Rule(r"^pip install", "skip", "installing is what .ci/run does before the suite; this test runs in that "
         "environment"),
    Rule(r"^python -m pytest", "skip", "the test suite itself (test_ci_runs_the_readme_test_command checks "
         ".ci/run runs this same command)"),
    Rule(r"^avdata demo --out demo$", "run"),
    Rule(r"^avdata download cremad --to raw/cremad", "run", "host, list", append="--mirror {cremad_url} "
         "--sources {cremad_list} --backoff 0", setup="cremad_mirror"),
    Rule(r"^avdata verify-raw cremad raw/cremad", "run", "list", append="--sources {cremad_list}"),
    Rule(r"--executor dask --scheduler tcp://head:8786", "parse", "needs a running Dask cluster and /shared on "
         "every node (tests/test_prepare_dask.py runs a real local cluster)"),
    Rule(r"^dask (scheduler|worker)", "skip", "long-running Dask cluster daemons started by hand on cluster nodes"),
    Rule(r"^avdata prepare cremad --raw raw/cremad --out shards/cremad", "run"),
    Rule(r"^avdata verify shards/cremad$", "run"),
    Rule(r"^avdata inspect shards/cremad", "run"),
    Rule(r"^scmrl-train --shards shards/(cremad|ave) --out runs/(cremad|ave)$", "run", "train", append=SMALL_TRAIN),
    Rule(r"^avdata download urbansound8k-av --to raw/us8k", "run", "host: the Kaggle API replaced by a mirror "
         "serving the same zip", append="--mirror {us8k_url}", setup="us8k_mirror"),
    Rule(r"^avdata prepare urbansound8k-av", "run"),
    Rule(r"^avdata download mnistdvs-ntidigits --to raw/events --mirror URL", "run", "host; the generated "
         "N-TIDIGITS file is not the published one, so its pinned md5 is refused (exit 1) and the test copies it "
         "in afterwards", subs=((r"--mirror URL", "--mirror {events_url}"),), append="--backoff 0 --retries 0",
         rc=1, setup="events_mirror"),
    Rule(r"^avdata prepare mnistdvs-ntidigits", "run", setup="events_h5"),
    Rule(r"^avdata download ave --to raw/ave --mirror FOLDER_OR_URL", "run", "host",
         subs=((r"FOLDER_OR_URL", "{ave_url}"),), append="--backoff 0", setup="ave_mirror"),
    Rule(r"^avdata prepare ave", "run"),
    Rule(r"^scmrl-train --shards http://lab-server:8000/", "run", "host, train",
         subs=((r"http://lab-server:8000/", "{shards_url}/"),), append=SMALL_TRAIN, setup="shards_server"),
    Rule(r"^torchrun --nproc_per_node 4 -m scmrl.cli.train_app", "run", "train: 2 processes (the machine "
         "running the suite has 2 cores)", subs=((r"--nproc_per_node 4", "--nproc_per_node 2"),),
         append=SMALL_TRAIN),
    Rule(r"^scmrl-eval --checkpoint runs/cremad/best.pt --shards shards/cremad", "run", "train",
         append="--workers 0 --batch-size 4"),
    Rule(r"^scmrl-(convert|eval|train) .*(model_best_weights|cremad-ref|converted)", "parse", "needs a "
         "checkpoint made by the authors' code (tests/test_convert.py converts parity-fixture weights and "
         "evaluates and fine-tunes them)"),
    Rule(r"^avdata serve shards/cremad --port 8000", "run", "host: any free port", background=True,
         subs=((r"--port 8000", "--port {free_port}"),)),
    Rule(r"^avdata pull http://lab-server:8000/ --to shards/cremad", "run", "host, peer, optional",
         subs=((r"http://lab-server:8000/", "{served_url}/"), (r"\[(--split test)\]", r"\1")), cwd="peer"),
    Rule(r"^avdata push shards/cremad s3://lab-data/shards/cremad$", "run", "host: moto's S3 server, a GCS "
         "emulator and a loopback Hub on 127.0.0.1 stand in for the stores", setup="object_stores"),
    Rule(r"^avdata verify s3://lab-data/shards/cremad$", "run"),
    Rule(r"^scmrl-train --shards s3://lab-data/shards/cremad --out runs/cremad$", "run", "train",
         append=SMALL_TRAIN),
    Rule(r"^avdata pull gs://lab-data/shards/cremad --to shards/cremad$", "run", "the bucket is filled by "
         "`avdata push` to gs:// first", setup="gs_bucket"),
    Rule(r"^scmrl-eval --checkpoint runs/cremad/best.pt --shards hf://datasets/lab/cremad-shards@v1.0 --split test$",
         "run", "train; the Hub repository's revision v1.0 holds the shards", append="--workers 0 --batch-size 4",
         setup="hub_repo"),
    Rule(r"^export AWS_PROFILE=lab", "skip", "credentials for the real bucket of the next command"),
    Rule(r"^torchrun --nnodes 2 --nproc-per-node 8", "parse", "two nodes with 8 GPUs each "
         "(tests/test_multinode.py runs two nodes on one machine)"),
)

#: Sections whose commands run as on another machine: in a folder of their own ("peer": empty; "store": a
#: copy of the data path's shards/cremad, which the section pushes).
SECTION_FOLDERS = {"Sharing prepared datasets": "peer", "Shards in object storage": "store"}


def read_blocks(path: Path = README) -> list[Block]:
    """Every fenced block with its language, opening line and the heading it sits under."""
    blocks, heading, lang, start, body = [], "", None, 0, []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if lang is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip().replace("`", "")
            m = re.match(r"^```(\w*)\s*$", line)
            if m:
                lang, start, body = m.group(1), i, []
        elif line.startswith("```"):
            blocks.append(Block(lang, start, heading, "\n".join(body)))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"README.md:{start}: a fenced block is not closed"
    return blocks


def is_script(block: Block) -> bool:
    """A Slurm job script or submission: checked with bash -n and run with the scheduler stubbed."""
    return block.lang == "bash" and ("#SBATCH" in block.text or re.search(r"^\S*=?\$?\(?sbatch ", block.text, re.M)
                                     is not None)


def strip_comment(line: str) -> str:
    """The line without a trailing `# ...` comment (a # inside quotes or a word is kept)."""
    out, quote = [], ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).rstrip()


def commands(block: Block) -> list[Command]:
    """The block's commands: continuation lines joined, comments and blank lines dropped, `a && b` split."""
    out, pending, first = [], "", 0
    for i, raw in enumerate(block.text.splitlines(), block.line + 1):
        line = strip_comment(raw)
        if not pending:
            first = i
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        text = (pending + line.strip()).strip()
        pending = ""
        for part in filter(None, (p.strip() for p in text.split(" && "))):
            out.append(Command(block, first, part))
    return out


def rule_for(cmd: Command) -> Rule | None:
    return next((r for r in RULES if re.search(r.pattern, cmd.text)), None)


def bash_commands() -> list[Command]:
    return [c for b in read_blocks() if b.lang == "bash" and not is_script(b) for c in commands(b)]


# ---------------------------------------------------------------------------------------------------------
# fast checks: discovery, the rules, the top of the README, parsing with the real CLIs


def test_every_readme_block_is_run_or_listed():
    blocks = read_blocks()
    assert {b.lang for b in blocks} <= {"bash", "python"}, [(b.line, b.lang) for b in blocks]
    assert sum(b.lang == "python" for b in blocks) >= 1 and sum(is_script(b) for b in blocks) >= 1
    uncovered = [c.where() + ": " + c.text for c in bash_commands() if rule_for(c) is None]
    assert not uncovered, "README commands no rule of tests/test_readme.py runs or lists:\n" + "\n".join(uncovered)
    headings = {b.heading for b in blocks}
    for heading in (*SECTION_FOLDERS, *INDEPENDENT_SECTIONS):
        assert heading in headings, f"README section {heading!r} renamed: update tests/test_readme.py"
    for r in RULES:
        assert r.action in ("run", "parse", "skip")
        assert r.why or (r.action == "run" and not r.subs and not r.append and r.rc == 0), r.pattern


def not_run() -> list[str]:
    """Every README command not run as printed or with substitutions: where, what and why (printed by -s)."""
    return [f"{c.where()}: {r.action}: {c.text}  ({r.why})" for c in bash_commands()
            if (r := rule_for(c)) is not None and r.action != "run"]


def test_commands_not_run_are_listed_with_their_reason():
    listed = not_run()
    print("\n".join(["README commands not run here:", *listed]))
    assert listed and all(line.endswith(")") and "()" not in line for line in listed)
    assert any("pip install" in line for line in listed) and any("torchrun --nnodes 2" in line for line in listed)


def test_a_failing_command_fails_with_its_readme_line(tmp_path):
    with pytest.raises(AssertionError, match=r"README.md:7 \(x\): `avdata verify nope` exited 2, not 0"):
        run_command("avdata verify nope", tmp_path, child_env(), "README.md:7 (x)")


def test_command_discovery_joins_continuations_and_drops_comments():
    block = Block("bash", 10, "x", 'a --x 1 \\\n  --y "a # b"   # note\n\n# only a comment\nb && c')
    assert [(c.line, c.text) for c in commands(block)] == [(11, 'a --x 1 --y "a # b"'), (15, "b"), (15, "c")]


def test_readme_top_is_two_setup_commands_after_a_virtual_environment():
    blocks = read_blocks()
    top = blocks[0]
    text = README.read_text(encoding="utf-8")
    before = text[: text.index("```bash")]
    assert re.search(r"python3? -m venv \S+ && source \S+/bin/activate", before), \
        "say to make a virtual environment first"
    assert "minutes" in before, "say how long the install takes"
    assert [c.text.split(" && ")[0] for c in commands(top)][:1] == ['pip install -e ".[dev]"']
    lines = [line for line in top.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) == 2, lines
    assert "avdata demo" in lines[0] and "python -m pytest" in lines[1]


def test_ci_runs_the_readme_test_command():
    top = commands(read_blocks()[0])
    tests = [c.text for c in top if c.text.startswith("python -m pytest")]
    assert len(tests) == 1
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests[0] in [line.strip() for line in ci], f".ci/run does not run the README's {tests[0]!r}"


def _click(name: str):
    import typer

    if name == "avdata":
        from avdata.cli.avdata_app import app
    elif name == "scmrl-train":
        from scmrl.cli.train_app import train_app as app
    elif name == "scmrl-eval":
        from scmrl.cli.train_app import eval_app as app
    elif name == "scmrl-convert":
        from scmrl.cli.convert_app import convert_app as app
    else:
        raise AssertionError(f"no CLI named {name}")
    return typer.main.get_command(app)


def parse_with_cli(argv: list[str]) -> None:
    """Parse argv with the real CLI (options, types, bounds, subcommands), invoking nothing.

    torchrun's own arguments go to torch's parser, and its `-m MODULE` arguments to that module's CLI."""
    prog, args = argv[0], argv[1:]
    if prog in ("torchrun", "python") and (prog == "torchrun" or args[:1] == ["-m"]):
        if prog == "python":
            prog, args = args[1], args[2:]
            assert prog == "scmrl.cli.train_app", argv
            return parse_with_cli(["scmrl-train", *args])
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(args)
        assert ns.module and ns.training_script == "scmrl.cli.train_app", argv
        return parse_with_cli(["scmrl-train", *ns.training_script_args])
    cmd = _click(prog)
    ctx = cmd.make_context(prog, list(args))
    while hasattr(cmd, "resolve_command"):  # a group (typer bundles its own click: no isinstance)
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)


def test_parse_only_commands_parse_with_the_real_cli():
    parsed = 0
    for c in bash_commands():
        rule = rule_for(c)
        if rule is not None and rule.action == "parse":
            try:
                parse_with_cli(shlex.split(c.text))
            except Exception as exc:  # click's UsageError and the like: name the README line
                raise AssertionError(f"{c.where()}: {c.text}\n  {type(exc).__name__}: {exc}") from None
            parsed += 1
    assert parsed >= 3


def test_a_broken_command_fails_the_parse_check():
    with pytest.raises(Exception, match="--no-such-option"):
        parse_with_cli(["avdata", "verify", "shards/x", "--no-such-option"])
    with pytest.raises(Exception, match="--epochz"):
        parse_with_cli(["torchrun", "--nproc_per_node", "2", "-m", "scmrl.cli.train_app", "--shards", "s",
                        "--out", "o", "--epochz", "1"])


STUBS = r"""
LOG="$README_LOG"
record() { printf '%s\0' "$@" >> "$LOG"; printf '\n' >> "$LOG"; }
avdata() { record avdata "$@"; }
scmrl-train() { record scmrl-train "$@"; }
torchrun() { record torchrun "$@"; }
srun() { "$@"; }
sbatch() { [ "$1" != --parsable ] || echo 4242; }
scontrol() { echo node0; }
source() { :; }
"""


def test_slurm_scripts_are_valid_bash_and_their_commands_parse(tmp_path):
    scripts = [b for b in read_blocks() if is_script(b)]
    assert scripts
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "16", "SLURM_CPUS_PER_TASK": "8",
           "SLURM_NNODES": "2", "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[0-1]",
           "README_LOG": str(tmp_path / "log")}
    seen = 0
    for block in scripts:
        script = tmp_path / f"block{block.line}.sh"
        script.write_text(block.text + "\n")
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"README.md:{block.line}: bash -n: {r.stderr}"
        (tmp_path / "log").write_text("")
        body = "\n".join(line for line in block.text.splitlines() if not line.startswith("#!"))
        r = subprocess.run(["bash", "-c", STUBS + body], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert r.returncode == 0, f"README.md:{block.line}: {r.stderr}"
        for entry in (tmp_path / "log").read_bytes().split(b"\0\n"):
            if entry:
                argv = entry.decode().split("\0")
                try:
                    parse_with_cli(argv)
                except Exception as exc:
                    raise AssertionError(f"README.md:{block.line}: {shlex.join(argv)}\n  {exc}") from None
                seen += 1
    assert seen >= 4


# ---------------------------------------------------------------------------------------------------------
# the slow part: every `run` command in README order, in a temporary working folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The tests' environment, with this checkout first on the path (the commands run in other folders)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(AVDATA_NO_PROGRESS="1", MPLBACKEND="Agg", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1", COLUMNS="160")
    return env


ENTRY = {
    "avdata": [sys.executable, "-m", "avdata.cli.avdata_app"],
    "scmrl-train": [sys.executable, "-m", "scmrl.cli.train_app"],
    "scmrl-eval": [sys.executable, "-c", "from scmrl.cli.train_app import main_eval; main_eval()"],
    "scmrl-convert": [sys.executable, "-m", "scmrl.cli.convert_app"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run"],
    "python": [sys.executable],
}


@dataclass
class Context:
    """The working folders, the loopback servers and the values the rules' substitutions name."""

    work: Path
    stack: contextlib.ExitStack
    env: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)
    ran: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # section -> why its servers could not be made

    def _serve(self, folder: Path) -> str:
        from tests.httpserver import serve_dir

        return str(self.stack.enter_context(serve_dir(folder)))

    def cremad_mirror(self) -> None:
        from avdata.datasets.cremad.recipe import all_clips
        from avdata.datasets.cremad.synth import make_cremad_raw, pick_clips, write_source_list

        site = self.work.parent / "sites" / "cremad"
        # 6 published-train clips per class, so the default --val-fraction 0.1 holds out a val split (and the
        # trainer writes the best.pt that scmrl-eval reads), and one test clip per class
        picked, split = pick_clips(72, seed=1), all_clips()
        clips = [c for c in picked if split[c] == "train"] + [c for c in picked if split[c] == "test"][:6]
        make_cremad_raw(site, clips=clips, seed=1, with_bad=False, width=96, height=72, duration_range=(1.0, 1.5))
        self.values["cremad_list"] = str(write_source_list(site, self.work.parent / "cremad-files.tsv"))
        self.values["cremad_url"] = self._serve(site)

    def us8k_mirror(self) -> None:
        from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw

        site = self.work.parent / "sites" / "us8k"
        make_urbansound_raw(site, per_class=3, as_zip=True, unpaired=0)
        self.values["us8k_url"] = self._serve(site)

    def events_mirror(self) -> None:
        from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5

        site = self.work.parent / "sites" / "events"
        make_mnistdvs_raw(site, per_class=2, scales=(16,))
        self.values["events_h5"] = str(make_ntidigits_h5(site, per_class=2))
        self.values["events_url"] = self._serve(site)

    def events_h5(self) -> None:
        h5 = Path(self.values["events_h5"])
        shutil.copy(h5, self.work / "raw" / "events" / h5.name)

    def ave_mirror(self) -> None:
        from avdata.datasets.ave.synth import make_ave_raw, write_ave_zip

        site = self.work.parent / "sites" / "ave"
        tree = self.work.parent / "ave-tree"
        make_ave_raw(tree, labels=[0, 1], per_class=2, duration=3.0, width=96, height=64)
        write_ave_zip(tree, site / "AVE.zip")
        for name in ("Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt"):
            shutil.copy(tree / name, site / name)
        self.values["ave_url"] = self._serve(site)

    def object_stores(self) -> None:
        """moto's S3 (bucket lab-data), a GCS emulator (bucket lab-data) and a loopback Hub, for this run."""
        from tests.gcsserver import gcs_emulator, make_bucket, skip_without_gcs
        from tests.hubserver import hub_server
        from tests.s3server import moto_s3, skip_without_s3

        skip_without_s3()  # (the dev extra installs them: the test then skips only this section's commands)
        skip_without_gcs()
        store = self.work.parent / "store"
        shutil.copytree(self.work / "shards" / "cremad", store / "shards" / "cremad")
        s3 = self.stack.enter_context(moto_s3(self.work.parent))
        s3.client.create_bucket(Bucket="lab-data")
        gcs = self.stack.enter_context(gcs_emulator())
        make_bucket(gcs, "lab-data")
        self.hub = self.stack.enter_context(hub_server())
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "GOOGLE_APPLICATION_CREDENTIALS",
                  "HF_HUB_OFFLINE"):
            self.env.pop(k, None)
        self.env.update(s3.env, STORAGE_EMULATOR_HOST=gcs, HF_ENDPOINT=self.hub, HF_TOKEN="hf_test",
                        HF_HUB_DISABLE_TELEMETRY="1")

    def gs_bucket(self) -> None:
        run_command("avdata push shards/cremad gs://lab-data/shards/cremad", self.work.parent / "store", self.env,
                    "set-up of gs://lab-data")

    def hub_repo(self) -> None:
        folder = self.work.parent / "store" / "shards" / "cremad"
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        self.hub.create("lab/cremad-shards", files)
        self.hub.repos["lab/cremad-shards"]["v1.0"] = files
        self.hub.shas["lab/cremad-shards", "v1.0"] = "1" * 40

    def shards_server(self) -> None:
        self.values["shards_url"] = self._serve(self.work / "shards" / "cremad")


def substitute(cmd: Command, rule: Rule, ctx: Context) -> str:
    text = cmd.text
    for pattern, repl in rule.subs:
        text = re.sub(pattern, repl.format(**ctx.values) if "{" in repl else repl, text)
    if rule.append:
        text += " " + rule.append.format(**ctx.values)
    return text


def run_command(text: str, cwd: Path, env: dict[str, str], where: str, rc: int = 0, timeout: float = 300) -> str:
    argv = shlex.split(text)
    full = ENTRY[argv[0]] + argv[1:] if argv[0] in ENTRY else argv
    r = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == rc, f"{where}: `{text}` exited {r.returncode}, not {rc}:\n{out[-4000:]}"
    return out


@contextlib.contextmanager
def background(text: str, cwd: Path, env: dict[str, str], where: str) -> Iterator[str]:
    """A server command started in the background; yields the URL it prints."""
    argv = shlex.split(text)
    proc = subprocess.Popen(ENTRY[argv[0]] + argv[1:], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        line, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if m:
                yield m.group(1)
                break
        else:
            raise AssertionError(f"{where}: `{text}` printed no URL: {line}")
    finally:
        proc.terminate()
        proc.wait(10)


def run_python(block: Block, cwd: Path, env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-c", block.text], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"README.md:{block.line} ({block.heading}): python block failed:\n{r.stderr[-4000:]}"


#: Sections that need nothing the others make, run as a test of their own (the suite's two processes can
#: then run them beside the rest); every other section needs the data path's shards/cremad.
INDEPENDENT_SECTIONS = ("Other datasets", "AVE")


@pytest.mark.slow
@pytest.mark.parametrize("group", ["cremad", "other-datasets"])
def test_readme_commands_and_snippets_run_as_printed(tmp_path, group):
    work = tmp_path / "work"
    for name in ("work", "peer", "store"):
        (tmp_path / name).mkdir()
    env = child_env()
    blocks = [b for b in read_blocks() if (b.heading in INDEPENDENT_SECTIONS) == (group == "other-datasets")]
    with contextlib.ExitStack() as stack:
        ctx = Context(work, stack, env)
        done = 0
        for block in blocks:
            if block.lang == "python":
                run_python(block, work, env)
                done += 1
                continue
            if is_script(block):
                continue  # test_slurm_scripts_are_valid_bash_and_their_commands_parse
            for cmd in commands(block):
                rule = rule_for(cmd)
                assert rule is not None, f"{cmd.where()}: no rule for `{cmd.text}`"
                if rule.action != "run":
                    continue
                cwd = tmp_path / SECTION_FOLDERS.get(block.heading, rule.cwd)
                key = f"{cwd.name}: {cmd.text}"
                if key in ctx.ran:  # the same command printed twice: run once
                    continue
                if block.heading in ctx.unavailable:
                    continue
                if rule.setup:
                    try:
                        getattr(ctx, rule.setup)()
                    except pytest.skip.Exception as why:  # an optional server not installed: the rest still runs
                        ctx.unavailable[block.heading] = f"section {block.heading!r} from {cmd.where()}: {why}"
                        continue
                if rule.background:
                    ctx.values["free_port"] = str(free_port())
                    url = stack.enter_context(background(substitute(cmd, rule, ctx), work, env, cmd.where()))
                    ctx.values["served_url"] = url
                else:
                    started = time.monotonic()
                    run_command(substitute(cmd, rule, ctx), cwd, env, cmd.where(), rule.rc)
                    print(f"{time.monotonic() - started:6.1f} s  {cmd.where()}: {cmd.text}")
                ctx.ran[key] = cmd.where()
                done += 1
    assert done >= (5 if group == "other-datasets" else 10)
    if ctx.unavailable:
        pytest.skip("everything else ran; not run: " + "; ".join(ctx.unavailable.values()))
