"""`--part auto`: the part of an array job read from Slurm's or Kubernetes' environment; three array tasks
as separate processes into one folder, then `avdata merge`, give the bytes of one run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avdata.cli.avdata_app import app
from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5
from avdata.errors import AvdataError
from avdata.prepare.array_job import resolve_part

ROOT = Path(__file__).resolve().parents[1]


def test_slurm_array_variables_give_the_part():
    assert resolve_part("auto", environ={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)
    # --array=1-4: ids from 1
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert resolve_part("auto", environ=env) == (3, 4)
    # --array=10-16:2 -> ids 10, 12, 14, 16
    env = {"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10",
           "SLURM_ARRAY_TASK_STEP": "2"}
    assert resolve_part("auto", environ=env) == (2, 4)
    # the same count given twice is fine, a different one is not
    assert resolve_part("auto", 4, environ={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}) == (0, 4)
    with pytest.raises(AvdataError, match="--part-count 3 disagrees with SLURM_ARRAY_TASK_COUNT=4"):
        resolve_part("auto", 3, environ={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"})


def test_kubernetes_indexed_job_needs_the_count_from_option_or_environment():
    assert resolve_part("auto", 5, environ={"JOB_COMPLETION_INDEX": "4"}) == (4, 5)
    assert resolve_part("auto", environ={"JOB_COMPLETION_INDEX": "0", "AVDATA_PART_COUNT": "3"}) == (0, 3)
    with pytest.raises(AvdataError, match="--part-count N or in the environment variable AVDATA_PART_COUNT"):
        resolve_part("auto", environ={"JOB_COMPLETION_INDEX": "1"})
    with pytest.raises(AvdataError, match="part 5 of 5 .from JOB_COMPLETION_INDEX. is out of range"):
        resolve_part("auto", 5, environ={"JOB_COMPLETION_INDEX": "5"})


@pytest.mark.parametrize("env, message", [
    ({}, "no array-job index in the environment .*SLURM_ARRAY_TASK_ID.*JOB_COMPLETION_INDEX.*pass --part i/N"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "SLURM_ARRAY_TASK_ID='x' is not a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "3"}, "is not MIN 1 \\+ a multiple of STEP 3"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3"}, "part 3 of 3 .* out of range"),
])
def test_unusable_environments_are_clear_errors(env, message):
    with pytest.raises(AvdataError, match=message):
        resolve_part("auto", environ=env)


def test_explicit_parts_and_stray_count():
    assert resolve_part("1/3", environ={"SLURM_ARRAY_TASK_ID": "0"}) == (1, 3)  # an explicit part wins
    assert resolve_part(None) is None
    with pytest.raises(AvdataError, match="--part-count only goes with --part auto"):
        resolve_part("0/2", 2)


@pytest.mark.slow
def test_three_slurm_array_tasks_then_merge_equal_one_run(tmp_path):
    """As `sbatch --array=1-3` runs them: three processes at once, ids 1..3, each into its own folder (as the
    README's script does), then `avdata merge` of the three."""
    raw = tmp_path / "raw"
    make_mnistdvs_raw(raw, per_class=2, scales=(16,), n_events=600)
    make_ntidigits_h5(raw, per_class=1)
    args = ["prepare", "mnistdvs-ntidigits", "--raw", str(raw), "--bins", "4", "--per-class", "2",
            "--val-fraction", "0", "--samples-per-shard", "3"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION"))}
    env.update(SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="3",
               SLURM_ARRAY_JOB_ID="77", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-m", "avdata.cli.avdata_app", *args, "--out",
                               str(tmp_path / "parts" / str(i)), "--part", "auto"],
                              env={**env, "SLURM_ARRAY_TASK_ID": str(i)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (1, 2, 3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    # task i made shards i-1, i+2, ... of the plan's 8 (train-000000..3, test-000000..3)
    made = [sorted(p.name for p in (tmp_path / "parts" / str(i)).glob("*.tar")) for i in (1, 2, 3)]
    assert [len(m) for m in made] == [3, 3, 2] and len({n for m in made for n in m}) == 8
    runner = CliRunner()
    res = runner.invoke(app, ["merge", str(tmp_path / "out"),
                              *(a for i in (1, 2, 3) for a in ("--from", str(tmp_path / "parts" / str(i))))])
    assert res.exit_code == 0, res.output
    assert "merged" in res.output and "20 samples" in res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    files = {p.name for p in (tmp_path / "one").iterdir() if p.is_file()}
    assert sum(f.endswith(".tar") for f in files) == 8
    assert {p.name for p in (tmp_path / "out").iterdir() if p.is_file()} == files
    for name in files:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
