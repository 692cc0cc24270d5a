"""Blocks on token tensors ``[T, B, C, N]``: the MLP block, the unimodal Spikformer block, the
S-CMRL cross-modal residual block and the interaction blocks of the fusion baselines
(docs/reference.md §1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scmrl.model.attention import ConvBNLIF1d, CrossModalAttention, SpikingAttention, SpikingSelfAttention
from scmrl.model.lif import LIFSpec

__all__ = [
    "SpikingMLP",
    "MLPBlock",
    "SpikformerBlock",
    "CrossModalResidualBlock",
    "WeightAttentionBlock",
    "SCABlock",
    "CMCIBranch",
]


def _linear_over_channels(linear: nn.Linear, x: Tensor) -> Tensor:
    """Apply ``linear`` to the channel axis of ``[T, B, C, N]``, returning ``[T, B, N, C_out]``."""
    return linear(x.transpose(2, 3))


class SpikingMLP(nn.Module):
    """Conv1d(C -> hC) -> BN -> LIF -> Conv1d(hC -> C) -> BN -> LIF (1x1 convs with bias, as Spikformer)."""

    def __init__(self, dim: int, hidden: int, lif: LIFSpec) -> None:
        super().__init__()
        self.fc1 = ConvBNLIF1d(dim, hidden, lif.build(), bias=True)
        self.fc2 = ConvBNLIF1d(hidden, dim, lif.build(), bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class MLPBlock(nn.Module):
    """``x + MLP(x)``: the per-modality block after the (cross-modal) interaction."""

    def __init__(self, dim: int, mlp_ratio: float, lif: LIFSpec) -> None:
        super().__init__()
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), lif)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(x)


class SpikformerBlock(nn.Module):
    """Unimodal Spikformer block: ``x + SSA(x)`` then ``x + MLP(x)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, lif: LIFSpec, attn_threshold: float = 1.0) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(dim, heads, lif, attn_threshold)
        self.mlp = MLPBlock(dim, mlp_ratio, lif)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x + self.attn(x))


class CrossModalResidualBlock(nn.Module):
    """S-CMRL cross-modal residual: ``X_res = LIF(Linear_C(CCSSA(x, y)))``, ``x' = x + alpha X_res``.

    Returns ``(x', X_res)``; ``X_res`` (spikes, ``[T, B, C, N]``) also feeds the semantic alignment
    loss.  The residual neuron fires at ``res_threshold``: the reference asks it for 0.5 in the same
    ignored keyword as the attention neuron, so the model passes ``attn_threshold`` here too.
    Without ``residual_proj`` the attention output is added as it is (``x' = x + alpha CCSSA(x, y)``):
    the authors' model when trained without the alignment loss, the paper's ablation rows.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mode: str,
        alpha: float,
        lif: LIFSpec,
        attn_threshold: float = 1.0,
        res_threshold: float | None = None,
        residual_proj: bool = True,
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.attn = CrossModalAttention(dim, heads, mode, lif, attn_threshold)
        self.res_linear = nn.Linear(dim, dim) if residual_proj else None
        self.res_lif = lif.build(v_threshold=attn_threshold if res_threshold is None else res_threshold)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        res = self.attn(x, y)
        if self.res_linear is not None:
            res = self.res_lif(_linear_over_channels(self.res_linear, res)).transpose(2, 3)
        return torch.add(x, res, alpha=self.alpha), res


class WeightAttentionBlock(nn.Module):
    """WeightAttention baseline: per time step ``w = Linear(C->1)(Linear(2C->C)([mean_N x, mean_N y]))``,
    the modality's features are replaced by ``w * x`` (real-valued, no neuron, as the reference)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * dim, dim)
        self.fc2 = nn.Linear(dim, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        pooled = torch.cat((x.mean(dim=3), y.mean(dim=3)), dim=-1)  # [T, B, 2C]
        w = self.fc2(self.fc1(pooled))  # [T, B, 1]
        return w.unsqueeze(-1) * x


class SCABlock(nn.Module):
    """SCA baseline: plain spiking (spatial) cross-attention whose output replaces ``x``."""

    def __init__(self, dim: int, heads: int, lif: LIFSpec, attn_threshold: float = 1.0) -> None:
        super().__init__()
        self.attn = SpikingAttention(dim, heads, "spatial", lif, attn_threshold)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.attn(x, y)


class CMCIBranch(nn.Module):
    """CMCI fused branch: ``LIF(Linear(x) + Linear(y))`` over channels, then an MLP block."""

    def __init__(self, dim: int, mlp_ratio: float, lif: LIFSpec) -> None:
        super().__init__()
        self.fc_x = nn.Linear(dim, dim)
        self.fc_y = nn.Linear(dim, dim)
        self.lif = lif.build()
        self.mlp = MLPBlock(dim, mlp_ratio, lif)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        current = _linear_over_channels(self.fc_x, x) + _linear_over_channels(self.fc_y, y)  # [T, B, N, C]
        return self.mlp(self.lif(current).transpose(2, 3))
