"""The batch norm -> LIF [-> max-pool] node that recomputes the membrane in backward gives exactly the values,
gradients and running statistics of the three modules in sequence, and keeps less for backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from scmrl.model import bn_lif
from scmrl.model.lif import LIF


def _sequential(bn: nn.Module, lif: LIF, x: torch.Tensor, steps: int, repeated: bool, pool: bool) -> torch.Tensor:
    y = bn(x)
    y = y.expand(steps, *y.shape) if repeated else y.unflatten(0, (steps, -1))
    s = lif(y)
    return nn.functional.max_pool2d(s.flatten(0, 1), 3, 2, 1) if pool else s


CASES = [  # dims, repeated, pool, detach_membrane, momentum
    (2, False, True, True, 0.1),
    (2, True, True, True, 0.1),
    (2, False, False, False, None),
    (2, True, False, True, 0.1),
    (1, False, False, True, None),
    (1, False, False, False, 0.1),
]


@pytest.mark.parametrize("dims,repeated,pool,detach,momentum", CASES)
def test_same_values_gradients_and_statistics(dims: int, repeated: bool, pool: bool, detach: bool,
                                              momentum: float | None) -> None:
    g = torch.Generator().manual_seed(dims * 16 + repeated * 8 + pool * 4 + detach * 2 + (momentum is None))
    steps, batch, chans = 3, 2, 5
    n = batch if repeated else steps * batch
    shape = (n, chans, 9, 7) if dims == 2 else (n, chans, 11)
    base = torch.randn(*shape, generator=g) * 1.5 + 0.3
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(chans, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(1.0 + torch.rand(chans, generator=g))
        bn.bias.copy_(0.5 * torch.randn(chans, generator=g))
    lif = LIF(detach_membrane=detach)
    outs = []
    for fused in (False, True):
        m = copy.deepcopy(bn).train()
        x = base.clone().requires_grad_(True)
        assert bn_lif.applies(m, lif, x)
        for _ in range(2):  # twice: the running statistics' update rule after the first batch too
            out = (bn_lif.bn_lif(m, lif, x, steps, repeated, pool) if fused
                   else _sequential(m, lif, x, steps, repeated, pool))
        weight = torch.linspace(-1, 2, out.numel()).reshape(out.shape)
        (out * weight).sum().backward()
        outs.append((out.detach(), x.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var,
                     m.num_batches_tracked))
    ref, got = outs
    assert 0.05 < ref[0].mean() < 0.95  # spikes and silences both present
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_keeps_neither_membrane_nor_spikes_for_backward() -> None:
    """Saved for backward: the batch-norm input, its statistics and parameters and the int32 pool index;
    in sequence also H (T times the input when it is repeated) and the float spikes."""
    steps, batch = 4, 2
    bn, lif = nn.BatchNorm2d(8).train(), LIF()
    x = torch.randn(batch, 8, 16, 16, requires_grad=True)

    def saved_bytes(fn) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(seen.values())

    apart = saved_bytes(lambda: _sequential(bn, lif, x, steps, True, True))
    fused = saved_bytes(lambda: bn_lif.bn_lif(bn, lif, x, steps, True, True))
    act = x.numel() * 4
    assert fused < act + steps * act // 4 + 1024  # x, and an int32 index per pooled output (a quarter of x)
    assert apart > act + 2 * steps * act  # x, H and the spikes over T steps, int64 index
