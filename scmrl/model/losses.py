"""Training losses: label-smoothed cross-entropy, the S-CMRL semantic alignment loss and the CMCI
three-head loss (docs/reference.md §1-2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from scmrl.model.config import ModelConfig
from scmrl.model.models import ModelOutput

__all__ = ["semantic_alignment_loss", "compute_loss"]


def semantic_alignment_loss(audio: Tensor, visual: Tensor, labels: Tensor, tau_s: float) -> Tensor:
    """L_sao = -(1/B^2) sum_ij M_ij log softmax_j(s_i), s_ij = a_i . v_j / tau_s, M_ij = [y_i = y_j].

    ``audio`` / ``visual`` are the per-sample residual features ``[B, C]`` (not normalised, as the
    reference); every same-label pair counts as a positive, so the loss pulls each audio feature
    towards the visual features of its class.
    """
    if audio.shape != visual.shape or audio.dim() != 2:
        raise ValueError(f"expected two [B, C] tensors, got {tuple(audio.shape)} and {tuple(visual.shape)}")
    b = audio.shape[0]
    logits = audio.float() @ visual.float().t() / tau_s
    log_prob = torch.log_softmax(logits, dim=1)
    positives = (labels.view(-1, 1) == labels.view(1, -1)).to(log_prob.dtype)
    return -(positives * log_prob).sum() / (b * b)


def compute_loss(cfg: ModelConfig, out: ModelOutput, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss for the model output ``out`` and its parts for logging (detached 0-d tensors on the
    loss's device: reading them is the caller's choice, so a training step never waits for the device).

    * every model: label-smoothed CE on the logits;
    * ``scmrl``: ``+ sao_weight * L_sao`` on ``aux['align_audio']`` / ``aux['align_visual']``;
    * ``cmci``: ``+ CE(audio_logits) + CE(visual_logits)`` (same smoothing).
    """
    ce = F.cross_entropy(out.logits.float(), labels, label_smoothing=cfg.label_smoothing)
    total = ce
    parts: dict[str, Tensor] = {"ce": ce}
    if cfg.model == "scmrl" and cfg.sao_weight != 0:
        sao = semantic_alignment_loss(out.aux["align_audio"], out.aux["align_visual"], labels, cfg.tau_s)
        parts["sao"] = sao
        total = total + cfg.sao_weight * sao
    elif cfg.model == "cmci":
        for key, name in (("audio_logits", "ce_audio"), ("visual_logits", "ce_visual")):
            part = F.cross_entropy(out.aux[key].float(), labels, label_smoothing=cfg.label_smoothing)
            parts[name] = part
            total = total + part
    parts["loss"] = total
    return total, {k: p.detach() for k, p in parts.items()}
