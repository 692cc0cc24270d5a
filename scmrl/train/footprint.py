"""How much memory and time a training run will take, measured before it starts, and the batch that fits.

A probe, not a formula: a copy of the model takes a forward and backward pass on random inputs of the
run's shapes at two batches (on CPU 1 and 2; on CUDA half the run's batch and the batch itself),
and the peak memory of each is read (CPU: the process's peak resident size, VmHWM, reset before each
pass through /proc/self/clear_refs; CUDA: `torch.cuda.max_memory_allocated`). The difference is what a
sample adds (the activations kept for the backward pass: T time steps of every layer's spikes and
membranes), the rest what a step takes whatever its batch. The estimate of the whole process's peak:

    now (torch, the model, the readers) + 3 x parameters (gradients, AdamW's two moments)
    + the step's fixed part + per sample x batch
    + on CPU the shuffle buffer of decoded samples (in this process or its loader workers)

The time per sample is that of a third pass (at the larger batch: the first at a shape sets up kernels);
on CPU a step's time grows linearly with its batch. Nothing of
the probe reaches the run: it works on a deep copy of the model (batch-norm statistics untouched) inside
`torch.random.fork_rng`.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avdata.errors import AvdataError
from scmrl.model.config import ModelConfig
from scmrl.model.losses import compute_loss
from scmrl.train.evaluate import autocast_for

__all__ = ["Footprint", "probe_footprint", "available_bytes", "resident_bytes", "choose_batch", "fit_batch",
           "BATCH_CHOICES"]

#: The batches tried, largest first, when --batch-size is not given (128: the recipe's, docs/reference.md §2).
BATCH_CHOICES = (128, 64, 32, 16, 8, 4, 2, 1)
#: The share of the available memory a batch chosen for the user may take (the estimate is not exact).
AUTO_SHARE = 0.8
_GIB = float(1 << 30)


@dataclass
class Footprint:
    """One probe's measurements; `peak_bytes(batch)` is the estimate of the process's peak at that batch."""

    device: str
    probe_batch: int
    now_bytes: int  # the process (CPU) or the allocated GPU memory before training
    state_bytes: int  # gradients + AdamW's two moments + what the first step allocates whatever the batch
    per_sample_bytes: int  # what a step's peak grows by per sample (activations kept for backward, mostly)
    buffer_bytes: int  # decoded samples held for shuffling (host memory)
    seconds_per_sample: float

    def peak_bytes(self, batch: int) -> int:
        host = self.buffer_bytes if self.device == "cpu" else 0
        return self.now_bytes + self.state_bytes + host + self.per_sample_bytes * batch

    def growth_bytes(self, batch: int) -> int:
        """What training adds to the memory in use now."""
        return self.peak_bytes(batch) - self.now_bytes

    def describe(self, batch: int, available: int | None, train_samples: int) -> str:
        """The line printed before training."""
        room = f"{available / _GIB:.1f} GiB available" if available is not None else "available memory unknown"
        epoch = self.seconds_per_sample * train_samples
        return (f"estimate from a probe (forward and backward passes up to batch {self.probe_batch} on {self.device}): "
                f"peak memory about "
                f"{self.peak_bytes(batch) / _GIB:.2f} GiB at batch {batch} ({room}); about {_duration(epoch)} per "
                f"epoch of {train_samples:,} training samples ({1 / max(self.seconds_per_sample, 1e-9):.1f} "
                "samples/s, evaluation not counted)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere its peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def available_bytes(device: torch.device) -> int | None:
    """Memory this run may still take: the GPU's free memory; on CPU the kernel's MemAvailable, or less
    where a cgroup (a container, a Slurm job) limits the process. None when it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, cur = Path(limit).read_text().strip(), Path(used).read_text().strip()
        except OSError:
            continue
        if cap.isdigit() and cur.isdigit() and int(cap) < (1 << 60):
            found.append(max(0, int(cap) - int(cur)))
        break
    return min(found) if found else None


