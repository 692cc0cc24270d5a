"""The first-use check that keeps optional kernels (Triton) out of training where they fail to build or
disagree with the PyTorch path. Runs everywhere: the kernels are stood in for by plain functions."""

from __future__ import annotations

import logging

import pytest
import torch

from scmrl.model import kernel_check
from scmrl.model import lif
from scmrl.model import lif_pool_triton
from scmrl.model import lif_triton
from scmrl.model.embedding import SPS
from scmrl.model.lif import LIFSpec, lif_loop

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_check, "_verdicts", {})


def _sample(device: torch.device) -> torch.Tensor:
    return torch.linspace(-2.0, 3.0, 24, device=device).reshape(4, 6)


def test_agreeing_kernel_passes_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def candidate(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return lif_loop(x)

    with torch.inference_mode():  # first met while evaluating: the check still runs its backward
        assert kernel_check.passes_self_check("demo", CPU, candidate, lif_loop, _sample, "DEMO_SWITCH")
    for _ in range(2):
        assert kernel_check.passes_self_check("demo", CPU, candidate, lif_loop, _sample, "DEMO_SWITCH")
    assert calls == [1]  # checked once per process and device
    assert not caplog.records


@pytest.mark.parametrize("failure", ["raises", "wrong values", "wrong gradient"])
def test_failing_kernel_is_refused_with_a_warning(failure: str, caplog: pytest.LogCaptureFixture) -> None:
    def candidate(x: torch.Tensor) -> torch.Tensor:
        if failure == "raises":
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")
        if failure == "wrong values":
            return lif_loop(x, v_threshold=0.5)
        return lif_loop(x, surrogate_alpha=2.0)  # same spikes, other surrogate slope

    with caplog.at_level(logging.WARNING, logger="scmrl.model.kernel_check"):
        assert not kernel_check.passes_self_check("demo", CPU, candidate, lif_loop, _sample, "DEMO_SWITCH")
        assert not kernel_check.passes_self_check("demo", CPU, candidate, lif_loop, _sample, "DEMO_SWITCH")
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "demo kernels are not used on cpu" in msg and "DEMO_SWITCH=0" in msg
    if failure == "raises":
        assert "Failed to find C compiler" in msg
    else:
        assert "differ" in msg


def test_lif_falls_back_when_the_triton_kernels_do_not_build(monkeypatch, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(lif_triton, "available", lambda x: True)
    monkeypatch.setattr(lif_triton, "lif_triton", broken)
    x = torch.randn(4, 3, 10, generator=torch.Generator().manual_seed(1)) + 0.8
    with caplog.at_level(logging.WARNING, logger="scmrl.model.kernel_check"):
        got = lif.lif_fused(x)
    assert torch.equal(got, lif_loop(x))
    assert "SCMRL_LIF_TRITON=0" in caplog.text


def test_sps_runs_lif_and_pool_apart_when_the_fused_kernels_fail(monkeypatch, caplog) -> None:
    """Where Triton is importable but the LIF + pool kernels fail (here: they cannot run on CPU without
    the interpreter), the SPS gives the same tokens as with the pool apart, after one warning."""
    torch.manual_seed(0)
    sps = SPS(2, 16, LIFSpec()).eval()
    sps.channels_last = True
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        monkeypatch.setenv("SCMRL_LIF_POOL_TRITON", "0")
        apart = sps(x)
        monkeypatch.delenv("SCMRL_LIF_POOL_TRITON")
        monkeypatch.setattr(lif_triton, "available", lambda t: True)
        monkeypatch.setattr(lif, "_triton_checked", lambda device: False)  # the LIF itself: PyTorch path
        monkeypatch.setattr(lif_pool_triton._LIFMaxPool, "apply", lambda *a: 1 / 0)
        with caplog.at_level(logging.WARNING, logger="scmrl.model.kernel_check"):
            checked = sps(x)
    assert torch.equal(checked, apart)
    assert caplog.text.count("LIF + max-pool kernels are not used on cpu") == 1
    assert "ZeroDivisionError" in caplog.text and "SCMRL_LIF_POOL_TRITON=0" in caplog.text
