"""A first-use check of optional kernels (Triton) against the PyTorch path they replace.

Triton kernels are built on the user's machine at first launch: a missing C compiler, an unsupported GPU
or a Triton/driver mismatch fails there and then, and a miscompile would silently train a different
model. So before a kernel is used on a device, it runs once on a small input, forward and backward, and
must give the reference's values and gradients; otherwise training goes on with the PyTorch path and a
warning that says why and which switch turns the kernel off. The verdict is kept per process and device.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

log = logging.getLogger("scmrl.model.kernel_check")

__all__ = ["passes_self_check"]

_verdicts: dict[tuple[str, str], bool] = {}


def _values_and_grad(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    leaf = x.detach().clone().requires_grad_(True)
    out = fn(leaf)
    weights = torch.linspace(-1.0, 1.0, out.numel(), device=out.device, dtype=out.dtype).view_as(out)
    (grad,) = torch.autograd.grad(out, leaf, weights)
    return out.detach(), grad


def passes_self_check(
    name: str,
    device: torch.device,
    candidate: Callable[[Tensor], Tensor],
    reference: Callable[[Tensor], Tensor],
    sample: Callable[[torch.device], Tensor],
    switch: str,
) -> bool:
    """Whether ``candidate`` (the kernels) matches ``reference`` on ``sample(device)``: equal values and
    gradients within float32 rounding. Checked once per process and device; a failure is logged once."""
    key = (name, str(device))
    if key not in _verdicts:
        try:
            with torch.inference_mode(False), torch.enable_grad():  # also when first met in evaluation
                x = sample(device)
                got, want = _values_and_grad(candidate, x), _values_and_grad(reference, x)
            ok = torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1], rtol=1e-4, atol=1e-5)
            why = "its results differ from the PyTorch path"
        except Exception as exc:  # any failure to build or run means: do not use it here
            ok, why = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if not ok:
            log.warning(
                "%s kernels are not used on %s (%s); training goes on with the PyTorch path. Set %s=0 to "
                "skip them (and this check).", name, device, why, switch,
            )
        _verdicts[key] = ok
    return _verdicts[key]
