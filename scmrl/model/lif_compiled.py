"""The LIF's elementwise passes of CPU training compiled with ``torch.compile`` (``scmrl-train --compile``).

On CPU each eager LIF op is one pass over memory: the forward writes H for all steps, reads it back per step
for the reset, then compares it with the threshold; the backward recomputes H and applies the surrogate in
four more passes. Inductor turns the forward (membrane and spikes) and the backward (membrane and surrogate
gradient) into one loop each, reading the input once and writing one output. Used by
:mod:`scmrl.model.bn_lif` with a detached membrane (the reference setting) once :func:`enable` is called.

Spikes are the same as eager (the operations on each element are the same, in the same order); gradients
agree to float rounding (inductor's sigmoid is not PyTorch's kernel). Compiling needs a C++ compiler
(inductor's CPU backend) and takes a few seconds per layer shape in the first step; when it fails, the
eager path is used from then on, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["enable", "enabled", "spikes", "input_grad"]

log = logging.getLogger("scmrl.model.lif_compiled")

_state: dict[str, Any] = {"on": False, "fns": None}


def _spikes(x: Tensor, tau: float, v_threshold: float) -> Tensor:
    decay = 1.0 - 1.0 / tau
    h = x[0] / tau
    out = [(h >= v_threshold).to(x.dtype)]
    for t in range(1, x.shape[0]):
        h = x[t] / tau + decay * torch.where(h < v_threshold, h, 0.0)
        out.append((h >= v_threshold).to(x.dtype))
    return torch.cat([s.unsqueeze(0) for s in out])


def _input_grad(x: Tensor, grad_s: Tensor, tau: float, v_threshold: float, alpha: float) -> Tensor:
    decay = 1.0 - 1.0 / tau
    out = []
    h = x[0] / tau
    for t in range(x.shape[0]):
        if t:
            h = x[t] / tau + decay * torch.where(h < v_threshold, h, 0.0)
        sig = torch.sigmoid(alpha * h - alpha * v_threshold)
        out.append((grad_s[t] * (sig * (1.0 - sig)) * (alpha / tau)).unsqueeze(0))
    return torch.cat(out)


def enable(on: bool = True) -> None:
    """Use (or stop using) the compiled passes in this process."""
    _state["on"] = bool(on)
    if on and _state["fns"] is None:
        import torch._dynamo.config as dynamo_config

        # one graph per layer shape: an S-CMRL has about ten, more than dynamo's default of eight
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
        _state["fns"] = (torch.compile(_spikes, dynamic=False), torch.compile(_input_grad, dynamic=False))


def enabled() -> bool:
    return bool(_state["on"])


def _call(index: int, *args: Any) -> Tensor | None:
    if not _state["on"]:
        return None
    fn: Callable[..., Tensor] = _state["fns"][index]
    try:
        return fn(*args)
    except Exception as exc:  # no compiler, or one inductor cannot use: eager from now on
        log.warning("torch.compile of the LIF failed (%s: %s); continuing without it",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        _state["on"] = False
        return None


def spikes(x: Tensor, tau: float, v_threshold: float) -> Tensor | None:
    """Spikes ``[T, ...]`` of the LIF on ``x [T, ...]`` (membrane reset at every call), or None when the
    compiled path is off or has failed."""
    return _call(0, x, tau, v_threshold)


def input_grad(x: Tensor, grad_s: Tensor, tau: float, v_threshold: float, alpha: float) -> Tensor | None:
    """dL/dX of the LIF with a detached membrane from its input ``x`` and the spikes' gradient, or None."""
    return _call(1, x, grad_s, tau, v_threshold, alpha)
