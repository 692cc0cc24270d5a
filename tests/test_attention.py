"""Spiking attention: the vectorised spatial/temporal cores against plain Python loops, and the
cross-modal combinations."""

from __future__ import annotations

import pytest
import torch

from scmrl.model.attention import CrossModalAttention, SpikingAttention, spatial_attention, temporal_attention
from scmrl.model.lif import LIFSpec


def _binary(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) < 0.4).float()


def _loop_spatial(q, k, v, heads, scale=0.25):
    t_, b_, c, n = q.shape  # k and v may have another token count
    d = c // heads
    out = torch.zeros_like(q)
    for t in range(t_):
        for b in range(b_):
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                qm, km, vm = q[t, b, sl].T, k[t, b, sl].T, v[t, b, sl].T  # [N, d] each
                out[t, b, sl] = (scale * (qm @ km.T) @ vm).T
    return out


def _loop_temporal(q, k, v, heads, scale=0.25):
    t_, b_, c, n = q.shape
    d = c // heads
    out = torch.zeros_like(q)
    for b in range(b_):
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            for i in range(n):
                qm, km, vm = q[:, b, sl, i], k[:, b, sl, i], v[:, b, sl, i]  # [T, d] each
                out[:, b, sl, i] = scale * (qm @ km.T) @ vm
    return out


# (T, B, C, N, heads): cover both association orders (sequence length above and below d)
SHAPES = [(3, 2, 8, 5, 2), (2, 2, 8, 9, 4), (6, 1, 12, 4, 3), (5, 2, 4, 3, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_spatial_core_matches_loop(shape: tuple[int, ...]) -> None:
    t, b, c, n, heads = shape
    gen = torch.Generator().manual_seed(t * 100 + n)
    q, k, v = (_binary((t, b, c, n), gen) for _ in range(3))
    got = spatial_attention(q, k, v, heads)
    assert torch.equal(got, _loop_spatial(q, k, v, heads))


def test_spatial_core_other_token_count() -> None:
    gen = torch.Generator().manual_seed(7)
    q = _binary((2, 2, 8, 5), gen)
    k, v = _binary((2, 2, 8, 11), gen), _binary((2, 2, 8, 11), gen)
    got = spatial_attention(q, k, v, heads=2)
    assert got.shape == q.shape
    assert torch.equal(got, _loop_spatial(q, k, v, heads=2))


@pytest.mark.parametrize("shape", SHAPES)
def test_temporal_core_matches_loop(shape: tuple[int, ...]) -> None:
    t, b, c, n, heads = shape
    gen = torch.Generator().manual_seed(t * 100 + n + 1)
    q, k, v = (_binary((t, b, c, n), gen) for _ in range(3))
    got = temporal_attention(q, k, v, heads)
    assert torch.equal(got, _loop_temporal(q, k, v, heads))


def test_temporal_core_keeps_tokens_and_heads_apart() -> None:
    gen = torch.Generator().manual_seed(3)
    q, k, v = (_binary((4, 1, 8, 6), gen) for _ in range(3))
    base = temporal_attention(q, k, v, heads=2)
    k2 = k.clone()
    k2[:, :, 0:4, 2] = 1 - k2[:, :, 0:4, 2]  # perturb token 2, head 0 only
    changed = (temporal_attention(q, k2, v, heads=2) != base).any(dim=(0, 1))  # [C, N]
    assert changed[:, [0, 1, 3, 4, 5]].sum() == 0  # other tokens untouched
    assert changed[4:, 2].sum() == 0  # other head untouched


def _small_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (3, 2, 16, 6), generator=gen).float()
    y = torch.randint(0, 3, (3, 2, 16, 6), generator=gen).float()
    return x, y


def test_spiking_attention_queries_x_keys_values_y() -> None:
    torch.manual_seed(0)
    attn = SpikingAttention(16, 4, "spatial", LIFSpec()).eval()
    x, y = _small_inputs()
    out = attn(x, y)
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}
    # the output depends on y through K and V: zero keys give zero attention, hence a constant projection
    with torch.no_grad():
        attn.kv.bn.bias.fill_(-100.0)
    z1, z2 = attn(x, y), attn(x, y * 2)
    assert torch.equal(z1, z2)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["spatial", "temporal", "spatiotemporal"])
def test_cross_modal_attention_modes(mode: str) -> None:
    torch.manual_seed(1)
    cma = CrossModalAttention(16, 4, mode, LIFSpec(), attn_threshold=0.5)
    x, y = _small_inputs(1)
    x.requires_grad_(True)
    out = cma(x, y)
    assert out.shape == x.shape
    branches = [m for m in (cma.spatial, cma.temporal) if m is not None]
    assert len(branches) == (2 if mode == "spatiotemporal" else 1)
    assert all(br.attn_lif.v_threshold == 0.5 for br in branches)  # the attention threshold is honoured
    if mode == "spatiotemporal":
        with torch.no_grad():
            expect = cma.spatial(x, y).mean(3, keepdim=True) * cma.temporal(x, y).mean(0, keepdim=True)
        torch.testing.assert_close(out.detach(), expect)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
