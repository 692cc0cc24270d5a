"""Spiking patch embedding (SPS) turning ``[T, B, C_in, H, W]`` frames into tokens ``[T, B, C, N]``.

Convolutions, batch norm and pooling run on ``[T*B, ...]`` (time folded into batch, one big conv
instead of T small ones); only the LIF neurons see the time axis.  A static input repeated over T
(an expanded view) goes through the first convolution once, not T times.  With the fused LIF on CUDA,
each stage's LIF and max-pool run as one kernel pair (:mod:`scmrl.model.lif_pool_triton`); elsewhere, in
training, batch norm, LIF and pool run as one autograd node that keeps neither H nor the spikes
(:mod:`scmrl.model.bn_lif`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scmrl.model import bn_lif, lif_pool_triton
from scmrl.model.lif import LIFSpec

__all__ = ["SpikingPatchEmbed", "SPS", "ShallowSPS", "build_embedding", "pooled_side", "num_tokens"]


def pooled_side(side: int, stages: int) -> int:
    """Side length after ``stages`` MaxPool(3, stride 2, pad 1) layers (each gives ceil(side / 2))."""
    for _ in range(stages):
        side = (side - 1) // 2 + 1
    return side


def num_tokens(size: int, embedding: str) -> int:
    """Tokens N for a square input of side ``size``: (size/16)^2 for SPS, (size/4)^2 for ShallowSPS."""
    return pooled_side(size, 4 if embedding == "sps" else 2) ** 2


class _ConvBNLIF2d(nn.Module):
    """Conv3x3 (no bias) -> BN -> LIF [-> MaxPool(3, 2, 1)] on time-folded ``[T*B, C, H, W]``."""

    def __init__(self, c_in: int, c_out: int, lif: LIFSpec, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.lif = lif.build()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pool else nn.Identity()

    def forward(self, x: Tensor, steps: int, repeated: bool = False) -> Tensor:
        """``x [T*B, ...]``, or with ``repeated`` the one ``[B, ...]`` input of every step (a static image
        over T): then conv and BN run once (same batch statistics) and the LIF reads the result T times."""
        pool = isinstance(self.pool, nn.MaxPool2d)
        x = self.conv(x)
        if bn_lif.applies(self.bn, self.lif, x):  # one node that does not keep H and the spikes (CPU training)
            out = bn_lif.bn_lif(self.bn, self.lif, x, steps, repeated, pool)
            return out if pool else out.flatten(0, 1)
        y = self.bn(x)
        y = y.expand(steps, *y.shape) if repeated else y.unflatten(0, (steps, -1))
        lif = self.lif
        if pool and lif.impl == "fused" and lif_pool_triton.available(y):
            # one kernel pair for LIF + pool (CUDA); same values and gradients
            pooled = lif_pool_triton.lif_maxpool(y, lif.tau, lif.v_threshold, lif.surrogate_alpha, lif.detach_membrane)
            return pooled.flatten(0, 1)
        return self.pool(lif(y).flatten(0, 1))


class SpikingPatchEmbed(nn.Module):
    """``depth`` conv stages, each halving the resolution, then a relative-position branch.

    Channels grow geometrically to ``embed_dim`` (in -> C/8 -> C/4 -> C/2 -> C for depth 4,
    in -> C/2 -> C for depth 2); the RPE branch Conv3x3(C->C) -> BN -> LIF is added to the output.
    """

    def __init__(self, in_channels: int, embed_dim: int, depth: int, lif: LIFSpec) -> None:
        super().__init__()
        if depth < 1 or embed_dim % (2 ** (depth - 1)):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by {2 ** (depth - 1)}")
        widths = [embed_dim // 2 ** (depth - 1 - i) for i in range(depth)]
        chans = [in_channels, *widths]
        self.depth = depth
        self.embed_dim = embed_dim
        self.stages = nn.ModuleList(_ConvBNLIF2d(chans[i], chans[i + 1], lif, pool=True) for i in range(depth))
        self.rpe = _ConvBNLIF2d(embed_dim, embed_dim, lif, pool=False)

    #: Activation layout: channels-last (NHWC, what cuDNN's convolutions, batch norm and pooling are
    #: fastest in) or NCHW; ``None`` picks channels-last on CUDA.  Values are the same up to the float
    #: rounding of the convolutions, which can flip a spike whose membrane is within rounding of the
    #: threshold: on CPU, NCHW computes the authors' numbers bit for bit (tests/test_parity.py), and
    #: channels-last gained nothing measurable in the whole step there (BENCHMARKS.md).
    channels_last: bool | None = None

    def forward(self, x: Tensor) -> Tensor:
        """``x [T, B, C_in, H, W]`` -> spike-count tokens ``[T, B, C, N]`` (values in {0, 1, 2})."""
        if x.dim() != 5:
            raise ValueError(f"expected [T, B, C, H, W], got shape {tuple(x.shape)}")
        steps, batch = x.shape[:2]
        nhwc = self.channels_last if self.channels_last is not None else x.is_cuda
        layout = torch.channels_last if nhwc else torch.contiguous_format
        first, *rest = self.stages
        if steps > 1 and x.stride(0) == 0:
            # the same image at every step (direct encoding, expanded over T): the first stage, whose
            # activation is the network's largest, sees each image once instead of T times
            y = first(x[0].contiguous(memory_format=layout), steps, repeated=True)
        else:
            y = first(x.flatten(0, 1).contiguous(memory_format=layout), steps)
        for stage in rest:
            y = stage(y, steps)
        y = y + self.rpe(y, steps)
        return y.reshape(steps, batch, self.embed_dim, -1)


class SPS(SpikingPatchEmbed):
    """Four-stage SPS (resolution / 16): 128x128 -> 8x8 = 64 tokens."""

    def __init__(self, in_channels: int, embed_dim: int, lif: LIFSpec) -> None:
        super().__init__(in_channels, embed_dim, depth=4, lif=lif)


class ShallowSPS(SpikingPatchEmbed):
    """Two-stage SPS (resolution / 4) for small event frames: 28x28 -> 7x7 = 49 tokens."""

    def __init__(self, in_channels: int, embed_dim: int, lif: LIFSpec) -> None:
        super().__init__(in_channels, embed_dim, depth=2, lif=lif)


def build_embedding(kind: str, in_channels: int, embed_dim: int, lif: LIFSpec) -> SpikingPatchEmbed:
    """``sps`` or ``shallow`` embedding for one modality."""
    if kind == "sps":
        return SPS(in_channels, embed_dim, lif)
    if kind == "shallow":
        return ShallowSPS(in_channels, embed_dim, lif)
    raise ValueError(f"unknown embedding {kind!r}")
