"""Model configuration shared by the model builder, the loss and the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from avdata.errors import AvdataError
from avdata.option_fields import opt

from scmrl.model.choices import ATTENTIONS, EMBEDDINGS, LIF_IMPLS, MODELS

if TYPE_CHECKING:
    from scmrl.model.lif import LIFSpec

__all__ = ["ModelConfig", "MODELS", "ATTENTIONS", "EMBEDDINGS", "RENAMED"]

#: names that checkpoints written before the options' names were adopted store fields under
RENAMED = {"v_threshold": "threshold", "lif_impl": "lif"}



#: the settings only S-CMRL's cross-modal residual blocks and alignment loss read (`opt`'s applies_when): given
#: on the command line with a baseline --model, they are refused rather than ignored
SCMRL_ONLY = ("model", "scmrl")

@dataclass
class ModelConfig:
    """Everything that fixes a network's architecture and its loss (docs/reference.md §1-2).

    Defaults are the reference CREMA-D S-CMRL settings; values are checked on construction so a
    typo in a config file fails before any data is loaded. The settings scmrl-train offers carry their
    command-line description here (`opt`), and `TrainConfig` takes them over, so each is declared once.
    """

    num_classes: int
    model: str = opt("scmrl", choices=MODELS, help="Architecture: S-CMRL, a fusion baseline or a unimodal "
                     "Spikformer (audio-only, visual-only).")
    # no choices= here: their list as the option's metavar would not fit an 80-column --help; the help names
    # them and __post_init__ checks them
    attention: str = opt("spatiotemporal", applies_when=SCMRL_ONLY, help="S-CMRL attention ablation: spatial | "
                         "temporal | spatiotemporal; temporal-reference | spatiotemporal-reference: the authors' "
                         "temporal layout (heads and time mixed).")
    # the authors build the residual's Linear + LIF only together with their alignment loss
    residual_proj: bool = opt(True, applies_when=SCMRL_ONLY, help="Linear + LIF on the cross-modal residual; off "
                              "builds the authors' models without their alignment loss (the ablation rows; also "
                              "pass --sao-weight 0 for those).")
    embed_dim: int = opt(256, min=1, help="Embedding size C.")
    heads: int = opt(16, min=1, help="Attention heads.")
    mlp_ratio: float = opt(4.0, help="Hidden size of the MLP blocks, in multiples of the embedding size.")
    time_steps: int = opt(4, min=1, help="Time steps T.")
    audio_channels: int = 1
    visual_channels: int = 3
    audio_size: int = 128  # square input side
    visual_size: int = 128
    embedding: str = "sps"  # sps (4 stages, /16) | shallow (2 stages, /4, for 28x28)
    alpha: float = opt(1.5, applies_when=SCMRL_ONLY, help="Cross-modal residual weight.")
    tau: float = opt(2.0, help="LIF membrane time constant.")
    threshold: float = opt(1.0, help="LIF firing threshold.")
    attn_threshold: float = opt(1.0, help="Threshold of the attention neurons (the reference asks for 0.5 but "
                                "fires at 1.0).")
    detach_membrane: bool = opt(True, help="Detach the membrane between time steps (as the reference).")
    surrogate_alpha: float = opt(4.0, help="Steepness of the surrogate gradient of the spike.")
    tau_s: float = opt(0.07, applies_when=SCMRL_ONLY, help="Alignment-loss temperature.")
    sao_weight: float = opt(1.0, applies_when=SCMRL_ONLY, help="Weight of the semantic-alignment loss.")
    label_smoothing: float = opt(0.1, help="Label smoothing of the cross-entropy.")
    lif: str = opt("fused", choices=LIF_IMPLS, help="LIF implementation: fused (one autograd Function over T; on "
                   "CUDA Triton kernels, with the SPS max-pool fused in; SCMRL_LIF_TRITON=0 / "
                   "SCMRL_LIF_POOL_TRITON=0 switch those off) | loop (the plain reference loop). Same values and "
                   "gradients.")

    @staticmethod
    def stored_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's `model_config` dict under the current field names (one written before the renames
        holds some under `RENAMED`'s keys), for comparing it with a config field by field."""
        return {RENAMED.get(k, k): v for k, v in stored.items()}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> ModelConfig:
        """The config a checkpoint's `model_config` dict holds, so that old checkpoints still load; an
        AvdataError for a dict this version cannot read (an unknown setting, a value of the wrong type)."""
        try:
            return cls(**cls.stored_fields(stored))
        except TypeError as exc:
            raise AvdataError(f"model_config does not load ({exc}); it was written by another version of "
                              "scmrl-train or is damaged") from exc

    def __post_init__(self) -> None:
        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise AvdataError(f"ModelConfig.{name}={value!r}: expected one of {', '.join(allowed)}")

        choice("model", self.model, MODELS)
        choice("attention", self.attention, ATTENTIONS)
        choice("embedding", self.embedding, EMBEDDINGS)
        choice("lif", self.lif, LIF_IMPLS)
        if self.num_classes < 1:
            raise AvdataError("ModelConfig.num_classes must be >= 1: the manifest lists no classes")
        div = 8 if self.embedding == "sps" else 2
        if self.embed_dim % div or self.embed_dim % self.heads:
            raise AvdataError(f"--embed-dim {self.embed_dim} must be divisible by {div} ({self.embedding} "
                              f"embedding) and by --heads {self.heads}")
        if self.time_steps < 1:
            raise AvdataError(f"--time-steps must be >= 1, got {self.time_steps}")
        if self.tau <= 0 or self.tau_s <= 0:
            raise AvdataError(f"--tau and --tau-s must be > 0, got {self.tau} and {self.tau_s}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise AvdataError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mlp_ratio <= 0:
            raise AvdataError(f"ModelConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")

    def lif_spec(self) -> LIFSpec:
        """The neuron settings every layer of the model is built with."""
        from scmrl.model.lif import LIFSpec  # here, so that the config (and --help) needs no torch

        return LIFSpec(
            tau=self.tau,
            v_threshold=self.threshold,
            detach_membrane=self.detach_membrane,
            surrogate_alpha=self.surrogate_alpha,
            impl=self.lif,
        )
