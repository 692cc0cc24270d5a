"""`avdata prepare --protocol`: ours (a seeded validation split held out of train) or reference (the
authors' data: no validation split, their split, spectrogram and sample counts; docs/reference.md §3).

Only the settings where the protocols differ are resolved here; each recipe names the authors' values of
its own options (`Recipe.reference`).
"""

from __future__ import annotations

from typing import Any

from avdata.errors import AvdataError

__all__ = ["PREPARE_PROTOCOLS", "DEFAULT_VAL_FRACTION", "resolve_prepare_protocol"]

PREPARE_PROTOCOLS = ("ours", "reference")
DEFAULT_VAL_FRACTION = 0.1


def resolve_prepare_protocol(protocol: str, dataset: str, val_fraction: float | None,
                             **options: Any) -> dict[str, Any]:
    """The options the protocol sets: the validation fraction, and with ``reference`` the authors' value
    of each option left at its default (e.g. UrbanSound8K-AV's --train-cut file); another value given for
    one of those is refused."""
    import dataclasses

    from avdata.datasets.registry import recipe_class

    if protocol not in PREPARE_PROTOCOLS:
        raise AvdataError(f"--protocol {protocol}: expected one of {', '.join(PREPARE_PROTOCOLS)}")
    if protocol == "ours":
        return {"val_fraction": DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction}
    if val_fraction:
        raise AvdataError(f"--protocol reference trains on the whole train split: drop --val-fraction {val_fraction}")
    recipe = recipe_class(dataset)
    defaults = {f.name: f.default for f in dataclasses.fields(recipe.options_type)} if recipe.options_type else {}
    sets: dict[str, Any] = {"val_fraction": 0.0}
    for name, want in (recipe.reference or {}).items():
        if name not in options or options[name] == want:
            continue
        if options[name] == defaults.get(name):
            sets[name] = want  # ours by default: the protocol switches it
            continue
        flag = "--" + name.replace("_", "-")
        raise AvdataError(f"--protocol reference uses {flag} {want} (the authors' choice), not {options[name]}")
    return sets
