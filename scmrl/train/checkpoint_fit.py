"""What a loaded checkpoint says, checked before it is used (`scmrl-eval`, `--init-from`): the
model_config's values by their types, the network it describes built on torch's meta device and its
weights' names and shapes compared with the stored ones, and the train_config entries and classes
evaluation reads. So a stranger's config cannot make the network allocate memory (an embedding of 10**9
channels is a few bytes in the file) and a checkpoint of another version is named, not a traceback.

The file itself is read by `scmrl.train.checkpoint.load_checkpoint` (no code runs, no tensor claims more
than its storage holds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, get_type_hints

import torch

from avdata.errors import AvdataError
from scmrl.model.config import ModelConfig
from scmrl.train.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

__all__ = ["load_weights", "model_from_checkpoint", "stored_run"]


def _weights_problem(expected: Mapping[str, torch.Tensor], state: Any) -> str | None:
    """What keeps a checkpoint's `model` entry from loading into a network of these weights, or None."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 and v.layout == torch.strided for k, v in state.items()):
        return "its weights are not a dict of named dense tensors"
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} where the network has {tuple(v.shape)}" for k, v in expected.items()
             if k in state and (state[k].shape != v.shape or state[k].is_floating_point() != v.is_floating_point()
                                or state[k].is_complex())]
    found = [f"{what}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''} ({len(names)})"
             for what, names in (("missing", missing), ("not in the network", extra), ("other shapes", wrong))
             if names]
    return "; ".join(found) or None


def load_weights(model: torch.nn.Module, state: Any, path: str | Path) -> None:
    """Load a checkpoint's `model` state dict into `model`; an AvdataError naming the file and the first
    differences when its names, shapes or kinds are not the network's (torch raises a RuntimeError
    listing every one)."""
    problem = _weights_problem(model.state_dict(), state)
    if problem:
        raise AvdataError(f"{path}: its weights do not fit the network ({problem}); it was made by another "
                          "version of scmrl or for other options, or is damaged")
    model.load_state_dict(state)


def _stored_model_config(stored: Any, path: str | Path) -> ModelConfig:
    """The ModelConfig of a checkpoint's `model_config`, each value of its field's type first (ints >= 1,
    floats finite): the network is built from it, and torch reports a wrong type as a TypeError deep in a
    layer."""
    if not isinstance(stored, Mapping):
        raise AvdataError(f"{path}: its model_config is a {type(stored).__name__}, not a dict; it was not "
                          "written by scmrl-train or is damaged")
    hints = get_type_hints(ModelConfig)
    for name, value in ModelConfig.stored_fields(stored).items():
        want = hints.get(name) if isinstance(name, str) else None
        if want is None:  # an unknown name: from_dict names it
            continue
        if want is int:
            ok = type(value) is int and value >= 1
        elif want is float:
            ok = type(value) in (int, float) and math.isfinite(value)
        else:
            ok = type(value) is want
        if not ok:
            what = {int: "a whole number >= 1", float: "a finite number"}.get(want, f"a {want.__name__}")
            raise AvdataError(f"{path}: its model_config has {name}={value!r:.40}, not {what}; it was written by "
                              "another version of scmrl-train or is damaged")
    try:
        return ModelConfig.from_dict(stored)
    except AvdataError as exc:
        raise AvdataError(f"{path}: {exc}") from exc


def model_from_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> tuple[ModelConfig, torch.nn.Module]:
    """(config, network with the checkpoint's weights) of a checkpoint read by `load_checkpoint`.

    The network is first built on torch's meta device (shapes, no memory) and its weights compared with
    the stored ones: a model_config asking for an embedding of 10**9 channels (a few bytes in a stranger's
    file) is refused before anything is allocated."""
    from scmrl.model.models import build_model

    mcfg = _stored_model_config(ckpt.get("model_config"), path)
    try:
        with torch.device("meta"):
            shapes = build_model(mcfg).state_dict()
    except (RuntimeError, ValueError) as exc:  # sizes no layer accepts (an input side below the patch)
        raise AvdataError(f"{path}: its model_config does not build a network ({exc})") from exc
    problem = _weights_problem(shapes, ckpt.get("model"))
    if problem:
        raise AvdataError(f"{path}: its weights do not fit the network its model_config describes ({problem}); "
                          "it is damaged or was not written by scmrl-train")
    model = build_model(mcfg)
    model.load_state_dict(ckpt["model"])
    return mcfg, model


#: What scmrl-eval reads of a checkpoint's train_config, and the test each value must pass.
_EVAL_SETTINGS = {"image_size": (f"a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, as --image-size takes",
                                  lambda v: type(v) is int and MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE),
                  "frames_per_step": ("true or false", lambda v: type(v) is bool),
                  "seed": ("a 64-bit whole number", lambda v: type(v) is int and -(1 << 63) <= v < 1 << 63)}
_EVAL_OPTIONAL = {"protocol": ("a name", lambda v: type(v) is str), "amp": ("true or false", lambda v: type(v) is bool)}


def stored_run(ckpt: Mapping[str, Any], path: str | Path) -> tuple[list[str], dict[str, Any]]:
    """(classes, train_config) of a checkpoint, checked for what scmrl-eval reads of them (a KeyError or
    TypeError deep in the evaluation otherwise)."""
    classes, tcfg = ckpt.get("classes"), ckpt.get("train_config")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise AvdataError(f"{path}: its classes are not a list of names; it was not written by scmrl-train or is "
                          "damaged")
    if not isinstance(tcfg, dict):
        raise AvdataError(f"{path}: its train_config is a {type(tcfg).__name__}, not a dict; it was not written "
                          "by scmrl-train or is damaged")
    for name, (what, ok) in (*_EVAL_SETTINGS.items(), *_EVAL_OPTIONAL.items()):
        if (name in tcfg or name in _EVAL_SETTINGS) and not ok(tcfg.get(name)):
            raise AvdataError(f"{path}: its train_config has {name}={tcfg.get(name)!r:.40}, not {what}; it was "
                              "written by another version of scmrl-train or is damaged")
    return classes, tcfg
