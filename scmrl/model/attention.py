"""Spiking attention on token tensors ``[T, B, C, N]`` (Spikformer-style, no softmax).

Q, K and V are binary spike maps ``LIF(BN(Conv1d_1x1(.)))``, split into ``heads`` groups of
``d = C / heads`` consecutive channels.  Attention is ``scale * (Q K^T) V`` with ``scale = 0.25``:

* spatial: per time step, over the N tokens (Q is ``[N, d]`` per (t, b, head));
* temporal: per token, over the T time steps (Q is ``[T, d]`` per (b, head, n)), with the result put
  back on the right axes.  The authors' code reshapes its ``[N, B, heads, T, d]`` result straight to
  ``[N, B, T, C]`` without undoing the permute, so heads and time steps are mixed (see
  docs/architecture.md); ``temporal-reference`` reproduces that layout for comparisons with their
  numbers.  The two agree exactly when ``heads == 1`` or ``T == 1``.

Because there is no softmax the product is associative, so it is evaluated in whichever order is
cheaper: ``Q (K^T V)`` costs O(L d^2) and ``(Q K^T) V`` costs O(L^2 d) for sequence length L.  With
binary inputs every partial sum is a small integer, exact in float32, so both orders give identical
values.
"""

from __future__ import annotations

from torch import Tensor, nn

from scmrl.model import bn_lif
from scmrl.model.choices import ATTENTIONS
from scmrl.model.lif import LIF, LIFSpec

__all__ = [
    "ConvBNLIF1d",
    "spatial_attention",
    "temporal_attention",
    "temporal_attention_reference",
    "CROSS_MODES",
    "SpikingAttention",
    "SpikingSelfAttention",
    "CrossModalAttention",
    "ATTENTION_SCALE",
]

ATTENTION_SCALE = 0.25


class ConvBNLIF1d(nn.Module):
    """Conv1d 1x1 -> BN1d -> LIF on ``[T, B, C, N]`` (conv and BN on time-folded ``[T*B, C, N]``)."""

    def __init__(self, c_in: int, c_out: int, lif: LIF, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=1, bias=bias)
        self.bn = nn.BatchNorm1d(c_out)
        self.lif = lif

    def forward(self, x: Tensor) -> Tensor:
        steps = x.shape[0]
        y = self.conv(x.flatten(0, 1))
        if bn_lif.applies(self.bn, self.lif, y):  # one node that does not keep the membrane (CPU training)
            return bn_lif.bn_lif(self.bn, self.lif, y, steps)
        return self.lif(self.bn(y).unflatten(0, (steps, -1)))


