"""Map a state dict saved by the authors' S-CMRL code (their ``AudioVisualSpikformer``) onto this
package's models, so their checkpoints can be evaluated with ``scmrl-eval``.

The architecture (which model, embedding, size, classes, channels, residual projection) is read from
the tensors; what the tensors cannot tell is asked for: the time steps, the heads, alpha and, for a
single-branch attention block, whether it was their ``Spatial`` or ``Temporal`` one (same parameters).
Their two-branch block is mapped to ``spatiotemporal-reference`` by default: weights trained with
their temporal layout only compute what they computed under that layout (docs/architecture.md).

Parameter correspondences: their SPS ``proj_conv{,1,2,3}``/``proj_bn*``/``rpe_*`` are our
``stages.{0..3}``/``rpe``; their separate K and V conv + BN are our one ``kv`` conv + BN (K rows first);
``trans_linear`` is ``res_linear``; ``mlp.0``/``mlp.1`` are ``audio_mlp``/``visual_mlp``; ``block.0``
reads audio queries, ``block.1`` visual ones; CMCI's ``head.0/1/2`` are ``head``/``audio_head``/
``visual_head``.  Parameters their forward pass never uses (``norm1``/``norm2``, ``av_attention``, the
second CMCI branch) and the neurons' constant threshold/surrogate buffers are dropped.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avdata.datasets.recipe import ModelDefaults
from avdata.errors import AvdataError

from scmrl.model.config import ModelConfig

__all__ = ["dataset_preset", "convert_state_dict", "load_reference_state_dict",
           "convert_checkpoint", "map_key", "infer_config"]

_SIDE = {"0": "audio", "1": "visual"}
_DROPPED = re.compile(
    r"(_lif\d?\.(threshold|act_fun\.alpha)$)|(^block\.\d\.norm[12]\.)|(^av_attention\.)|(\.num_batches_tracked$)"
)


def dataset_preset(dataset: str) -> tuple[list[str], ModelDefaults]:
    """The class names `avdata prepare <dataset>` writes (the authors' label order) and the model settings the
    dataset declares (T, alignment temperature, input side of the authors' runs): read through the registry,
    so a dataset brings its own."""
    from avdata.datasets.registry import model_defaults, recipe_class

    recipe = recipe_class(dataset)  # AvdataError listing the known names
    return list(recipe.classes), model_defaults(dataset, events=False)


def _embed_key(key: str) -> str | None:
    m = re.fullmatch(r"(audio|visual)_patch_embed\.proj_(conv|bn)(\d?)\.(.+)", key)
    if m:
        return f"{m[1]}_embed.stages.{int(m[3] or 0)}.{m[2]}.{m[4]}"
    m = re.fullmatch(r"(audio|visual)_patch_embed\.rpe_(conv|bn)\.(.+)", key)
    return f"{m[1]}_embed.rpe.{m[2]}.{m[3]}" if m else None


def _mlp_key(prefix: str, rest: str) -> str | None:
    m = re.fullmatch(r"mlp\.fc([12])_(conv|bn)\.(.+)", rest)
    return f"{prefix}.mlp.fc{m[1]}.{m[2]}.{m[3]}" if m else None


def _attn_key(prefix: str, rest: str) -> str | None:
    """``q_conv.weight`` -> ``<prefix>.q.conv.weight``; K and V go to ``kv`` (merged by the caller)."""
    m = re.fullmatch(r"([qkv]|proj)_(conv|bn)\.(.+)", rest)
    if not m:
        return None
    name = "kv" if m[1] in "kv" else m[1]
    return f"{prefix}.{name}.{m[2]}.{m[3]}"


def map_key(key: str, model: str, attention: str) -> str | None:
    """Our name for the reference parameter ``key`` (K and V both map to the merged ``kv`` tensor), or
    None for one this package does not keep."""
    if _DROPPED.search(key):
        return None
    if key.startswith(("audio_patch_embed.", "visual_patch_embed.")):
        return _embed_key(key)
    m = re.fullmatch(r"mlp\.([01])\.(.+)", key)
    if m:
        return _mlp_key(f"{_SIDE[m[1]]}_mlp", m[2])
    m = re.fullmatch(r"head\.([012])\.(weight|bias)", key)
    if m:
        return f"{('head', 'audio_head', 'visual_head')[int(m[1])]}.{m[2]}"
    if key in ("head.weight", "head.bias"):
        return key
    m = re.fullmatch(r"block\.([01])\.(.+)", key)
    if not m:
        return None
    side, rest = _SIDE[m[1]], m[2]
    if rest.startswith("trans_linear."):
        return f"{side}_block.res_linear.{rest.split('.', 1)[1]}"
    if not rest.startswith("attn."):
        return None
    rest = rest[len("attn."):]
    if model == "cmci":
        if side == "visual":
            return None  # their forward uses only block 0's CMCI branch
        m = re.fullmatch(r"fc([12])\.(weight|bias)", rest)
        if m:
            return f"fusion.fc_{'xy'[int(m[1]) - 1]}.{m[2]}"
        return _mlp_key("fusion.mlp", rest[len("mlp."):]) if rest.startswith("mlp.") else None
    if model == "weight-attention":
        return f"{side}_block.{rest}" if re.fullmatch(r"fc[12]\.(weight|bias)", rest) else None
    if model == "sca":
        return None if rest.startswith("rpb_lif") else _attn_key(f"{side}_block.attn", rest)
    branch = re.match(r"(spatial|temporal)_attn\.", rest)
    if branch:
        return _attn_key(f"{side}_block.attn.{branch[1]}", rest[branch.end():])
    single = "spatial" if attention == "spatial" else "temporal"
    return _attn_key(f"{side}_block.attn.{single}", rest)


def infer_config(sd: dict[str, Tensor], attention: str | None = None) -> dict[str, Any]:
    """ModelConfig fields that the reference tensors determine (model, attention, sizes, classes)."""
    try:
        c = sd["audio_patch_embed.rpe_conv.weight"].shape[0]
        head = sd["head.0.weight"] if "head.0.weight" in sd else sd["head.weight"]
        audio_ch = sd["audio_patch_embed.proj_conv.weight"].shape[1]
        visual_ch = sd["visual_patch_embed.proj_conv.weight"].shape[1]
    except KeyError as exc:
        raise AvdataError(f"not a state dict of the authors' AudioVisualSpikformer (no {exc.args[0]!r})") from None
    fields: dict[str, Any] = dict(num_classes=head.shape[0], embed_dim=c, audio_channels=audio_ch,
                                  visual_channels=visual_ch,
                                  embedding="sps" if "audio_patch_embed.proj_conv2.weight" in sd else "shallow")
    has = lambda prefix: any(k.startswith(prefix) for k in sd)  # noqa: E731
    if "head.0.weight" in sd:
        fields["model"] = "cmci"
    elif head.shape[1] == 2 * c:
        fields["model"] = "concat"
    elif "block.0.attn.fc1.weight" in sd:
        fields["model"] = "weight-attention"
    elif has("block.1.attn.rpb_lif"):
        fields["model"] = "sca"
    elif has("block.0.attn.spatial_attn."):
        fields.update(model="scmrl", attention=attention or "spatiotemporal-reference")
    elif has("block.0.attn.q_conv"):
        if attention is None:
            raise AvdataError("their Spatial and Temporal attention blocks have the same parameters: say which "
                              "one this checkpoint used (--attention spatial or --attention temporal-reference)")
        fields.update(model="scmrl", attention=attention)
    else:
        fields["model"] = "add"
    if fields["model"] == "scmrl":
        fields["residual_proj"] = "block.0.trans_linear.weight" in sd
        if fields["attention"].startswith("spatiotemporal") != has("block.0.attn.spatial_attn."):
            raise AvdataError(f"--attention {fields['attention']} does not fit this checkpoint's attention block")
    return fields


def convert_state_dict(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our state dict for ``cfg`` from the reference state dict ``sd`` (strict: every tensor of our model
    must come from ``sd`` and every kept tensor of ``sd`` must land somewhere)."""
    from scmrl.model.models import build_model

    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    for k, v in sd.items():
        if re.search(r"_lif\d?\.threshold$", k) and float(v) != 1.0:
            raise AvdataError(f"{k} = {float(v)}: only the reference's threshold 1.0 is supported")
    with torch.device("meta"):  # names and shapes only: the sizes come from the file, checked below
        target = build_model(cfg).state_dict()
    out: dict[str, Tensor] = {}
    unused = []
    kv: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        ours = map_key(key, cfg.model, cfg.attention)
        if ours is None:
            second_cmci = cfg.model == "cmci" and key.startswith("block.1.attn.")
            if not _DROPPED.search(key) and not second_cmci and "rpb_lif" not in key:
                unused.append(key)
            continue
        if ".kv." in ours:
            part = re.search(r"\.([kv])_(conv|bn)\.", key)
            assert part is not None
            kv.setdefault(ours, {})[part[1]] = value
        else:
            out[ours] = value
    for ours, parts in kv.items():
        if ours.endswith("num_batches_tracked"):
            out[ours] = parts["k"]
        else:
            out[ours] = torch.cat((parts["k"], parts["v"]), dim=0)
    for key in target:  # BN step counters are bookkeeping, not weights
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(target) - set(out))
    extra = sorted(set(out) - set(target))
    if unused or missing or extra:
        raise AvdataError(
            "the reference state dict does not fit the inferred model "
            f"{cfg.model}/{cfg.attention}: unmapped {unused[:5]}, missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for key, value in out.items():
        if value.shape != target[key].shape:
            raise AvdataError(f"{key}: shape {tuple(value.shape)} from the reference, model wants "
                              f"{tuple(target[key].shape)} (check --heads / sizes)")
    return {k: out[k].clone() for k in target}


def load_reference_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a reference checkpoint, read with ``weights_only=True`` (no code runs on load).

    Accepts a plain state dict or a dict holding one under ``state_dict``/``model``/``state_dict_ema``.
    """
    path = Path(path)
    if not path.is_file():
        raise AvdataError(f"{path}: no such file")
    from scmrl.train.checkpoint import load_weights_only

    obj = load_weights_only(path, "cpu", "torch checkpoint", (
        "it holds Python objects besides tensors ({reason}; the authors' training script saves its argparse "
        "options beside the weights), and loading those would run code from the file. Ask whoever made it for "
        "a file of plain tensors (torch.save(model.state_dict(), PATH)) and convert that"))
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise AvdataError(f"{path}: holds no state dict of tensors")
    return dict(obj)


def convert_checkpoint(ref: str | Path, out: str | Path, classes: list[str], time_steps: int,
                       image_size: int = 128, heads: int = 16, alpha: float = 1.5, tau_s: float = 0.07,
                       attention: str | None = None) -> dict[str, Any]:
    """Write ``out``, a checkpoint ``scmrl-eval`` reads, from the reference checkpoint ``ref``."""
    from scmrl.train.checkpoint import save_checkpoint

    sd = load_reference_state_dict(ref)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    fields = infer_config(sd, attention)
    if len(classes) != fields["num_classes"]:
        raise AvdataError(f"{ref}: the head has {fields['num_classes']} classes, --classes names {len(classes)}")
    cfg = ModelConfig(**fields, heads=heads, time_steps=time_steps, alpha=alpha, tau_s=tau_s,
                      audio_size=image_size if fields["embedding"] == "sps" else 28,
                      visual_size=image_size if fields["embedding"] == "sps" else 28,
                      sao_weight=1.0 if fields.get("residual_proj", False) else 0.0)
    state = convert_state_dict(sd, cfg)
    payload = {"model": state, "model_config": asdict(cfg), "classes": list(classes), "epoch": None,
               "train_config": {"image_size": image_size, "frames_per_step": False, "seed": 42, "amp": False,
                                "protocol": "reference"},
               "converted_from": str(ref)}
    save_checkpoint(out, payload)
    return {"out": str(out), "model": cfg.model, "attention": cfg.attention, "embed_dim": cfg.embed_dim,
            "residual_proj": cfg.residual_proj, "num_classes": cfg.num_classes, "tensors": len(state)}
