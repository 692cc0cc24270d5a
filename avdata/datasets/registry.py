"""The datasets avdata knows: one line per dataset, naming its package.

A dataset package `avdata/datasets/<pkg>/` holds
- `recipe.py`: `RECIPE`, its `Recipe` subclass (options dataclass, plan, process, features, card);
- `sources.py` (optional): `DOWNLOADS`, the names `avdata download` takes for it, each a `Download` (its
  options dataclass and its download plan; see `avdata.datasets.download_plan`);
- `synth.py`: the generator of small raw trees in the real formats, for tests and `avdata demo`.
`avdata prepare <name>`, `avdata download <name>` and `avdata verify-raw <name>` are generated from these,
so adding a dataset is writing its package and adding its line to `DATASETS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Iterable

from avdata.errors import AvdataError

if TYPE_CHECKING:
    from avdata.datasets.download_plan import Download
    from avdata.datasets.recipe import ModelDefaults, Recipe

__all__ = ["DATASETS", "register_recipe", "recipe_names", "recipe_class", "get_recipe", "model_defaults",
           "downloads", "get_download", "unknown_dataset"]

DATASETS: dict[str, str] = {
    "cremad": "avdata.datasets.cremad",
    "urbansound8k-av": "avdata.datasets.urbansound8k_av",
    "mnistdvs-ntidigits": "avdata.datasets.mnistdvs_ntidigits",
    "ave": "avdata.datasets.ave",
}

_EXTRA_RECIPES: dict[str, str] = {}  # name -> "module:Class", added at run time


def register_recipe(name: str, target: str) -> None:
    """Add a recipe ("module:Class") outside the registry, e.g. a lab's own dataset or a test recipe."""
    _EXTRA_RECIPES[name] = target


def unknown_dataset(name: str, known: Iterable[str]) -> AvdataError:
    """The one error for a dataset name the registry does not know (prepare, download, scmrl-convert): it
    lists the names it does."""
    return AvdataError(f"unknown dataset {name!r}; choose from {', '.join(known)}")


def recipe_names() -> list[str]:
    return [*DATASETS, *(n for n in _EXTRA_RECIPES if n not in DATASETS)]


def recipe_class(name: str) -> type[Recipe]:
    if name in DATASETS:
        return importlib.import_module(DATASETS[name] + ".recipe").RECIPE
    if name in _EXTRA_RECIPES:
        module, cls = _EXTRA_RECIPES[name].split(":")
        return getattr(importlib.import_module(module), cls)
    raise unknown_dataset(name, recipe_names())


def get_recipe(name: str) -> Recipe:
    return recipe_class(name)()


def model_defaults(name: str, events: bool) -> ModelDefaults:
    """The model settings a dataset declares (`Recipe.model_defaults`); for a dataset this registry does not
    know (shards made elsewhere) or one that declares none, those of its kind of data."""
    from avdata.datasets.recipe import EVENT_MODEL_DEFAULTS, STATIC_MODEL_DEFAULTS

    declared = recipe_class(name).model_defaults if name in recipe_names() else None
    return declared or (EVENT_MODEL_DEFAULTS if events else STATIC_MODEL_DEFAULTS)


def downloads() -> dict[str, Download]:
    """Every name `avdata download` takes, in registry order, from the packages' `sources.DOWNLOADS`."""
    out: dict[str, Download] = {}
    for package in DATASETS.values():
        try:
            sources = importlib.import_module(package + ".sources")
        except ModuleNotFoundError as exc:
            if exc.name != package + ".sources":
                raise
            continue  # a dataset without downloads: its raw data comes by hand
        out.update(sources.DOWNLOADS)
    return out


def get_download(name: str) -> Download:
    table = downloads()
    if name not in table:
        raise unknown_dataset(name, table)
    return table[name]
