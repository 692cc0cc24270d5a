"""S-CMRL, its fusion baselines and the unimodal Spikformer, built from a :class:`ModelConfig`.

Every model takes ``forward(audio [T, B, Ca, Ha, Wa], visual [T, B, Cv, Hv, Wv])`` (time first,
static inputs already repeated over T) and returns a :class:`ModelOutput` with real-valued logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from avdata.errors import AvdataError

from scmrl.model.config import ModelConfig
from scmrl.model.embedding import build_embedding, num_tokens
from scmrl.model.fusion import (CMCIBranch, CrossModalResidualBlock, MLPBlock, SCABlock, SpikformerBlock,
                                WeightAttentionBlock)

__all__ = [
    "ModelOutput",
    "SCMRL",
    "FusionBaseline",
    "CMCI",
    "UnimodalSpikformer",
    "build_model",
    "count_parameters",
]


@dataclass
class ModelOutput:
    """Logits ``[B, classes]`` plus model-specific tensors the loss needs (see :func:`compute_loss`).

    S-CMRL: ``align_audio`` / ``align_visual`` ``[B, C]``; CMCI: ``audio_logits`` / ``visual_logits``.
    """

    logits: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


def _init_linear(module: nn.Module) -> None:
    """Spikformer's initialisation of linear layers: truncated normal (std 0.02), zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_input(name: str, x: Tensor, channels: int) -> None:
    if x.dim() != 5 or x.shape[2] != channels:
        raise ValueError(f"{name} must be [T, B, {channels}, H, W], got {tuple(x.shape)}")


class _AudioVisualBase(nn.Module):
    """Two SPS embeddings and the per-modality MLP blocks every audio-visual model shares."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        lif = cfg.lif_spec()
        c = cfg.embed_dim
        self.audio_embed = build_embedding(cfg.embedding, cfg.audio_channels, c, lif)
        self.visual_embed = build_embedding(cfg.embedding, cfg.visual_channels, c, lif)
        self.audio_mlp = MLPBlock(c, cfg.mlp_ratio, lif)
        self.visual_mlp = MLPBlock(c, cfg.mlp_ratio, lif)

    def embed(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        _check_input("audio", audio, self.cfg.audio_channels)
        _check_input("visual", visual, self.cfg.visual_channels)
        if audio.shape[:2] != visual.shape[:2]:
            raise ValueError(
                f"audio and visual differ in [T, B]: {tuple(audio.shape[:2])} vs {tuple(visual.shape[:2])}"
            )
        return self.audio_embed(audio), self.visual_embed(visual)


class SCMRL(_AudioVisualBase):
    """S-CMRL: cross-modal residual blocks in both directions, MLP blocks, additive fusion head.

    Both directions read the other modality's embedding from before the update.  ``aux`` carries
    ``align_audio`` / ``align_visual``: the mean over T and N of each modality's ``X_res`` ``[B, C]``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        lif = cfg.lif_spec()
        c = cfg.embed_dim

        def block() -> CrossModalResidualBlock:
            return CrossModalResidualBlock(c, cfg.heads, cfg.attention, cfg.alpha, lif, cfg.attn_threshold,
                                           residual_proj=cfg.residual_proj)

        self.audio_block = block()
        self.visual_block = block()
        self.head = nn.Linear(c, cfg.num_classes)
        self.apply(_init_linear)

    def forward(self, audio: Tensor, visual: Tensor) -> ModelOutput:
        a, v = self.embed(audio, visual)
        a_new, a_res = self.audio_block(a, v)
        v_new, v_res = self.visual_block(v, a)
        a_new = self.audio_mlp(a_new)
        v_new = self.visual_mlp(v_new)
        fused = (a_new.mean(dim=3) + v_new.mean(dim=3)).mean(dim=0)  # [B, C]
        return ModelOutput(
            logits=self.head(fused),
            aux={"align_audio": a_res.mean(dim=(0, 3)), "align_visual": v_res.mean(dim=(0, 3))},
        )


