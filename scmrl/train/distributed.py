"""Single process or DDP under torchrun (one or many nodes).

`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
NCCL when training on CUDA (each process pinned to cuda:LOCAL_RANK), gloo on CPU. Metrics are reduced by
summing counts (`all_reduce_sum`), never by averaging per-rank ratios. Only rank 0 writes files.

A process that cannot start (its node's shards differ, a missing file) makes every process stop with its
error (`agree_to_start`); one that ends mid-run (killed, a read error) leaves the others' next collective
failing at once, which `peer_lost` turns into an error line. One that hangs without ending stops the others
after the collective timeout (`TIMEOUT_S`, torch's default of 30 minutes: a slow shard read on one node
must not end the run).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from avdata.errors import AvdataError

log = logging.getLogger("scmrl.train.distributed")

TIMEOUT_S = 1800.0  # seconds a collective waits for the other processes (torch's default)

__all__ = ["TIMEOUT_S", "DistContext", "agree_to_start", "peer_lost", "resolve_device", "init_distributed",
           "wrap_ddp", "unwrap", "all_reduce_sum", "gather_sums", "broadcast_object", "sync_buffers", "sync_optimizer",
           "barrier", "cleanup"]


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process created the process group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a torch.device (cuda: this process's local GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AvdataError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(name)
    if name != "cpu":
        raise AvdataError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = TIMEOUT_S) -> DistContext:
    """Set up this process: from torchrun's environment when WORLD_SIZE > 1, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
        owns = True
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)
    log.debug("rank %d of %d on %s (%s)", ctx.rank, ctx.world, dev, dist.get_backend())
    return ctx


def _unused_parameters(model: nn.Module, probe) -> bool:
    """Whether some trainable parameter gets no gradient from one probe forward/backward."""
    if probe is None:
        return False
    saved = [b.detach().clone() for b in model.buffers()]  # the probe must not move BN statistics
    model.zero_grad(set_to_none=True)
    out = probe(model)
    out.backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for b, s in zip(model.buffers(), saved):
            b.copy_(s)
    return unused


def wrap_ddp(model: nn.Module, ctx: DistContext, probe=None) -> nn.Module:
    """DistributedDataParallel on this process's device (no-op for a single process).

    `probe(model) -> scalar loss` (optional) runs once to find out whether some parameters get no
    gradient (then DDP is told to look for unused parameters every step)."""
    if not ctx.distributed:
        return model
    find_unused = _unused_parameters(model, probe)
    if find_unused:
        log.info("some parameters get no gradient: DDP runs with find_unused_parameters=True")
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None,
                                               find_unused_parameters=find_unused)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place sum over ranks (counts, sums of losses, confusion matrices)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_sums(sums: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Sum dicts of floats over ranks (a rank with no batch has an empty dict)."""
    if not ctx.distributed:
        return dict(sums)
    parts: list[dict[str, float]] = [{} for _ in range(ctx.world)]
    dist.all_gather_object(parts, sums)
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + v
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, e.g. before evaluation."""
    if ctx.distributed:
        for b in unwrap(model).buffers():
            dist.broadcast(b.data, src=0)


def sync_optimizer(opt: torch.optim.Optimizer, ctx: DistContext, src: int) -> None:
    """Copy rank `src`'s optimiser state (AdamW's step counts and moments) to every rank, after an epoch in
    which some ranks ran out of batches before `src`: `Join` then copies `src`'s weights to them
    (DistributedDataParallel's final sync), but not the state of their optimisers, which missed the last
    steps; without this the replicas' updates differ from the next step on, and a resumed run (every
    rank loading rank 0's state) differs from an uninterrupted one."""
    if not ctx.distributed:
        return
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if not state:  # a rank that has not stepped yet: AdamW's initial state, overwritten below
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    moved = value.to(ctx.device)  # NCCL sends device tensors only (AdamW keeps step on the host)
                    dist.broadcast(moved, src=src)
                    if moved is not value:
                        value.copy_(moved)


def agree_to_start(error: AvdataError | None, ctx: DistContext) -> None:
    """Raise on every rank when any rank could not set up (`error`): alone it would end while the others
    wait for it in their first collective (a node whose local shards differ), and they would report only
    that a peer was lost. Each rank raises its own error, or the first failing rank's, naming its host."""
    if not ctx.distributed:
        if error is not None:
            raise error
        return
    parts: list[str | None] = [None] * ctx.world
    dist.all_gather_object(parts, None if error is None else f"{socket.gethostname()}: {error}")
    if error is not None:
        raise error
    for rank, text in enumerate(parts):
        if text is not None:
            raise AvdataError(f"process {rank} of {ctx.world} cannot start, on {text}")


#: what gloo's and NCCL's errors say when the other end of a collective is gone or silent
_BACKEND_MARKS = ("/gloo/", "NCCL", "ProcessGroup", "Connection reset by peer", "Connection closed by peer",
                  "Broken pipe")


def peer_lost(exc: BaseException, ctx: DistContext) -> AvdataError | None:
    """The error line for a collective that failed because another process ended or went silent (killed by
    the out-of-memory killer, a read error, a lost node); None for any other error."""
    if not ctx.distributed or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not isinstance(exc, dist.DistError) and not any(mark in text for mark in _BACKEND_MARKS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0].rstrip(".")  # gloo's source location, its advice
    return AvdataError(f"process {ctx.rank} of {ctx.world} lost the others: another process of the run ended or "
                       f"stopped answering ({first[:300]}); the output of that process (torchrun's summary names it) "
                       "says why; fix that and run the same command again, with --resume once --out holds "
                       "checkpoint.pt")


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
