"""The LIF time loop as two Triton kernels, used by :func:`scmrl.model.lif.lif_fused` on CUDA.

On a GPU the plain loop launches a dozen elementwise kernels per time step and the autograd graph
keeps several full-size tensors per step; the PyTorch fused version still makes ``T + 3`` passes over
memory.  Here one kernel walks all T steps of each neuron in registers, reading X once and writing the
spikes and the pre-spike membrane H once (forward), and one kernel reads H and dL/dS once and writes
dL/dX once (backward, with or without gradient through time).  Arithmetic is in float32 whatever the
storage dtype (bf16 under autocast), so spikes match :func:`scmrl.model.lif.lif_loop` exactly in float32.

Triton is optional: :func:`available` says whether these kernels can run for a tensor (CUDA, Triton
importable, not disabled with ``SCMRL_LIF_TRITON=0``); otherwise the PyTorch fused path is used.
``TRITON_INTERPRET=1`` runs them on CPU tensors, which the tests use where Triton is installed.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

try:  # pragma: no cover - depends on the machine
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except Exception:  # ImportError, or a broken install without a driver
    _HAVE_TRITON = False

__all__ = ["available", "lif_triton"]

_BLOCK = 1024


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(x: Tensor) -> bool:
    """Whether the Triton kernels can take ``x`` (CUDA tensor, or CPU under ``TRITON_INTERPRET=1``)."""
    if not _HAVE_TRITON or os.environ.get("SCMRL_LIF_TRITON", "1") == "0":
        return False
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    return x.is_cuda or (_interpreting() and x.device.type == "cpu")


if _HAVE_TRITON:

    @triton.jit
    def lif_step(x, v, tau, decay, v_th):
        """One time step in float32: (pre-spike membrane H, spike, membrane after the reset)."""
        h = x / tau + decay * v
        fire = h >= v_th
        return h, fire, tl.where(fire, 0.0, h)

    @triton.jit
    def lif_input_grad(g, h, carry, inv_tau, decay, v_th, alpha, THROUGH_TIME: tl.constexpr):
        """dL/dX_t from dL/dS_t and H_t (sigmoid surrogate); with THROUGH_TIME, plus the membrane's share
        of ``carry`` = dL/dX_{t+1}."""
        sig = tl.sigmoid(alpha * (h - v_th))
        dx = g * (alpha * sig * (1.0 - sig)) * inv_tau
        if THROUGH_TIME:
            dx = dx + tl.where(h < v_th, decay * carry, 0.0)
        return dx

    @triton.jit
    def _lif_fwd_kernel(
        x_ptr, s_ptr, h_ptr, n, x_step, steps, tau, decay, v_th, SAVE_H: tl.constexpr, BLOCK: tl.constexpr
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        v = tl.zeros([BLOCK], dtype=tl.float32)
        for step in range(steps):
            t = tl.cast(step, tl.int64)  # t * n may pass 2**31
            idx = t * n + offs
            # x_step = n, or 0 for an input repeated over T (a static image expanded, read once per step)
            x = tl.load(x_ptr + (t * x_step + offs), mask=mask, other=0.0).to(tl.float32)
            h, fire, v = lif_step(x, v, tau, decay, v_th)
            tl.store(s_ptr + idx, fire.to(s_ptr.dtype.element_ty), mask=mask)
            if SAVE_H:
                tl.store(h_ptr + idx, h.to(h_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _lif_bwd_kernel(
        g_ptr, h_ptr, dx_ptr, n, steps, inv_tau, decay, v_th, alpha, THROUGH_TIME: tl.constexpr, BLOCK: tl.constexpr
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        carry = tl.zeros([BLOCK], dtype=tl.float32)  # dL/dX_{t+1}
        for i in range(steps):
            t = tl.cast(steps - 1 - i, tl.int64)
            idx = t * n + offs
            h = tl.load(h_ptr + idx, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + idx, mask=mask, other=0.0).to(tl.float32)
            carry = lif_input_grad(g, h, carry, inv_tau, decay, v_th, alpha, THROUGH_TIME)
            tl.store(dx_ptr + idx, carry.to(dx_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, _BLOCK),)


def _dense_order(step: Tensor) -> list[int]:
    """The dim order in which one time step's tensor is contiguous (e.g. NHWC for a channels_last
    activation), so the kernels work on its memory as is and the outputs keep its layout."""
    order = sorted(range(step.dim()), key=lambda i: (-step.stride(i), i))
    return order if step.permute(order).is_contiguous() else []


def _to_dense(x: Tensor) -> tuple[Tensor, int, list[int]]:
    """(x with one step's dims permuted to a contiguous order, its time stride (n, or 0 for an input
    expanded over T), that order); the input is copied only when no such view exists."""
    steps = x.shape[0]
    order = _dense_order(x[0]) if steps else []
    if order:
        xp = x.permute(0, *[1 + i for i in order])
        n = xp[0].numel()
        if steps == 1 or xp.stride(0) in (0, n):
            return xp, (xp.stride(0) if steps > 1 else n), order
    x = x.contiguous()
    return x, x[0].numel() if steps else 0, list(range(x.dim() - 1))


def _restore(t: Tensor, order: list[int]) -> Tensor:
    """Undo the permutation of :func:`_to_dense` (a view)."""
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return t.permute(0, *[1 + i for i in inverse])


def _forward(x: Tensor, tau: float, v_threshold: float, save_h: bool) -> tuple[Tensor, Tensor | None, list[int]]:
    """(spikes, pre-spike membrane H or None) in the permuted dense layout, and the permutation."""
    xp, x_step, order = _to_dense(x)
    steps = xp.shape[0]
    shape = (steps, *xp.shape[1:])
    spikes = torch.empty(shape, dtype=x.dtype, device=x.device)
    h = torch.empty(shape, dtype=x.dtype, device=x.device) if save_h else None
    n = spikes[0].numel() if steps else 0
    if spikes.numel():
        _lif_fwd_kernel[_grid(n)](
            xp, spikes, h if h is not None else spikes, n, x_step, steps, tau, 1.0 - 1.0 / tau, v_threshold,
            SAVE_H=save_h, BLOCK=_BLOCK,
        )
    return spikes, h, order


class _LIFTriton(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, tau: float, v_threshold: float, alpha: float, detach_membrane: bool
    ) -> Tensor:
        spikes, h, order = _forward(x, tau, v_threshold, save_h=True)
        ctx.save_for_backward(h)
        ctx.cfg = (tau, v_threshold, alpha, detach_membrane)
        ctx.order = order
        return _restore(spikes, order)

    @staticmethod
    def backward(ctx: Any, grad_s: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (h,) = ctx.saved_tensors
        tau, v_threshold, alpha, detach_membrane = ctx.cfg
        grad_s = grad_s.permute(0, *[1 + i for i in ctx.order]).contiguous()  # H's layout
        dx = torch.empty_like(h)
        steps = h.shape[0]
        n = h[0].numel() if steps else 0
        if h.numel():
            _lif_bwd_kernel[_grid(n)](
                grad_s, h, dx, n, steps, 1.0 / tau, 1.0 - 1.0 / tau, v_threshold, alpha,
                THROUGH_TIME=not detach_membrane, BLOCK=_BLOCK,
            )
        return _restore(dx, ctx.order), None, None, None, None


def lif_triton(
    x: Tensor, tau: float, v_threshold: float, surrogate_alpha: float, detach_membrane: bool
) -> Tensor:
    """LIF over ``x[T, ...]`` with the Triton kernels; call only where :func:`available` is true."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        spikes, _, order = _forward(x, tau, v_threshold, save_h=False)
        return _restore(spikes, order)
    return _LIFTriton.apply(x, tau, v_threshold, surrogate_alpha, detach_membrane)
