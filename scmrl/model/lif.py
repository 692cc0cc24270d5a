"""Multi-step leaky integrate-and-fire (LIF) neurons over a time-first tensor ``[T, ...]``.

Dynamics (S-CMRL / BrainCog ``MyNode``, docs/reference.md §1), per time step t with V_{-1} = 0::

    H_t = V_{t-1} + (X_t - V_{t-1}) / tau      (computed as X_t / tau + (1 - 1/tau) V_{t-1})
    S_t = Heaviside(H_t - v_threshold)          (1 where H_t >= v_threshold)
    V_t = H_t (1 - S_t)                         (hard reset; the spike in the reset is detached)

Backward uses the sigmoid surrogate dS/dH = a * sig(a x) (1 - sig(a x)), x = H - v_threshold.
With ``detach_membrane`` (the reference default) V_{t-1} is detached before step t, so there is no
gradient through time in the membrane and every step's gradient is purely elementwise.

Two implementations with bit-identical spikes and gradients equal up to float rounding:

* :func:`lif_loop` - plain Python loop over T with autograd and a surrogate spike Function; the
  readable specification, used to check the fused one.
* :func:`lif_fused` - one :class:`torch.autograd.Function` over the whole time loop.  Forward keeps a
  single float buffer (the pre-spike membrane H for all steps, which is everything backward needs:
  spikes are ``H >= threshold``) and builds no per-step autograd graph; backward is a hand-written
  vectorised pass (detached membrane) or a reverse recurrence of one fused op per step (gradient
  through time).  Without autograd (inference) the membrane buffer itself becomes the output.
  This is what the models use by default.  On CUDA, where Triton is installed, the same Function is
  two Triton kernels (:mod:`scmrl.model.lif_triton`) that walk the T steps of each neuron in registers, once
  they have built and matched the loop on the device (:mod:`scmrl.model.kernel_check`).

On CPU the cost of both is dominated by memory traffic (and, for tensors above glibc's 32 MiB
mmap threshold, by page faults on every fresh allocation, which scmrl-train avoids with
:mod:`scmrl.train.cpu_memory`); ``benchmarks/lif_bench.py`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from scmrl.model import lif_triton
from scmrl.model.choices import LIF_IMPLS
from scmrl.model.kernel_check import passes_self_check

__all__ = ["LIF", "LIFSpec", "lif_fused", "lif_loop", "LIF_IMPLS", "membrane", "lif_input_grad", "empty_steps"]


# ----------------------------------------------------------------------------------------------
# Reference implementation: a Python loop over T with autograd.
# ----------------------------------------------------------------------------------------------
class _SigmoidSpike(torch.autograd.Function):
    """Heaviside forward (x >= 0), sigmoid-derivative backward with slope ``alpha``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(x * ctx.alpha)
        return grad_out * ctx.alpha * sig * (1.0 - sig), None


def lif_loop(
    x: Tensor,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    surrogate_alpha: float = 4.0,
    detach_membrane: bool = True,
) -> Tensor:
    """LIF over ``x[T, ...]`` as a Python loop with autograd (the readable reference)."""
    decay = 1.0 - 1.0 / tau
    v: Tensor | None = None
    spikes = []
    for t in range(x.shape[0]):
        drive = x[t] / tau
        h = drive if v is None else torch.add(drive, v, alpha=decay)
        s = _SigmoidSpike.apply(h - v_threshold, surrogate_alpha)
        v = h * (1.0 - s.detach())
        if detach_membrane:
            v = v.detach()
        spikes.append(s)
    return torch.stack(spikes, 0)


# ----------------------------------------------------------------------------------------------
# Fused implementation: one autograd node for the whole time loop.
# ----------------------------------------------------------------------------------------------
def membrane(x: Tensor, tau: float, v_threshold: float) -> Tensor:
    """Pre-spike membrane H for every step, in one new buffer, updated in place step by step."""
    decay = 1.0 - 1.0 / tau
    h = torch.div(x, tau, out=empty_steps(x))  # X_t / tau for all t at once
    below = torch.empty_like(h[0]) if x.shape[0] > 1 else None  # (H < th) as 0./1. in h's dtype
    for t in range(1, x.shape[0]):
        prev = h[t - 1]
        # V_{t-1} = H_{t-1} * (H_{t-1} < th);  H_t += decay * V_{t-1}.  Writing the mask straight into a
        # float buffer saves the bool tensor and its conversion that addcmul_ would make of it.
        torch.lt(prev, v_threshold, out=below)
        h[t].addcmul_(prev, below, value=decay)
    return h


def empty_steps(x: Tensor) -> Tensor:
    """A new dense ``[T, ...]`` buffer whose steps have the memory layout of ``x[0]`` (e.g. channels-last),
    also when ``x`` is one step expanded over T (stride 0), where ``empty_like`` would fall back to NCHW."""
    if x.shape[0] == 0:
        return torch.empty_like(x)
    step = torch.empty_like(x[0])  # keeps a dense step's strides, else contiguous ones
    return torch.empty_strided(x.shape, (step.numel(), *step.stride()), dtype=x.dtype, device=x.device)


