"""LIF followed by MaxPool2d(3, stride 2, padding 1) as one pair of Triton kernels (CUDA).

Each SPS stage is conv -> BN -> LIF -> max-pool. Separately, the LIF writes full-size spikes, the pool
reads them back and writes an int64 index per output (as many bytes as the bf16 input itself), and its
backward zero-fills a full-size gradient, scatters into it and the LIF backward reads it again: on an
H100 that separate pool costs 15 of a 65 ms training step, three times the LIF (BENCHMARKS.md). Here:

* forward: one program per tile of pooling windows x channels runs the LIF of the window's 3x3
  neurons over all T steps in registers, writes the pooled spikes, the pre-spike membrane H of the
  2x2 neurons it owns (what backward needs) and, per window and step, the position (0..8, one byte)
  of the window's first maximum;
* backward: one program per tile of pixels x channels sums, per neuron, the output gradients of the (at
  most four) windows whose first maximum it is, and applies the LIF backward (with or without gradient
  through time).

Values and gradient routing are exactly nn.MaxPool2d's: the gradient of a window goes to its first
maximum in row-major order; for a window without a spike, to its first position inside the image.
Only channels-last activations (what the SPS uses on CUDA) are taken as they are; anything else is
copied once. :func:`available` says when this path is used: on a device where the kernels build and pass
a first-use check against the LIF loop + ``F.max_pool2d`` (:mod:`scmrl.model.kernel_check`), unless
``SCMRL_LIF_POOL_TRITON=0`` (LIF kernels + PyTorch's pool then).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from scmrl.model import lif_triton
from scmrl.model.kernel_check import passes_self_check
from scmrl.model.lif import lif_loop

__all__ = ["available", "lif_maxpool"]

# Windows (forward) or pixels (backward) x channels per program, one per thread (8 warps): the forward keeps
# 9 membranes per element, and at one element per thread its sm_90 build needs 68 registers (213 at four
# per thread, which would leave an SM 8 warps to hide memory latency with); the backward needs 40.
_TILE = 256
_WARPS = 8

if lif_triton._HAVE_TRITON:  # pragma: no cover - depends on the machine
    import triton
    import triton.language as tl

    from scmrl.model.lif_triton import lif_input_grad, lif_step

    @triton.jit
    def _tile(rows, C, HEIGHT, WIDTH, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """This program's rows (pixels or windows (n, y, x) of a [N, HEIGHT, WIDTH, C] tensor, int64) and
        channels: (rows, row mask, channels [1, BLOCK_C], channel mask, n, y, x)."""
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        return r, r < rows, c[None, :], (c < C)[None, :], r // (WIDTH * HEIGHT), (r // WIDTH) % HEIGHT, r % WIDTH

    @triton.jit
    def _visit(
        x_ptr, h_ptr, x_base, h_base, oh, ow, pm, c2, cm2, H, W, C, v, best, first,
        tau, decay, v_th, K: tl.constexpr, SAVE: tl.constexpr,
    ):
        """One step of the LIF of window position K (row-major 0..8) for a tile of windows."""
        ih = 2 * oh - 1 + K // 3
        iw = 2 * ow - 1 + K % 3
        inside = pm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        pix = ((ih * W + iw) * C)[:, None] + c2
        mask = inside[:, None] & cm2
        x = tl.load(x_ptr + (x_base + pix), mask=mask, other=0.0).to(tl.float32)
        h, fire, v = lif_step(x, v, tau, decay, v_th)
        fire = fire & mask
        if SAVE:
            if K // 3 >= 1:
                if K % 3 >= 1:  # the window's own 2x2 neurons: each neuron is stored by exactly one program
                    tl.store(h_ptr + (h_base + pix), h.to(h_ptr.dtype.element_ty), mask=mask)
        best = tl.where((best < 0) & fire, K, best)
        first = tl.where((first < 0) & mask, K, first)
        return v, best, first

    @triton.jit
    def _lif_pool_fwd_kernel(
        x_ptr, out_ptr, h_ptr, arg_ptr, P, C, H, W, OH, OW, x_step, n_in, n_out, steps, tau, decay, v_th,
        SAVE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        p, pm, c2, cm2, n, oh, ow = _tile(P, C, OH, OW, BLOCK_P, BLOCK_C)
        img = n * H * W * C  # [BLOCK_P] start of each window's image in one step
        zero = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        v0 = zero
        v1 = zero
        v2 = zero
        v3 = zero
        v4 = zero
        v5 = zero
        v6 = zero
        v7 = zero
        v8 = zero
        for step in range(steps):
            t = tl.cast(step, tl.int64)  # t * n_in may pass 2**31
            xb = (t * x_step + img)[:, None]
            hb = (t * n_in + img)[:, None]
            best = tl.full([BLOCK_P, BLOCK_C], -1, tl.int32)  # first position that fired
            first = tl.full([BLOCK_P, BLOCK_C], -1, tl.int32)  # first position inside the image
            v0, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v0, best, first,
                                     tau, decay, v_th, 0, SAVE)
            v1, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v1, best, first,
                                     tau, decay, v_th, 1, SAVE)
            v2, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v2, best, first,
                                     tau, decay, v_th, 2, SAVE)
            v3, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v3, best, first,
                                     tau, decay, v_th, 3, SAVE)
            v4, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v4, best, first,
                                     tau, decay, v_th, 4, SAVE)
            v5, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v5, best, first,
                                     tau, decay, v_th, 5, SAVE)
            v6, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v6, best, first,
                                     tau, decay, v_th, 6, SAVE)
            v7, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v7, best, first,
                                     tau, decay, v_th, 7, SAVE)
            v8, best, first = _visit(x_ptr, h_ptr, xb, hb, oh, ow, pm, c2, cm2, H, W, C, v8, best, first,
                                     tau, decay, v_th, 8, SAVE)
            out_off = t * n_out + (p * C)[:, None] + c2
            omask = pm[:, None] & cm2
            tl.store(out_ptr + out_off, (best >= 0).to(out_ptr.dtype.element_ty), mask=omask)
            if SAVE:
                tl.store(arg_ptr + out_off, tl.where(best >= 0, best, first).to(tl.int8), mask=omask)

    @triton.jit
    def _route(arg_ptr, g_ptr, out_base, oh, ow, code, ok, OW, C, c2, cm2):
        """Gradient a neuron receives from one window: the window's, if the neuron is its first maximum."""
        off = (out_base + (oh * OW + ow) * C)[:, None] + c2
        mask = ok[:, None] & cm2
        a = tl.load(arg_ptr + off, mask=mask, other=-1).to(tl.int32)
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float32)
        return tl.where(a == code[:, None], g, 0.0)

    @triton.jit
    def _lif_pool_bwd_kernel(
        g_ptr, arg_ptr, h_ptr, dx_ptr, R, C, H, W, OH, OW, n_in, n_out, steps, inv_tau, decay, v_th, alpha,
        THROUGH_TIME: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        # a tile of pixels (n, ih, iw) x channels: the index arithmetic is per pixel, not per neuron
        r, rm, c2, cm2, n, ih, iw = _tile(R, C, H, W, BLOCK_R, BLOCK_C)
        mask = rm[:, None] & cm2
        # windows holding the pixel: an even row (column) is the middle of one window; an odd one is the
        # last row of window (i-1)/2 and the first of window (i+1)/2, which may lie past the edge
        odd_h = (ih % 2) == 1
        odd_w = (iw % 2) == 1
        oh_a = ih // 2
        ow_a = iw // 2
        row_a = tl.where(odd_h, 2, 1)
        col_a = tl.where(odd_w, 2, 1)
        oh_b = (ih + 1) // 2
        ow_b = (iw + 1) // 2
        has_b = rm & odd_h & (oh_b < OH)
        has_bw = rm & odd_w & (ow_b < OW)
        zero = tl.zeros_like(row_a)
        neuron = (r * C)[:, None] + c2
        carry = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)  # dL/dX_{t+1}, then dL/dX_t
        for i in range(steps):
            t = tl.cast(steps - 1 - i, tl.int64)
            ob = t * n_out + n * OH * OW * C
            gs = _route(arg_ptr, g_ptr, ob, oh_a, ow_a, 3 * row_a + col_a, rm, OW, C, c2, cm2)
            gs += _route(arg_ptr, g_ptr, ob, oh_a, ow_b, 3 * row_a, has_bw, OW, C, c2, cm2)
            gs += _route(arg_ptr, g_ptr, ob, oh_b, ow_a, col_a, has_b, OW, C, c2, cm2)
            gs += _route(arg_ptr, g_ptr, ob, oh_b, ow_b, zero, has_b & has_bw, OW, C, c2, cm2)
            h = tl.load(h_ptr + (t * n_in + neuron), mask=mask, other=0.0).to(tl.float32)
            carry = lif_input_grad(gs, h, carry, inv_tau, decay, v_th, alpha, THROUGH_TIME)
            tl.store(dx_ptr + (t * n_in + neuron), carry.to(dx_ptr.dtype.element_ty), mask=mask)


