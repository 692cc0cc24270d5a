"""Seeded, reproducible split assignment: a split depends only on the seed, the salt and the sorted
inputs (see `avdata.rng.seeded_rng`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Hashable, Iterable, Sequence

from avdata.errors import AvdataError
from avdata.rng import seeded_rng


def seeded_shuffle(items: Iterable, seed: int, salt: str) -> list:
    out = sorted(items)
    seeded_rng(seed, salt).shuffle(out)
    return out


def stratified_holdout(
    labelled: Sequence[tuple[str, Hashable]], fraction: float, seed: int, salt: str = "val",
    group: Callable[[str], str] | None = None,
) -> set[str]:
    """Keys to hold out: round(fraction * n_c) of each class c, chosen by a seeded shuffle. With `group`
    (key -> e.g. its source recording), whole groups are held out, in seeded order, each taken when it
    brings the count nearer to that target: no group is on both sides. Groups of one key choose as
    without it."""
    if not 0.0 <= fraction < 1.0:
        raise AvdataError(f"a held-out fraction (--val-fraction, --test-fraction) must be in [0, 1), got {fraction}")
    by_class: dict[Hashable, list[str]] = defaultdict(list)
    for key, label in labelled:
        by_class[label].append(key)
    held: set[str] = set()
    for label in sorted(by_class, key=str):
        target = int(round(fraction * len(by_class[label])))
        members: dict[str, list[str]] = defaultdict(list)
        for key in by_class[label]:
            members[group(key) if group else key].append(key)
        taken = 0
        for g in seeded_shuffle(members, seed, f"{salt}:{label}"):
            if taken == target:
                break
            if abs(taken + len(members[g]) - target) < abs(taken - target):
                held.update(members[g])
                taken += len(members[g])
    return held


def group_holdout(groups: Iterable[str], fraction: float, seed: int, salt: str = "groups") -> set[str]:
    """Whole groups (e.g. actors) to hold out: round(fraction * n_groups), at least one when fraction > 0."""
    if not 0.0 <= fraction < 1.0:
        raise AvdataError(f"a held-out fraction (--val-fraction, --test-fraction) must be in [0, 1), got {fraction}")
    uniq = seeded_shuffle(set(groups), seed, salt)
    n = int(round(fraction * len(uniq)))
    if fraction > 0 and n == 0 and len(uniq) > 1:
        n = 1
    return set(uniq[:n])


def first_fraction(names: Sequence[str], fraction: float,
                   group: Callable[[str], str] | None = None) -> tuple[list[str], list[str]]:
    """The first `fraction` of the sorted names, and the rest (the reference's per-class 70/30 split,
    made reproducible by sorting). With `group` (name -> e.g. its source recording, whose names sort
    together), the cut moves to the group boundary nearest to it (the lower one on a tie), so that no
    group is on both sides; a single group is cut as without it."""
    ordered = sorted(names)
    n = int(len(ordered) * fraction)
    if group is not None:
        keys = [group(name) for name in ordered]
        inner = [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
        if inner and 0 < n < len(ordered):
            n = min(inner, key=lambda i: (abs(i - n), i))
    return ordered[:n], ordered[n:]
