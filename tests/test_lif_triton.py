"""The Triton LIF kernels (CUDA; or CPU under TRITON_INTERPRET=1) against the plain loop.

Skipped where Triton cannot run (CI has no GPU and no Triton); run on a GPU machine, or locally with
``TRITON_INTERPRET=1`` and Triton installed.
"""

from __future__ import annotations

import pytest
import torch

from scmrl.model import kernel_check
from scmrl.model import lif
from scmrl.model import lif_triton
from scmrl.model.lif import lif_fused, lif_loop
from tests.test_lif import _spikes_and_grad as _run

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not lif_triton.available(torch.empty(0, device=DEVICE)), reason="Triton kernels cannot run here"
)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize(
    "shape,kw",
    [
        ((4, 3, 8, 5), {"tau": 2.0, "v_threshold": 1.0, "surrogate_alpha": 4.0}),
        ((7, 2, 3, 33, 5), {"tau": 3.0, "v_threshold": 0.5, "surrogate_alpha": 2.0}),
        ((1, 1500), {"tau": 1.5, "v_threshold": 1.0, "surrogate_alpha": 4.0}),
    ],
)
def test_triton_matches_loop_float32(shape: tuple[int, ...], kw: dict, detach: bool) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 1.5 + 0.8).to(DEVICE)
    grad = torch.randn(shape, generator=gen).to(DEVICE)
    s_ref, g_ref = _run(lif_loop, x, grad, detach_membrane=detach, **kw)
    s_tri, g_tri = _run(lif_triton.lif_triton, x, grad, detach_membrane=detach, **kw)
    assert s_tri.dtype == torch.float32
    assert torch.equal(s_ref, s_tri)
    assert 0.0 < s_tri.mean().item() < 1.0
    torch.testing.assert_close(g_tri, g_ref, rtol=1e-5, atol=1e-6)
    # lif_fused dispatches to the kernels here, and inference gives the same spikes
    s_fused, g_fused = _run(lif_fused, x, grad, detach_membrane=detach, **kw)
    assert torch.equal(s_fused, s_tri) and torch.equal(g_fused, g_tri)
    with torch.no_grad():
        assert torch.equal(lif_fused(x, detach_membrane=detach, **kw), s_ref)


@pytest.mark.skipif(DEVICE != "cuda", reason="Triton's CPU interpreter does not handle bfloat16")
def test_triton_bfloat16_spikes_exact_gradient_close() -> None:
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 2, 64, 9, generator=gen) + 0.6).to(DEVICE).to(torch.bfloat16)
    grad = torch.randn(4, 2, 64, 9, generator=gen).to(DEVICE).to(torch.bfloat16)
    s_ref, g_ref = _run(lif_loop, x.float(), grad.float())  # float32 arithmetic on the same inputs
    s_tri, g_tri = _run(lif_triton.lif_triton, x, grad, tau=2.0, v_threshold=1.0, surrogate_alpha=4.0,
                        detach_membrane=True)
    assert s_tri.dtype == torch.bfloat16 and g_tri.dtype == torch.bfloat16
    assert torch.equal(s_tri.float(), s_ref)
    torch.testing.assert_close(g_tri.float(), g_ref, rtol=2e-2, atol=2e-2)


def test_kernels_pass_their_first_use_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_check, "_verdicts", {})
    assert lif._triton_checked(torch.device(DEVICE))


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMRL_LIF_TRITON", "0")
    assert not lif_triton.available(torch.empty(1, device=DEVICE))


@pytest.mark.parametrize("layout", ["channels_last", "expanded", "transposed"])
def test_triton_keeps_layout_of_strided_inputs(layout: str) -> None:
    """Channels-last activations are used in place (spikes keep the layout); an input expanded over T
    (a static image repeated) is read without a copy; any other stride falls back to a copy."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(12, 5, 6, 7, generator=gen) + 0.7  # [T*B, C, H, W], T=3, B=4
    if layout == "channels_last":
        x = base.to(DEVICE).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 4))
    elif layout == "expanded":
        x = base[:4].to(DEVICE).expand(3, 4, 5, 6, 7)
    else:
        x = base.to(DEVICE).unflatten(0, (3, 4)).transpose(3, 4)
    grad = torch.randn(x.shape, generator=gen).to(DEVICE)
    if layout == "expanded":  # the expand must be part of the graph (clone would make x dense)
        leaf = base[:4].to(DEVICE).requires_grad_(True)
        s_tri = lif_triton.lif_triton(leaf.expand(3, 4, 5, 6, 7), 2.0, 1.0, 4.0, True)
        (g_tri,) = torch.autograd.grad(s_tri, leaf, grad)
        s_ref, g_ref = _run(lambda y, **kw: lif_loop(y.expand(3, 4, 5, 6, 7), **kw), base[:4].to(DEVICE), grad)
        assert torch.equal(s_ref, s_tri)
        torch.testing.assert_close(g_tri, g_ref, rtol=1e-5, atol=1e-6)
        assert lif_triton._to_dense(leaf.expand(3, 4, 5, 6, 7))[1] == 0  # read in place, time stride 0
    for detach in (True, False):
        s_ref, g_ref = _run(lif_loop, x, grad, detach_membrane=detach)
        s_tri, g_tri = _run(lif_triton.lif_triton, x, grad, tau=2.0, v_threshold=1.0, surrogate_alpha=4.0,
                            detach_membrane=detach)
        assert torch.equal(s_ref, s_tri)
        torch.testing.assert_close(g_tri, g_ref, rtol=1e-5, atol=1e-6)
        if layout == "channels_last":
            assert s_tri.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
