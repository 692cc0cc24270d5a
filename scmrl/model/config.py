"""Model configuration shared by the model builder, the loss and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from scmrl.model.attention import CROSS_MODES
from scmrl.model.lif import LIF_IMPLS, LIFSpec

__all__ = ["ModelConfig", "MODELS", "ATTENTIONS", "EMBEDDINGS"]

MODELS = ("scmrl", "audio-only", "visual-only", "add", "concat", "weight-attention", "sca", "cmci")
ATTENTIONS = CROSS_MODES  # spatial | temporal | spatiotemporal, and the *-reference temporal layout
EMBEDDINGS = ("sps", "shallow")


@dataclass
class ModelConfig:
    """Everything that fixes a network's architecture and its loss (docs/reference.md §1-2).

    Defaults are the reference CREMA-D S-CMRL settings; values are checked on construction so a
    typo in a config file fails before any data is loaded.
    """

    num_classes: int
    model: str = "scmrl"  # scmrl | audio-only | visual-only | add | concat | weight-attention | sca | cmci
    attention: str = "spatiotemporal"  # spatial | temporal | spatiotemporal (S-CMRL ablation) [-reference]
    residual_proj: bool = True  # Linear + LIF on X_res (the authors build it only with their alignment loss)
    embed_dim: int = 256
    heads: int = 16
    mlp_ratio: float = 4.0
    time_steps: int = 4
    audio_channels: int = 1
    visual_channels: int = 3
    audio_size: int = 128  # square input side
    visual_size: int = 128
    embedding: str = "sps"  # sps (4 stages, /16) | shallow (2 stages, /4, for 28x28)
    alpha: float = 1.5  # cross-modal residual weight
    tau: float = 2.0  # LIF time constant
    v_threshold: float = 1.0
    attn_threshold: float = 1.0  # 0.5 optional (the reference asks for it but ignores it)
    detach_membrane: bool = True  # reference detaches V between steps
    surrogate_alpha: float = 4.0
    tau_s: float = 0.07  # semantic alignment temperature
    sao_weight: float = 1.0
    label_smoothing: float = 0.1
    lif_impl: str = "fused"  # fused | loop

    def __post_init__(self) -> None:
        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise ValueError(f"ModelConfig.{name}={value!r}: expected one of {', '.join(allowed)}")

        choice("model", self.model, MODELS)
        choice("attention", self.attention, ATTENTIONS)
        choice("embedding", self.embedding, EMBEDDINGS)
        choice("lif_impl", self.lif_impl, LIF_IMPLS)
        if self.num_classes < 1:
            raise ValueError("ModelConfig.num_classes must be >= 1")
        div = 8 if self.embedding == "sps" else 2
        if self.embed_dim % div or self.embed_dim % self.heads:
            raise ValueError(
                f"ModelConfig.embed_dim={self.embed_dim} must be divisible by {div} ({self.embedding}) "
                f"and by heads={self.heads}"
            )
        if self.time_steps < 1:
            raise ValueError("ModelConfig.time_steps must be >= 1")
        if self.tau <= 0 or self.tau_s <= 0:
            raise ValueError("ModelConfig.tau and tau_s must be > 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("ModelConfig.label_smoothing must be in [0, 1)")
        if self.mlp_ratio <= 0:
            raise ValueError("ModelConfig.mlp_ratio must be > 0")

    def lif_spec(self) -> LIFSpec:
        """The neuron settings every layer of the model is built with."""
        return LIFSpec(
            tau=self.tau,
            v_threshold=self.v_threshold,
            detach_membrane=self.detach_membrane,
            surrogate_alpha=self.surrogate_alpha,
            impl=self.lif_impl,
        )