class FusionBaseline(_AudioVisualBase):
    """Add / Concat / WeightAttention / SCA: an optional interaction block per direction (reading the
    other modality before the update), MLP blocks, pooled features added (concatenated for concat)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        lif = cfg.lif_spec()
        c = cfg.embed_dim
        self.audio_block: nn.Module | None = None
        self.visual_block: nn.Module | None = None
        if cfg.model == "weight-attention":
            self.audio_block, self.visual_block = WeightAttentionBlock(c), WeightAttentionBlock(c)
        elif cfg.model == "sca":
            self.audio_block = SCABlock(c, cfg.heads, lif, cfg.attn_threshold)
            self.visual_block = SCABlock(c, cfg.heads, lif, cfg.attn_threshold)
        elif cfg.model not in ("add", "concat"):
            raise ValueError(f"FusionBaseline does not build {cfg.model!r}")
        self.concat = cfg.model == "concat"
        self.head = nn.Linear(2 * c if self.concat else c, cfg.num_classes)
        self.apply(_init_linear)

    def forward(self, audio: Tensor, visual: Tensor) -> ModelOutput:
        a, v = self.embed(audio, visual)
        if self.audio_block is not None and self.visual_block is not None:
            a, v = self.audio_block(a, v), self.visual_block(v, a)
        a = self.audio_mlp(a).mean(dim=3)  # [T, B, C]
        v = self.visual_mlp(v).mean(dim=3)
        fused = torch.cat((a, v), dim=-1) if self.concat else a + v
        return ModelOutput(logits=self.head(fused.mean(dim=0)))


class CMCI(_AudioVisualBase):
    """CMCI: a fused branch (``LIF(Linear(a) + Linear(v))`` -> MLP block) with its own head, plus an
    auxiliary head on each modality's MLP-block features; ``aux`` has ``audio_logits`` /
    ``visual_logits`` for the loss ``CE(fused) + CE(audio) + CE(visual)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        c = cfg.embed_dim
        self.fusion = CMCIBranch(c, cfg.mlp_ratio, cfg.lif_spec())
        self.head = nn.Linear(c, cfg.num_classes)
        self.audio_head = nn.Linear(c, cfg.num_classes)
        self.visual_head = nn.Linear(c, cfg.num_classes)
        self.apply(_init_linear)

    def forward(self, audio: Tensor, visual: Tensor) -> ModelOutput:
        a, v = self.embed(audio, visual)
        fused = self.fusion(a, v).mean(dim=(0, 3))
        a = self.audio_mlp(a).mean(dim=(0, 3))
        v = self.visual_mlp(v).mean(dim=(0, 3))
        return ModelOutput(
            logits=self.head(fused),
            aux={"audio_logits": self.audio_head(a), "visual_logits": self.visual_head(v)},
        )


class UnimodalSpikformer(nn.Module):
    """Spikformer on one modality: SPS, one block (SSA with residual, MLP block), mean over N and T,
    linear head.  Takes both inputs (same signature as the audio-visual models), ignores the other."""

    def __init__(self, cfg: ModelConfig, modality: str) -> None:
        super().__init__()
        if modality not in ("audio", "visual"):
            raise ValueError(f"modality must be 'audio' or 'visual', got {modality!r}")
        self.cfg = cfg
        self.modality = modality
        lif = cfg.lif_spec()
        c = cfg.embed_dim
        self.channels = cfg.audio_channels if modality == "audio" else cfg.visual_channels
        self.embed = build_embedding(cfg.embedding, self.channels, c, lif)
        self.block = SpikformerBlock(c, cfg.heads, cfg.mlp_ratio, lif, cfg.attn_threshold)
        self.head = nn.Linear(c, cfg.num_classes)
        self.apply(_init_linear)

    def forward(self, audio: Tensor, visual: Tensor) -> ModelOutput:
        x = audio if self.modality == "audio" else visual
        _check_input(self.modality, x, self.channels)
        x = self.block(self.embed(x))
        return ModelOutput(logits=self.head(x.mean(dim=(0, 3))))


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network named by ``cfg.model``, with every LIF neuron built from the config's settings."""
    needs_equal_tokens = cfg.model == "cmci" or (cfg.model == "scmrl" and cfg.attention != "spatial")
    if needs_equal_tokens:
        n_a, n_v = num_tokens(cfg.audio_size, cfg.embedding), num_tokens(cfg.visual_size, cfg.embedding)
        if n_a != n_v:
            raise AvdataError(f"{cfg.model} pairs tokens across modalities: audio gives {n_a}, visual {n_v}; give both "
                              "inputs the same size, or use --attention spatial")
    if cfg.model == "scmrl":
        return SCMRL(cfg)
    if cfg.model in ("add", "concat", "weight-attention", "sca"):
        return FusionBaseline(cfg)
    if cfg.model == "cmci":
        return CMCI(cfg)
    if cfg.model == "audio-only":
        return UnimodalSpikformer(cfg, "audio")
    if cfg.model == "visual-only":
        return UnimodalSpikformer(cfg, "visual")
    raise ValueError(f"unknown model {cfg.model!r}")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