def available(x: Tensor) -> bool:
    """Whether ``x [T, N, C, H, W]`` can take the fused LIF + max-pool kernels (see the module doc)."""
    return (
        x.dim() == 5
        and os.environ.get("SCMRL_LIF_POOL_TRITON", "1") != "0"
        and lif_triton.available(x)
        and passes_self_check(
            "LIF + max-pool", x.device, _kernels_both_modes, _apart_both_modes, _sample, "SCMRL_LIF_POOL_TRITON"
        )
    )


def _nhwc(x: Tensor) -> tuple[Tensor, int]:
    """``x [T, N, C, H, W]`` as a ``[T, N, H, W, C]`` view with dense steps and its time stride (0 for
    an input expanded over T, read in place); copied only when no such view exists."""
    xp, x_step, order = lif_triton._to_dense(x)
    if order == [0, 2, 3, 1]:  # one step's dims in N, H, W, C order
        return xp, x_step
    xp = x.permute(0, 1, 3, 4, 2).contiguous()
    return xp, xp[0].numel()


def _block_c(chans: int) -> int:
    """Channels per program (contiguous in memory); the rest of the tile is windows or pixels."""
    return max(4, min(32, triton.next_power_of_2(chans)))


def _pooled(side: int) -> int:
    return (side - 1) // 2 + 1