def _product(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``scale * ((Q K^T) V)^T`` for feature-major blocks ``q, k, v [..., d, L]`` (Q = q^T is [L, d]).

    Returned feature-major as ``[..., d, L]``: ``v k^T q``, associated by cost.
    """
    d, length = q.shape[-2], q.shape[-1]
    if length > d:
        out = (v @ k.transpose(-1, -2)) @ q  # [d, d] then [d, L]
    else:
        out = v @ (k.transpose(-1, -2) @ q)  # [L, L] then [d, L]
    return out * scale


def spatial_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, scale: float = ATTENTION_SCALE) -> Tensor:
    """Per time step attention over tokens: ``q [T, B, C, N]``, ``k, v [T, B, C, M]`` -> ``[T, B, C, N]``.

    Keys/values may have a different token count M (e.g. audio and visual inputs of other sizes).
    """
    t, b, c, n = q.shape

    def split(x: Tensor) -> Tensor:  # [T, B, C, L] -> [T, B, h, d, L]
        return x.reshape(t, b, heads, c // heads, x.shape[-1])

    return _product(split(q), split(k), split(v), scale).reshape(t, b, c, n)


def temporal_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, scale: float = ATTENTION_SCALE) -> Tensor:
    """Per token attention over time steps: ``[T, B, C, N]`` x3 -> ``[T, B, C, N]``."""
    t, b, c, n = q.shape
    out = _product(_time_major(q, heads), _time_major(k, heads), _time_major(v, heads), scale)
    # [B, h, N, d, T] -> [T, B, h, d, N]: the exact inverse of _time_major
    return out.permute(4, 0, 1, 3, 2).reshape(t, b, c, n)


def temporal_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, heads: int, scale: float = ATTENTION_SCALE
) -> Tensor:
    """:func:`temporal_attention` with the authors' output layout: the ``[N, B, h, T, d]`` result read
    as ``[N, B, T, C]`` (heads and time mixed), then moved to ``[T, B, C, N]``."""
    t, b, c, n = q.shape
    out = _product(_time_major(q, heads), _time_major(k, heads), _time_major(v, heads), scale)  # [B, h, N, d, T]
    mixed = out.permute(2, 0, 1, 4, 3).reshape(n, b, t, c)  # [N, B, h, T, d] read as [N, B, T, C]
    return mixed.permute(2, 1, 3, 0).contiguous()


def _time_major(x: Tensor, heads: int) -> Tensor:
    """``[T, B, C, N]`` -> ``[B, h, N, d, T]`` (feature-major blocks for :func:`_product`)."""
    t, b, c, n = x.shape
    return x.reshape(t, b, heads, c // heads, n).permute(1, 2, 4, 3, 0)


CROSS_MODES = ATTENTIONS  # S-CMRL attention modes, declared with the other model choices

_CORES = {
    "spatial": spatial_attention,
    "temporal": temporal_attention,
    "temporal-reference": temporal_attention_reference,
}


class SpikingAttention(nn.Module):
    """Spiking attention with queries from ``x`` and keys/values from ``y`` (cross-attention).

    ``Y = LIF_attn(scale (Q K^T) V)`` then the projection Conv1d -> BN -> LIF.  K and V share one
    Conv1d(C -> 2C) and one BN(2C): per-channel, this is exactly two separate conv+BN pairs, at one
    kernel launch instead of two.
    """

    def __init__(self, dim: int, heads: int, axis: str, lif: LIFSpec, attn_threshold: float = 1.0) -> None:
        super().__init__()
        if axis not in _CORES:
            raise ValueError(f"axis must be one of {', '.join(_CORES)}, got {axis!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.heads, self.axis = dim, heads, axis
        self.q = ConvBNLIF1d(dim, dim, lif.build())
        self.kv = ConvBNLIF1d(dim, 2 * dim, lif.build())
        self.attn_lif = lif.build(v_threshold=attn_threshold)
        self.proj = ConvBNLIF1d(dim, dim, lif.build())

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of binary Q/K/V maps, attention neuron and projection."""
        y = _CORES[self.axis](q, k, v, self.heads, ATTENTION_SCALE)
        return self.proj(self.attn_lif(y))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``x`` (queries, ``[T, B, C, N]``) and ``y`` (keys/values) -> spikes ``[T, B, C, N]``.

        Spatial attention accepts a different token count in ``y``; temporal pairs tokens one to one.
        """
        if x.shape[:3] != y.shape[:3] or (self.axis != "spatial" and x.shape != y.shape):
            raise ValueError(
                f"{self.axis} cross-attention cannot pair shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        k, v = self.kv(y).chunk(2, dim=2)
        return self.attend(self.q(x), k, v)


class SpikingSelfAttention(SpikingAttention):
    """Spikformer spiking self-attention (SSA, spatial): Q, K, V all from ``x``."""

    def __init__(self, dim: int, heads: int, lif: LIFSpec, attn_threshold: float = 1.0) -> None:
        super().__init__(dim, heads, "spatial", lif, attn_threshold)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return super().forward(x, x if y is None else y)


class CrossModalAttention(nn.Module):
    """S-CMRL cross-modal attention producing the residual ``X_res`` for modality ``x`` from ``y``.

    * ``spatial``: ``X_res = Y_s``
    * ``temporal``: ``X_res = Y_t``
    * ``spatiotemporal``: ``X_res = mean_N(Y_s) * mean_T(Y_t)``, each broadcast back over the
      reduced axis, so a (t, c) gate from the spatial branch meets an (n, c) map from the temporal
      one.  The two branches have their own weights.

    ``temporal-reference`` / ``spatiotemporal-reference`` use the authors' temporal output layout
    (:func:`temporal_attention_reference`); parameters are the same, so weights move between the two.
    """

    def __init__(self, dim: int, heads: int, mode: str, lif: LIFSpec, attn_threshold: float = 1.0) -> None:
        super().__init__()
        if mode not in CROSS_MODES:
            raise ValueError(f"unknown attention mode {mode!r}: expected one of {', '.join(CROSS_MODES)}")
        self.mode = mode
        temporal_axis = "temporal-reference" if mode.endswith("-reference") else "temporal"
        has_spatial = not mode.startswith("temporal")
        has_temporal = mode != "spatial"
        self.spatial = SpikingAttention(dim, heads, "spatial", lif, attn_threshold) if has_spatial else None
        self.temporal = SpikingAttention(dim, heads, temporal_axis, lif, attn_threshold) if has_temporal else None

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.temporal is None:
            assert self.spatial is not None
            return self.spatial(x, y)
        if self.spatial is None:
            return self.temporal(x, y)
        y_s = self.spatial(x, y)
        y_t = self.temporal(x, y)
        return y_s.mean(dim=3, keepdim=True) * y_t.mean(dim=0, keepdim=True)
