"""`--part auto`: which part of the shards this process makes, read from the array scheduler's environment.

- Slurm (`sbatch --array=0-7`): `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, and `SLURM_ARRAY_TASK_MIN`
  and `SLURM_ARRAY_TASK_STEP` when the range does not start at 0 or steps (`--array=1-8`, `--array=0-14:2`):
  part (ID - MIN) / STEP of COUNT.
- Kubernetes Indexed Jobs (`completionMode: Indexed`): `JOB_COMPLETION_INDEX`; the job does not tell its pods
  the number of completions, so the count comes from `--part-count` or the environment variable
  `AVDATA_PART_COUNT` (set it to `spec.completions` in the pod template).
"""

from __future__ import annotations

import os
from typing import Mapping

from avdata.errors import AvdataError

__all__ = ["COUNT_ENV", "resolve_part"]

COUNT_ENV = "AVDATA_PART_COUNT"


def resolve_part(text: str | None, count: int | None = None,
                 environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """`--part` (`i/N`, `auto` or None) and `--part-count` -> (index, count) or None for the whole plan."""
    from avdata.prepare.engine import parse_part

    if text != "auto":
        if count is not None:
            raise AvdataError("--part-count only goes with --part auto (with --part i/N the count is N)")
        return parse_part(text)
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_TASK_ID"):
        return _slurm(env, count)
    if env.get("JOB_COMPLETION_INDEX"):
        index = _int(env, "JOB_COMPLETION_INDEX")
        if count is None:
            if not env.get(COUNT_ENV):
                raise AvdataError(f"--part auto in a Kubernetes Indexed Job: give the number of completions as "
                                  f"--part-count N or in the environment variable {COUNT_ENV}")
            count = _int(env, COUNT_ENV)
        return _checked(index, count, "JOB_COMPLETION_INDEX")
    raise AvdataError("--part auto: no array-job index in the environment (SLURM_ARRAY_TASK_ID and "
                      "SLURM_ARRAY_TASK_COUNT, set by `sbatch --array`; or JOB_COMPLETION_INDEX, set in a "
                      f"Kubernetes Indexed Job, with --part-count or {COUNT_ENV}); outside an array job "
                      "pass --part i/N")


def _slurm(env: Mapping[str, str], count: int | None) -> tuple[int, int]:
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    if not env.get("SLURM_ARRAY_TASK_COUNT"):
        raise AvdataError("--part auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not "
                          "(Slurm before 17.02?); pass --part-count N")
    slurm_count = _int(env, "SLURM_ARRAY_TASK_COUNT")
    if count is not None and count != slurm_count:
        raise AvdataError(f"--part-count {count} disagrees with SLURM_ARRAY_TASK_COUNT={slurm_count}; leave "
                          "--part-count out in a Slurm array job")
    first = _int(env, "SLURM_ARRAY_TASK_MIN") if env.get("SLURM_ARRAY_TASK_MIN") else 0
    step = _int(env, "SLURM_ARRAY_TASK_STEP") if env.get("SLURM_ARRAY_TASK_STEP") else 1
    if step < 1 or (task - first) % step:
        raise AvdataError(f"--part auto: SLURM_ARRAY_TASK_ID={task} is not MIN {first} + a multiple of STEP {step}; "
                          "use a plain range such as --array=0-7 for 8 parts, or pass --part i/N yourself")
    return _checked((task - first) // step, slurm_count, "SLURM_ARRAY_TASK_ID")


def _checked(index: int, count: int, source: str) -> tuple[int, int]:
    if count < 1 or not 0 <= index < count:
        raise AvdataError(f"--part auto: part {index} of {count} (from {source}) is out of range; an array of N "
                          "tasks must number them 0..N-1 (or MIN..MIN+N-1 in Slurm), one task per part")
    return index, count


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise AvdataError(f"--part auto: {name}={env[name]!r} is not a whole number") from None