def _forward(x: Tensor, tau: float, v_threshold: float, save: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(pooled spikes [T, N, OH, OW, C], H [T, N, H, W, C] or None, first-max codes or None)."""
    xp, x_step = _nhwc(x)
    steps, batch, height, width, chans = xp.shape
    oh, ow = _pooled(height), _pooled(width)
    out = torch.empty((steps, batch, oh, ow, chans), dtype=x.dtype, device=x.device)
    h = torch.empty(xp.shape, dtype=x.dtype, device=x.device) if save else None
    arg = torch.empty(out.shape, dtype=torch.int8, device=x.device) if save else None
    windows = batch * oh * ow
    if out.numel():
        block_c = _block_c(chans)
        block_p = _TILE // block_c
        grid = (triton.cdiv(windows, block_p), triton.cdiv(chans, block_c))
        _lif_pool_fwd_kernel[grid](
            xp, out, h if save else out, arg if save else out, windows, chans, height, width, oh, ow,
            x_step, xp[0].numel(), out[0].numel(), steps, tau, 1.0 - 1.0 / tau, v_threshold,
            SAVE=save, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=_WARPS,
        )
    return out, h, arg


class _LIFMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, tau: float, v_threshold: float, alpha: float, detach_membrane: bool
    ) -> Tensor:
        out, h, arg = _forward(x, tau, v_threshold, save=True)
        ctx.save_for_backward(h, arg)
        ctx.cfg = (tau, v_threshold, alpha, detach_membrane)
        return out.permute(0, 1, 4, 2, 3)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        h, arg = ctx.saved_tensors
        tau, v_threshold, alpha, detach_membrane = ctx.cfg
        g = grad_out.permute(0, 1, 3, 4, 2).contiguous()  # the layout of the codes
        dx = torch.empty_like(h)
        steps, _, height, width, chans = h.shape
        if h.numel():
            pixels = h.shape[1] * height * width
            block_c = _block_c(chans)
            block_r = _TILE // block_c
            _lif_pool_bwd_kernel[(triton.cdiv(pixels, block_r), triton.cdiv(chans, block_c))](
                g, arg, h, dx, pixels, chans, height, width, arg.shape[2], arg.shape[3], h[0].numel(),
                arg[0].numel(), steps, 1.0 / tau, 1.0 - 1.0 / tau, v_threshold, alpha,
                THROUGH_TIME=not detach_membrane, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=_WARPS,
            )
        return dx.permute(0, 1, 4, 2, 3), None, None, None, None


def lif_maxpool(
    x: Tensor, tau: float, v_threshold: float, surrogate_alpha: float, detach_membrane: bool
) -> Tensor:
    """Pooled spikes ``[T, N, C, OH, OW]`` (channels-last steps) of LIF(x) under MaxPool2d(3, 2, 1);
    call only where :func:`available` is true."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _forward(x, tau, v_threshold, save=False)[0].permute(0, 1, 4, 2, 3)
    return _LIFMaxPool.apply(x, float(tau), float(v_threshold), float(surrogate_alpha), bool(detach_membrane))


def _sample(device: torch.device) -> Tensor:
    """A small channels-last [T, N, C, H, W] input with odd and even sides, spikes and spike-free windows."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 7, 6, generator=gen) * 1.5 + 0.7
    return x.to(device).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 2))


def _kernels_both_modes(x: Tensor) -> Tensor:
    return torch.cat([_LIFMaxPool.apply(x, 2.0, 1.0, 4.0, detach) for detach in (True, False)])


def _apart_both_modes(x: Tensor) -> Tensor:
    pooled = [F.max_pool2d(lif_loop(x, 2.0, 1.0, 4.0, detach).flatten(0, 1), 3, 2, 1) for detach in (True, False)]
    return torch.cat([p.unflatten(0, x.shape[:2]) for p in pooled])
