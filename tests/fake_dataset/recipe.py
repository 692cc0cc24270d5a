"""The toy recipe with options carrying CLI metadata, e.g. --frames as AVE has."""

from __future__ import annotations

from dataclasses import dataclass

from avdata.datasets.recipe import ModelDefaults
from avdata.option_fields import opt
from tests.toy_recipe import ToyRecipe


@dataclass
class FakeOptions:
    frames: int | None = opt(None, min=1, help="Frames per clip (unused by the toy data).")
    scale: int = opt(1, choices=(1, 2, 3), help="Multiply every number by this.")
    val_fraction: float = opt(0.25, min=0.0, max=0.99, help="Held-out share of train.")
    seed: int = opt(42, help="Seed of the split.")


class FakeRecipe(ToyRecipe):
    name = "fake"
    options_type = FakeOptions
    summary = "A fake dataset of text files."
    raw_help = "The folder `avdata download fake` unpacked."
    samples_per_shard = 4
    model_defaults = ModelDefaults(embed_dim=48, tau_s=0.2, time_steps=3, image_size=32)


RECIPE = FakeRecipe
