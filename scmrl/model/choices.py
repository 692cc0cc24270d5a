"""The values the model's string settings take, in a module free of torch so that `scmrl-train --help`
(which lists them) answers without importing it."""

from __future__ import annotations

__all__ = ["MODELS", "ATTENTIONS", "EMBEDDINGS", "LIF_IMPLS"]

MODELS = ("scmrl", "audio-only", "visual-only", "add", "concat", "weight-attention", "sca", "cmci")
#: S-CMRL attention modes (the ablation of the paper, plus the authors' temporal layout)
ATTENTIONS = ("spatial", "temporal", "spatiotemporal", "temporal-reference", "spatiotemporal-reference")
EMBEDDINGS = ("sps", "shallow")
LIF_IMPLS = ("fused", "loop")
