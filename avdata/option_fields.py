"""`opt`: an options-dataclass field that carries its command-line description.

The library declares its options as dataclasses (a recipe's options, the trainer's config) and each field
says once how it appears on the command line; the CLI packages turn these into Typer options
(`avdata.cli.dataclass_options`). Kept here, free of Typer, so the library never imports the CLI.

    @dataclass
    class Options:
        split: str = opt("standard", help="Which split.", choices=("standard", "actor"))
        frames: int | None = opt(None, help="Frames per clip.", min=1)
        classes: list[str] = opt(["a", "b"], help="Class names.")   # --classes a,b

Metadata keys (all optional; a field without them gets a generic help): "help", "flag" (long name without
dashes, default the field name with - for _), "short" ("-j"), "choices", "min", "max", "hidden", "negatable"
(False: a bool flag that only turns something on, with no --no-<flag> form), "applies_when" ((other field,
value): the option has an effect only then, and is recorded in manifest.json and the card only then; given
on the command line otherwise, it is refused).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

from avdata.errors import AvdataError

__all__ = ["META_KEYS", "opt", "flag_of", "check_bounds"]

META_KEYS = ("help", "flag", "short", "choices", "min", "max", "hidden", "negatable", "applies_when")


def opt(default: Any = dataclasses.MISSING, *, help: str | None = None, flag: str | None = None,
        short: str | None = None, choices: Iterable[Any] | None = None, min: float | None = None,
        max: float | None = None, hidden: bool = False, negatable: bool = True,
        applies_when: tuple[str, Any] | None = None) -> Any:
    """A dataclass field carrying its CLI description; a list/dict/set default is copied per instance."""
    meta = {"help": help, "flag": flag, "short": short, "choices": tuple(choices) if choices else None,
            "min": min, "max": max, "hidden": hidden, "applies_when": applies_when}
    meta = {k: v for k, v in meta.items() if v is not None and v is not False}  # keeps min=0
    if not negatable:
        meta["negatable"] = False
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of field `f` (`--batch-size`), as `avdata.cli.dataclass_options` makes it."""
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-")).lstrip("-")


def check_bounds(options: Any) -> None:
    """Refuse, naming the flag, a number of `options` (a dataclass instance) outside the field's declared
    min/max, or a float that is not finite: what the command line refuses is refused for library callers
    too, before torch or a decoder meets it (e.g. AdamW's bare ValueError for a negative --lr)."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(value, float) and not math.isfinite(value):
            raise AvdataError(f"{flag_of(f)} must be a finite number, got {value}")
        if low is not None and value < low:
            raise AvdataError(f"{flag_of(f)} must be >= {low}, got {value}")
        if high is not None and value > high:
            raise AvdataError(f"{flag_of(f)} must be <= {high}, got {value}")
