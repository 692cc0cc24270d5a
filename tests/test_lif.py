"""LIF neuron: the fused autograd Function matches the plain loop, and a hand-computed example."""

from __future__ import annotations

import math

import pytest
import torch

from scmrl.model.lif import LIF, LIFSpec, lif_fused, lif_loop


def _spikes_and_grad(fn, x: torch.Tensor, grad: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    s = fn(x, **kw)
    (g,) = torch.autograd.grad(s, x, grad)
    return s.detach(), g


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize(
    "shape,kw",
    [
        ((4, 3, 8, 5), {}),
        ((1, 6, 7), {}),
        ((7, 2, 3, 4, 4), {"tau": 3.0, "v_threshold": 0.5, "surrogate_alpha": 2.0}),
        ((5, 64), {"tau": 1.5}),
    ],
)
def test_fused_matches_loop(shape: tuple[int, ...], kw: dict, detach: bool) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen) * 1.5 + 0.8
    grad = torch.randn(shape, generator=gen)
    s_loop, g_loop = _spikes_and_grad(lif_loop, x, grad, detach_membrane=detach, **kw)
    s_fused, g_fused = _spikes_and_grad(lif_fused, x, grad, detach_membrane=detach, **kw)
    assert torch.equal(s_loop, s_fused)
    assert 0.0 < s_fused.mean().item() < 1.0  # the example actually spikes and actually resets
    torch.testing.assert_close(g_fused, g_loop, rtol=1e-5, atol=1e-6)


def test_fused_matches_loop_float64_noncontiguous() -> None:
    x = torch.randn(5, 4, 6, dtype=torch.float64).transpose(1, 2) * 2  # [T, 6, 4], non-contiguous
    grad = torch.randn(5, 6, 4, dtype=torch.float64)
    for detach in (True, False):
        s1, g1 = _spikes_and_grad(lif_loop, x, grad, detach_membrane=detach)
        s2, g2 = _spikes_and_grad(lif_fused, x, grad, detach_membrane=detach)
        assert s2.dtype == torch.float64
        assert torch.equal(s1, s2)
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def _sg(h: float, th: float = 1.0, alpha: float = 4.0) -> float:
    sig = 1.0 / (1.0 + math.exp(-alpha * (h - th)))
    return alpha * sig * (1.0 - sig)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_hand_computed_three_steps(impl: str) -> None:
    # neuron 0: x = 1.5, 1.5, 3.0 -> H = 0.75, 0.375 + 0.75 = 1.125 (spike, reset), 0 + 1.5 = 1.5 (spike)
    # neuron 1: x = 0.5 each       -> H = 0.25, 0.375, 0.4375 (never spikes, never resets)
    x = torch.tensor([[1.5, 0.5], [1.5, 0.5], [3.0, 0.5]])
    h = [[0.75, 0.25], [1.125, 0.375], [1.5, 0.4375]]
    lif_det = LIF(tau=2.0, v_threshold=1.0, detach_membrane=True, surrogate_alpha=4.0, impl=impl)
    lif_bptt = LIF(tau=2.0, v_threshold=1.0, detach_membrane=False, surrogate_alpha=4.0, impl=impl)
    for lif in (lif_det, lif_bptt):
        xx = x.clone().requires_grad_(True)
        s = lif(xx)
        assert s.tolist() == [[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
        s.sum().backward()
        g = xx.grad
        if lif.detach_membrane:  # dL/dX_t = sg(H_t) / tau, no path through time
            expect = [[_sg(h[t][i]) / 2 for i in range(2)] for t in range(3)]
        else:  # dL/dH_t = sg(H_t) + (1 - 1/tau) (1 - S_t) dL/dH_{t+1};  dL/dX_t = dL/dH_t / tau
            expect = [[0.0, 0.0] for _ in range(3)]
            spikes = s.detach().tolist()
            for i in range(2):
                gh_next = 0.0
                for t in (2, 1, 0):
                    gh = _sg(h[t][i]) + 0.5 * (1 - spikes[t][i]) * gh_next
                    expect[t][i] = gh / 2
                    gh_next = gh
            # spot-check one value by hand: neuron 1, t = 0: (sg(.25) + .5 (sg(.375) + .5 sg(.4375))) / 2
            assert expect[0][1] == pytest.approx((_sg(0.25) + 0.5 * (_sg(0.375) + 0.5 * _sg(0.4375))) / 2)
        torch.testing.assert_close(g, torch.tensor(expect), rtol=1e-5, atol=1e-7)


def test_membrane_detach_changes_gradient_only() -> None:
    x = torch.randn(4, 50) + 0.7
    grad = torch.ones(4, 50)
    s1, g1 = _spikes_and_grad(lif_fused, x, grad, detach_membrane=True)
    s2, g2 = _spikes_and_grad(lif_fused, x, grad, detach_membrane=False)
    assert torch.equal(s1, s2)
    assert torch.equal(g1[-1], g2[-1])  # the last step has no future
    assert not torch.allclose(g1[:-1], g2[:-1])


def test_retain_graph_and_no_grad() -> None:
    x = (torch.randn(3, 10) + 1).requires_grad_(True)
    s = lif_fused(x, detach_membrane=False)
    (g1,) = torch.autograd.grad(s.sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(s.sum(), x)
    assert torch.equal(g1, g2)  # the saved membrane is not modified by backward
    with torch.no_grad():
        assert torch.equal(lif_fused(x), s.detach())


def test_module_and_spec() -> None:
    spec = LIFSpec(tau=3.0, v_threshold=0.7, detach_membrane=False, surrogate_alpha=2.0, impl="loop")
    lif = spec.build(v_threshold=0.5)
    got = (lif.tau, lif.v_threshold, lif.detach_membrane, lif.surrogate_alpha, lif.impl)
    assert got == (3.0, 0.5, False, 2.0, "loop")
    assert spec.build().v_threshold == 0.7
    x = torch.randn(2, 3, 4, 5, 5)
    assert LIF()(x).shape == x.shape
    assert set(LIF()(x).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        LIF(impl="triton-please")
