"""The fused LIF + max-pool Triton kernels (CUDA; or CPU under TRITON_INTERPRET=1) against the plain LIF
loop followed by nn.MaxPool2d: same pooled spikes, same gradients (including which neuron of a window
with several spikes, or none, receives the window's gradient).

Skipped where Triton cannot run (CI has no GPU and no Triton), like tests/test_lif_triton.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scmrl.model import kernel_check
from scmrl.model import lif_pool_triton
from scmrl.model import lif_triton
from scmrl.model.config import ModelConfig
from scmrl.model.embedding import SPS
from scmrl.model.lif import LIFSpec, lif_loop

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not lif_triton.available(torch.empty(1, device=DEVICE)), reason="Triton kernels cannot run here"
)


def test_kernels_pass_their_first_use_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Triton runs, the kernels must pass the check that lets training use them (a kernel that
    failed it would only be skipped by training, so this is where such a failure shows)."""
    monkeypatch.setattr(kernel_check, "_verdicts", {})
    assert lif_pool_triton.available(torch.empty(1, 1, 1, 1, 1, device=DEVICE))


def _reference(x: torch.Tensor, detach: bool, **kw: float) -> torch.Tensor:
    return F.max_pool2d(lif_loop(x, detach_membrane=detach, **kw).flatten(0, 1), 3, 2, 1).unflatten(0, x.shape[:2])


def _run(fn, x: torch.Tensor, grad: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().clone().requires_grad_(True)
    out = fn(leaf, **kw)
    (g,) = torch.autograd.grad(out, leaf, grad)
    return out.detach(), g


def _fused(x: torch.Tensor, detach: bool, tau: float = 2.0, v_threshold: float = 1.0, surrogate_alpha: float = 4.0):
    return lif_pool_triton.lif_maxpool(x, tau, v_threshold, surrogate_alpha, detach)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize(
    "shape,kw,bias",
    [
        ((4, 2, 5, 8, 8), {"tau": 2.0, "v_threshold": 1.0, "surrogate_alpha": 4.0}, 0.8),  # even sides
        ((3, 2, 70, 7, 9), {"tau": 3.0, "v_threshold": 0.5, "surrogate_alpha": 2.0}, 0.3),  # odd sides, C > 32
        ((2, 1, 3, 1, 2), {"tau": 2.0, "v_threshold": 1.0, "surrogate_alpha": 4.0}, 0.9),  # windows at edges only
        ((4, 2, 4, 6, 5), {"tau": 2.0, "v_threshold": 1.0, "surrogate_alpha": 4.0}, -3.0),  # almost no spikes
        ((4, 2, 4, 6, 5), {"tau": 1.2, "v_threshold": 0.2, "surrogate_alpha": 4.0}, 3.0),  # almost all spike
    ],
)
def test_matches_lif_loop_then_maxpool(shape, kw, bias, detach: bool) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 1.5 + bias).to(DEVICE)
    x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    out_shape = _reference(x, detach, **kw).shape
    grad = torch.randn(out_shape, generator=gen).to(DEVICE)
    ref, g_ref = _run(_reference, x, grad, detach=detach, **kw)
    out, g = _run(_fused, x, grad, detach=detach, **kw)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert torch.equal(out, ref)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(_fused(x, detach, **kw), ref)
    assert out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


def test_ties_route_gradient_like_maxpool() -> None:
    """Windows with two or more spikes, and windows with none: the gradient goes where MaxPool2d sends it."""
    x = torch.zeros(1, 1, 2, 5, 5)
    x[0, 0, 0, 1, 1] = x[0, 0, 0, 1, 2] = x[0, 0, 0, 2, 1] = 5.0  # three spikes sharing windows
    x[0, 0, 1, 4, 4] = 5.0  # a lone spike in a corner window
    x = x.to(DEVICE)
    grad = torch.arange(1.0, 1.0 + 2 * 9).reshape(1, 1, 2, 3, 3).to(DEVICE)
    ref, g_ref = _run(_reference, x, grad, detach=True)
    out, g = _run(_fused, x, grad, detach=True)
    assert torch.equal(out, ref)
    assert int(ref.sum()) == 4 + 1
    torch.testing.assert_close(g, g_ref)
    assert (g_ref != 0).sum() > 0


@pytest.mark.parametrize("layout", ["expanded", "contiguous"])
def test_expanded_and_nchw_inputs(layout: str) -> None:
    gen = torch.Generator().manual_seed(11)
    base = (torch.randn(2, 3, 6, 7, generator=gen) + 0.7).to(DEVICE)
    if layout == "expanded":
        leaf = base.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        assert lif_pool_triton._nhwc(leaf.expand(4, 2, 3, 6, 7))[1] == 0  # read in place
        out = _fused(leaf.expand(4, 2, 3, 6, 7), True)
        grad = torch.randn(out.shape, generator=gen).to(DEVICE)
        (g,) = torch.autograd.grad(out, leaf, grad)
        ref, g_ref = _run(lambda y, **kw: _reference(y.expand(4, 2, 3, 6, 7), **kw), base, grad, detach=True)
    else:
        x = base.expand(4, 2, 3, 6, 7).contiguous()  # NCHW steps: copied once to channels-last
        grad = torch.randn(4, 2, 3, 3, 4, generator=gen).to(DEVICE)
        ref, g_ref = _run(_reference, x, grad, detach=False)
        out, g = _run(_fused, x, grad, detach=False)
    assert torch.equal(out.detach(), ref)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


def test_sps_uses_the_fused_pool_with_same_tokens_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SPS (channels-last) gives the same tokens and parameter gradients with and without the fused
    LIF + pool kernels, and does call them."""
    torch.manual_seed(0)
    sps = SPS(2, 16, LIFSpec()).to(DEVICE).train()
    sps.channels_last = True
    x = torch.randn(1, 3, 2, 32, 32).to(DEVICE).expand(2, -1, -1, -1, -1)
    calls = []
    real = lif_pool_triton.lif_maxpool
    monkeypatch.setattr(lif_pool_triton, "lif_maxpool", lambda *a: calls.append(1) or real(*a))

    def tokens_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        sps.zero_grad()
        out = sps(x)
        (out * torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)).sum().backward()
        return out.detach(), [p.grad.clone() for p in sps.parameters()]

    fused, g_fused = tokens_and_grads()
    assert len(calls) == 4  # the four pooled stages
    monkeypatch.setenv("SCMRL_LIF_POOL_TRITON", "0")
    apart, g_apart = tokens_and_grads()
    assert len(calls) == 4
    assert torch.equal(fused, apart)
    for a, b in zip(g_fused, g_apart):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert ModelConfig(num_classes=2).lif == "fused"  # the default model takes this path


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMRL_LIF_POOL_TRITON", "0")
    assert not lif_pool_triton.available(torch.empty(1, 1, 1, 1, 1, device=DEVICE))
    assert not lif_pool_triton.available(torch.empty(1, 1, 1, 1, device=DEVICE))
