"""Batch norm -> LIF [-> MaxPool2d(3, 2, 1)] as one autograd Function that recomputes the membrane in backward.

Apart, batch norm saves its input X, the LIF its membrane H (as big as X, or T times bigger when a static
input's first stage is expanded over T) and the max-pool its input spikes (as big as H) plus an int64 index
per output. Here one node saves X, the batch statistics and the pool index (as int32); backward recomputes
the normalised Y and H from X with the same kernels in the same order as forward (so bit for bit the same
H) before the LIF, pool and batch-norm backward. Forward values and gradients are exactly those of
``BatchNorm -> LIF -> MaxPool2d`` in sequence; the price is recomputing one batch norm and the membrane in
backward. On CPU this takes the S-CMRL step's peak memory down by about a fifth (BENCHMARKS.md).

Used in training on CPU by the fused LIF (scmrl.model.embedding and scmrl.model.attention); CUDA keeps its
Triton kernels, and inference and the ``loop`` LIF run the modules one after another.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scmrl.model import lif_compiled
from scmrl.model.lif import LIF, empty_steps, lif_input_grad, membrane

__all__ = ["applies", "bn_lif"]

_POOL = ([3, 3], [2, 2], [1, 1], [1, 1], False)  # kernel, stride, padding, dilation, ceil_mode


def _normalise(x: Tensor, weight: Tensor, bias: Tensor, running: tuple, factor: float, eps: float):
    """Training-mode batch norm as nn.BatchNorm runs it: (Y, batch mean, batch 1/std)."""
    return torch.ops.aten.native_batch_norm(x, weight, bias, *running, True, factor, eps)


def _spread(y: Tensor, steps: int, repeated: bool) -> Tensor:
    return y.expand(steps, *y.shape) if repeated else y.unflatten(0, (steps, -1))


class _BNLIF(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, bn: tuple, shape: tuple, lif: tuple
    ) -> Tensor:
        running_mean, running_var, factor, eps = bn
        steps, repeated, pool = shape
        tau, v_threshold = lif[:2]
        y, mean, invstd = _normalise(x, weight, bias, (running_mean, running_var), factor, eps)
        z = _spread(y, steps, repeated)
        spikes = lif_compiled.spikes(z, tau, v_threshold) if lif[3] else None
        if spikes is None:
            spikes = membrane(z, tau, v_threshold).ge_(v_threshold)  # H is not kept: its buffer becomes the spikes
        del y, z
        index = None
        if pool:
            out, index = torch.ops.aten.max_pool2d_with_indices(spikes.flatten(0, 1), *_POOL)
            if spikes[0, 0, 0].numel() < 2**31:  # positions within a plane: int32 holds them in half the bytes
                index = index.to(torch.int32)
        else:
            out = spikes
        ctx.save_for_backward(x, weight, bias, mean, invstd, index)
        ctx.cfg = (eps, shape, lif)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        x, weight, bias, mean, invstd, index = ctx.saved_tensors
        lif: tuple[float, float, float, bool]  # tau, v_threshold, surrogate alpha, detach_membrane
        eps, (steps, repeated, pool), lif = ctx.cfg
        y = _normalise(x, weight, bias, (None, None), 0.0, eps)[0]  # the same Y as forward, bit for bit
        z = _spread(y, steps, repeated)
        if pool:
            # the pool's backward reads only the shape and layout of its input: an unfilled stand-in will do
            grad = torch.ops.aten.max_pool2d_with_indices_backward(grad, empty_steps(z).flatten(0, 1), *_POOL,
                                                                   index.long())
        grad = grad.view(z.shape)
        g = lif_compiled.input_grad(z, grad, *lif[:3]) if lif[3] else None
        if g is None:
            g = lif_input_grad(membrane(z, lif[0], lif[1]), grad, *lif, reuse_h=True)
        del y, z, grad
        g = g.sum(0) if repeated else g.flatten(0, 1)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, mean, invstd, True, eps, list(ctx.needs_input_grad[:3]))
        return gx, gw, gb, None, None, None


def applies(bn: nn.Module, lif: LIF, x: Tensor) -> bool:
    """Whether :func:`bn_lif` stands in for ``bn`` then ``lif`` on ``x``: training with autograd on CPU (CUDA
    keeps its kernels), the fused LIF, a plain batch norm that tracks running statistics with an affine map."""
    return (
        lif.impl == "fused"
        and x.device.type == "cpu"
        and type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d)  # not SyncBatchNorm: its statistics span processes
        and bn.training
        and bn.track_running_stats
        and bn.affine
        and torch.is_grad_enabled()
        and (x.requires_grad or bn.weight.requires_grad)
    )


def bn_lif(bn: nn.modules.batchnorm._BatchNorm, lif: LIF, x: Tensor, steps: int, repeated: bool = False,
           pool: bool = False) -> Tensor:
    """``LIF(BN(x))`` on time-folded ``x [T*B, C, ...]`` (or, with ``repeated``, the one ``[B, C, ...]`` input of
    every step): spikes ``[T, B, C, ...]``, or with ``pool`` ``MaxPool2d(3, 2, 1)`` of them as ``[T*B, C, ...]``."""
    assert bn.num_batches_tracked is not None and bn.running_mean is not None
    bn.num_batches_tracked.add_(1)  # nn.BatchNorm's bookkeeping, then its momentum rule
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    running = (bn.running_mean, bn.running_var, factor, bn.eps)
    lif_cfg = (lif.tau, lif.v_threshold, lif.surrogate_alpha, lif.detach_membrane)
    return _BNLIF.apply(x, bn.weight, bn.bias, running, (steps, repeated, pool), lif_cfg)