class _LIFFused(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, tau: float, v_threshold: float, alpha: float, detach_membrane: bool
    ) -> Tensor:
        h = membrane(x, tau, v_threshold)
        spikes = torch.empty_like(h)
        torch.ge(h, v_threshold, out=spikes)  # writes 0./1. straight into the output dtype
        ctx.save_for_backward(h)
        ctx.cfg = (tau, v_threshold, alpha, detach_membrane)
        return spikes

    @staticmethod
    def backward(ctx: Any, grad_s: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (h,) = ctx.saved_tensors
        return lif_input_grad(h, grad_s, *ctx.cfg), None, None, None, None


def lif_input_grad(h: Tensor, grad_s: Tensor, tau: float, v_threshold: float, alpha: float,
                   detach_membrane: bool, reuse_h: bool = False) -> Tensor:
    """dL/dX of the LIF from its pre-spike membrane ``h`` and the spikes' gradient ``grad_s`` (same shape).

    With ``reuse_h`` (and a detached membrane, where H is read once) the result is written over ``h``."""
    # One buffer g, three passes: g = sig(alpha (h - th)); g = grad_s * g (1 - g); g *= alpha / tau
    # (the 1/tau is dH/dX).  Unless reused, ``h`` is left untouched so retain_graph keeps working.
    # alpha*h - alpha*th in one pass (a CPU 0-dim tensor acts as a scalar on every device).
    out = h if reuse_h and detach_membrane else None
    g = torch.add(torch.tensor(-alpha * v_threshold, dtype=h.dtype), h, alpha=alpha, out=out)
    g.sigmoid_()
    torch.ops.aten.sigmoid_backward.grad_input(grad_s, g, grad_input=g)
    g.mul_(alpha / tau)
    if not detach_membrane:
        # dL/dX_t = g_t + decay * (H_t < th) * dL/dX_{t+1}   (reverse in time)
        decay = 1.0 - 1.0 / tau
        for t in range(h.shape[0] - 2, -1, -1):
            g[t].addcmul_(g[t + 1], h[t] < v_threshold, value=decay)
    return g


def _triton_checked(device: torch.device) -> bool:
    """The Triton kernels built and agree with the loop on ``device`` (checked once, see kernel_check)."""

    def sample(dev: torch.device) -> Tensor:
        return (torch.randn(3, 2, 5, 7, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.7).to(dev)

    return passes_self_check(
        "LIF",
        device,
        lambda x: torch.cat([lif_triton.lif_triton(x, 2.0, 1.0, 4.0, d) for d in (True, False)]),
        lambda x: torch.cat([lif_loop(x, 2.0, 1.0, 4.0, d) for d in (True, False)]),
        sample,
        "SCMRL_LIF_TRITON",
    )


def lif_fused(
    x: Tensor,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    surrogate_alpha: float = 4.0,
    detach_membrane: bool = True,
) -> Tensor:
    """LIF over ``x[T, ...]`` as one autograd Function (same values and gradients as :func:`lif_loop`)."""
    if lif_triton.available(x) and _triton_checked(x.device):
        return lif_triton.lif_triton(x, float(tau), float(v_threshold), float(surrogate_alpha), bool(detach_membrane))
    if not (x.requires_grad and torch.is_grad_enabled()):
        # inference: nothing to save, so the membrane buffer is turned into the output in place
        return membrane(x, float(tau), float(v_threshold)).ge_(float(v_threshold))
    return _LIFFused.apply(x, float(tau), float(v_threshold), float(surrogate_alpha), bool(detach_membrane))


_IMPL_FNS = {"fused": lif_fused, "loop": lif_loop}


class LIF(nn.Module):
    """Multi-step LIF layer on a time-first tensor ``[T, B, ...]``; stateless between calls.

    The state is reset at every call (each forward sees the whole spike train), which removes the
    reference's need to call ``reset()`` by hand.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        detach_membrane: bool = True,
        surrogate_alpha: float = 4.0,
        impl: str = "fused",
    ) -> None:
        super().__init__()
        if impl not in _IMPL_FNS:
            raise ValueError(f"unknown LIF impl {impl!r}; expected one of {LIF_IMPLS}")
        if tau <= 0:
            raise ValueError("tau must be > 0")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.detach_membrane = bool(detach_membrane)
        self.surrogate_alpha = float(surrogate_alpha)
        self.impl = impl

    def forward(self, x: Tensor) -> Tensor:
        return _IMPL_FNS[self.impl](x, self.tau, self.v_threshold, self.surrogate_alpha, self.detach_membrane)

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, v_threshold={self.v_threshold}, detach_membrane={self.detach_membrane}, "
            f"surrogate_alpha={self.surrogate_alpha}, impl={self.impl!r}"
        )


@dataclass(frozen=True)
class LIFSpec:
    """Neuron settings shared by every layer of a model, so one config switch reaches them all."""

    tau: float = 2.0
    v_threshold: float = 1.0
    detach_membrane: bool = True
    surrogate_alpha: float = 4.0
    impl: str = "fused"

    def build(self, v_threshold: float | None = None) -> LIF:
        """A new :class:`LIF`; ``v_threshold`` overrides the default (e.g. the attention neuron)."""
        return LIF(
            tau=self.tau,
            v_threshold=self.v_threshold if v_threshold is None else v_threshold,
            detach_membrane=self.detach_membrane,
            surrogate_alpha=self.surrogate_alpha,
            impl=self.impl,
        )
