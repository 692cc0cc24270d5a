"""``scmrl-train --compile``: the compiled LIF passes of CPU training give the eager spikes and gradients, and
without a working compiler the eager path takes over."""

from __future__ import annotations

import copy
import logging
import shutil

import pytest
import torch
from torch import nn

from scmrl.model import bn_lif, lif_compiled
from scmrl.model.lif import LIF


@pytest.fixture(autouse=True)
def _restore_state():
    saved = dict(lif_compiled._state)
    yield
    lif_compiled._state.clear()
    lif_compiled._state.update(saved)


def _run(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    bn = copy.deepcopy(bn).train()
    leaf = x.clone().requires_grad_(True)
    out = bn_lif.bn_lif(bn, LIF(), leaf, steps=3, repeated=True, pool=True)
    (out * torch.linspace(-1, 2, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), leaf.grad, bn.weight.grad, bn.bias.grad, bn.running_var


def _case() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(1.0 + torch.rand(4, generator=g))
        bn.bias.copy_(0.5 * torch.randn(4, generator=g))
    return bn, torch.randn(2, 4, 10, 8, generator=g) * 1.5 + 0.3


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
                    reason="inductor's CPU backend needs a C++ compiler")
def test_compiled_passes_match_eager() -> None:
    bn, x = _case()
    lif_compiled.enable(False)
    eager = _run(bn, x)
    lif_compiled.enable(True)
    compiled = _run(bn, x)
    assert lif_compiled.enabled(), "the compiled path failed and fell back to eager"
    assert 0.05 < eager[0].mean() < 0.95
    assert torch.equal(compiled[0], eager[0])
    for a, b in zip(compiled[1:], eager[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_failed_compile_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    bn, x = _case()
    lif_compiled.enable(False)
    eager = _run(bn, x)

    def broken(*args: object) -> torch.Tensor:
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    lif_compiled._state.update(on=True, fns=(broken, broken))
    with caplog.at_level(logging.WARNING, logger="scmrl.model.lif_compiled"):
        fallback = _run(bn, x)
    assert not lif_compiled.enabled()
    assert "No working C++ compiler" in caplog.text
    for a, b in zip(fallback, eager):
        assert torch.equal(a, b)