def _inputs(mcfg: ModelConfig, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = mcfg.time_steps
    a = torch.randn(t, batch, mcfg.audio_channels, mcfg.audio_size, mcfg.audio_size, device=device)
    v = torch.randn(t, batch, mcfg.visual_channels, mcfg.visual_size, mcfg.visual_size, device=device)
    return a, v, torch.arange(batch, device=device) % mcfg.num_classes


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets VmHWM, the peak resident size, to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # _peak then reads the resident size after the step (glibc keeps the freed heap: about the peak)


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return resident_bytes()


def _trim_heap() -> None:
    """Give the heap's free memory back to the kernel (glibc), so that the probe's peaks are its own
    allocations, not reuse of what an earlier run in this process freed (scmrl.train.cpu_memory keeps it)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def probe_footprint(model: torch.nn.Module, mcfg: ModelConfig, device: torch.device, amp: bool, batch: int,
                    buffered_samples: int) -> Footprint:
    """Measure `model` (as built for the run, before training) at the run's shapes; `buffered_samples`:
    how many decoded samples the loaders hold for shuffling."""
    small, large = (1, 2) if device.type == "cpu" else (max(1, batch // 2), batch)
    if device.type == "cpu":
        _trim_heap()
    now = torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes()
    state = 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    twin = copy.deepcopy(model).train()
    grew: dict[int, int] = {}
    seconds = 0.0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for probe_batch in (small, large, large):  # the last one timed (the first at a shape sets up kernels)
                a, v, labels = _inputs(mcfg, probe_batch, device)
                _reset_peak(device)
                t0 = time.perf_counter()
                with autocast_for(device, amp):
                    out = twin(a, v)
                compute_loss(mcfg, out, labels)[0].backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - t0
                grew.setdefault(probe_batch, _peak(device) - now)  # the first pass's: the later one reuses its heap
                del out, a, v
                twin.zero_grad(set_to_none=True)
    except torch.cuda.OutOfMemoryError:
        raise AvdataError(f"batch {batch} does not fit in the memory of {device} (out of memory in a probe "
                          "before training); lower --batch-size, --embed-dim or --image-size") from None
    finally:
        del twin
        if device.type == "cuda":
            torch.cuda.empty_cache()  # hand the probe's cached blocks back, so the free memory read next counts them
    per_sample = max(0, (grew[large] - grew[small]) // max(1, large - small))
    fixed = max(0, grew[small] - per_sample * small)  # the first step's own allocations (kernels, workspaces)
    # the loaders' decoded samples: one time step of both inputs, float32 (the shards' frames decoded)
    sample_bytes = 4 * (mcfg.audio_channels * mcfg.audio_size ** 2 + mcfg.visual_channels * mcfg.visual_size ** 2)
    return Footprint(device=device.type, probe_batch=large, now_bytes=int(now), state_bytes=state + fixed,
                     per_sample_bytes=per_sample, buffer_bytes=buffered_samples * sample_bytes,
                     seconds_per_sample=seconds / large)


def choose_batch(fp: Footprint, requested: int | None, available: int | None, processes: int = 1,
                 samples: int | None = None) -> int:
    """The batch to train with: `requested` when it fits (else an AvdataError naming one that does);
    with None, 128 on GPU and on CPU the largest of BATCH_CHOICES that fits, and never more than the
    `samples` a process trains on an epoch (a batch larger than the split would leave no full batch to
    train). `processes`: training processes sharing this machine's memory (CPU DDP)."""
    choices = [b for b in BATCH_CHOICES if requested is not None or samples is None or b <= max(1, samples)]
    if available is None:
        return requested or choices[0]
    room = available // max(1, processes) if fp.device == "cpu" else available
    # a chosen batch keeps a margin for the estimate's error; a requested one is refused only beyond the room
    fits = [b for b in BATCH_CHOICES if fp.growth_bytes(b) <= AUTO_SHARE * room]
    if requested is None and fp.device == "cpu":
        if fits:
            return min(fits[0], choices[0])
        requested = 1
    requested = requested or choices[0]
    if fp.growth_bytes(requested) <= room:
        return requested
    have = f"{room / _GIB:.1f} GiB are available" + (f" to each of {processes} processes" if processes > 1 else "")
    if fits:
        fix = (f"pass --batch-size {fits[0]} (peak about {fp.peak_bytes(fits[0]) / _GIB:.1f} GiB)"
               + (" or train on a GPU" if fp.device == "cpu" else ""))
    else:
        fix = ("even batch 1 does not fit: lower --embed-dim or --image-size, or use a machine with more memory"
               + (" (or a GPU)" if fp.device == "cpu" else ""))
    raise AvdataError(f"training at batch {requested} on {fp.device} would take about "
                      f"{fp.growth_bytes(requested) / _GIB:.1f} GiB more memory (peak about "
                      f"{fp.peak_bytes(requested) / _GIB:.1f} GiB; a probe measured "
                      f"{fp.per_sample_bytes / 2 ** 20:.0f} MiB per sample), but only {have}; {fix}")


def fit_batch(model: torch.nn.Module, mcfg: ModelConfig, device: torch.device, amp: bool, requested: int | None,
              train_samples: int, world: int, workers: int, shuffle_buffer: int | None) -> tuple[int, str]:
    """Probe the model, choose (or check) the batch; the batch and the estimate's line for the log."""
    from scmrl.data.batching import default_shuffle_buffer

    per_rank = max(1, train_samples // max(1, world))
    buffer = shuffle_buffer or default_shuffle_buffer(per_rank)
    fp = probe_footprint(model, mcfg, device, amp, requested or BATCH_CHOICES[0],
                         min(per_rank, buffer * max(1, workers)))
    available = available_bytes(device)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
    batch = choose_batch(fp, requested, available, processes, per_rank)
    line = fp.describe(batch, available, per_rank)
    if requested is None and batch < BATCH_CHOICES[0]:
        if batch == next(b for b in BATCH_CHOICES if b <= per_rank):  # the split's size set it
            line += f"; --batch-size {batch}: the largest of 128, 64, ... within the {per_rank} training samples"
        else:
            line += f"; --batch-size {batch}: the largest that fits (128, the recipe's, does not)"
    return batch, line
