"""Benchmark the fused LIF against the plain autograd loop, alone and inside the full S-CMRL model.

Two measurements, each implementation in its own fresh subprocess (so peak memory is not shared:
``torch.cuda.max_memory_allocated`` on GPU, the process's max RSS on CPU):

  (1) micro: one LIF layer, forward + backward, on a [T=4, 128, 256, 64] float32 tensor, with the
      membrane detached between steps (reference) and with gradient through time (BPTT);
  (2) model: one training step (forward + loss + backward + AdamW) of the reference CREMA-D S-CMRL
      configuration (C=256, 16 heads, 128x128 audio and visual inputs, T=4), batch 8 on CPU and 128 on
      GPU by default; bf16 autocast on CUDA as the trainer (``--no-amp`` for float32).

Implementations: ``fused`` (the default: on CUDA the Triton kernels of scmrl/model/lif_triton.py where Triton
is installed, and in the SPS stages the LIF + max-pool kernels of scmrl/model/lif_pool_triton.py),
``fused-apart`` (GPU only: the Triton LIF kernels with PyTorch's max-pool after them), ``fused-torch``
(GPU only: the PyTorch fused Function, Triton switched off) and ``loop`` (the plain autograd loop).
Target: fused >= 2x the loop.  Prints a markdown table.

    python benchmarks/lif_bench.py                      # CPU, batch 8
    python benchmarks/lif_bench.py --device cuda        # GPU, batch 128
    python benchmarks/lif_bench.py --default-heap       # CPU: without the trainer's heap settings

On CPU the workers use the heap settings scmrl-train applies (scmrl/train/cpu_memory.py: glibc keeps large
freed blocks instead of unmapping them and page-faulting the next ones in); --default-heap measures
without them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IMPLS = ("fused", "loop")
GPU_IMPLS = ("fused", "fused-apart", "fused-torch", "loop")
MICRO_SHAPE = (4, 128, 256, 64)


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _peak_memory_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kib / 1024 if sys.platform != "darwin" else rss_kib / 2**20


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _worker_micro(impl: str, device: str, steps: int, warmup: int, detach: bool) -> dict:
    import torch

    from scmrl.model.lif import LIF

    torch.manual_seed(0)
    lif = LIF(impl=impl, detach_membrane=detach)
    x = (torch.randn(MICRO_SHAPE, device=device) + 0.5).requires_grad_(True)
    grad = torch.randn(MICRO_SHAPE, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    times = []
    for i in range(warmup + steps):
        x.grad = None
        _sync(device)
        t0 = time.perf_counter()
        lif(x).backward(grad)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = _peak_memory_mib(device)
    return {"ms": statistics.median(times) * 1e3, "ms_min": min(times) * 1e3, "peak_mib": peak - base}


def _worker_model(impl: str, device: str, steps: int, warmup: int, batch: int, detach: bool, amp: bool) -> dict:
    import torch

    from scmrl.model.config import ModelConfig
    from scmrl.train.evaluate import autocast_for
    from scmrl.model.losses import compute_loss
    from scmrl.model.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=6, lif=impl, detach_membrane=detach)
    net = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    t = cfg.time_steps
    audio = torch.randn(1, batch, 1, 128, 128, device=device).expand(t, -1, -1, -1, -1)
    visual = torch.randn(1, batch, 3, 128, 128, device=device).expand(t, -1, -1, -1, -1)
    labels = torch.arange(batch, device=device) % cfg.num_classes
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        net.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        with autocast_for(torch.device(device), amp):
            loss, _ = compute_loss(cfg, net(audio, visual), labels)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"ms": med * 1e3, "samples_s": batch / med, "peak_mib": _peak_memory_mib(device),
            "loss": float(loss.detach())}


def _spawn(kind: str, impl: str, args: argparse.Namespace, bptt: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if impl == "fused-torch":
        impl = "fused"
        env["SCMRL_LIF_TRITON"] = "0"
    elif impl == "fused-apart":
        impl = "fused"
        env["SCMRL_LIF_POOL_TRITON"] = "0"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--impl", impl,
        "--device", args.device, "--batch", str(args.batch), "--steps", str(args.steps),
        "--micro-steps", str(args.micro_steps), "--warmup", str(args.warmup),
    ]
    if bptt:
        cmd.append("--bptt")
    if not args.amp:
        cmd.append("--no-amp")
    if args.default_heap:
        cmd.append("--default-heap")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:  # e.g. out of memory: report it in the table and go on with the others
        print(f"worker {kind}/{impl} failed:\n{res.stderr[-1500:]}", file=sys.stderr)
        return {"ms": float("nan"), "ms_min": float("nan"), "samples_s": float("nan"), "peak_mib": float("nan")}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    ap.add_argument("--batch", type=int, default=None, help="model batch (default 8 on CPU, 128 on GPU)")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="float32 on CUDA (default: bf16 autocast)")
    ap.add_argument("--steps", type=int, default=None, help="timed model steps (default 5 CPU, 20 GPU)")
    ap.add_argument("--micro-steps", type=int, default=None, help="timed LIF steps (default 20 CPU, 100 GPU)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bptt", action="store_true", help="model run with gradient through time in the membrane")
    ap.add_argument("--default-heap", action="store_true",
                    help="CPU: leave glibc's heap settings as they are (scmrl-train raises its thresholds)")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--worker", choices=("micro", "model"), help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=GPU_IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.device = _resolve_device(args.device)
    gpu = args.device.startswith("cuda")
    args.batch = args.batch or (128 if gpu else 8)
    impls = GPU_IMPLS if gpu else IMPLS
    args.steps = args.steps or (20 if gpu else 5)
    args.micro_steps = args.micro_steps or (100 if gpu else 20)
    detach = not args.bptt

    if args.worker and args.device == "cpu" and not args.default_heap:
        from scmrl.train.cpu_memory import keep_freed_memory

        keep_freed_memory()
    if args.worker == "micro":
        print(json.dumps(_worker_micro(args.impl, args.device, args.micro_steps, args.warmup, detach)))
        return
    if args.worker == "model":
        print(json.dumps(_worker_model(args.impl, args.device, args.steps, args.warmup, args.batch, detach, args.amp)))
        return

    import torch

    dev_name = torch.cuda.get_device_name(args.device) if gpu else f"{platform.processor() or 'cpu'}"
    print(
        f"torch {torch.__version__}, device {args.device} ({dev_name}), threads {torch.get_num_threads()}, "
        f"model membrane {'BPTT' if args.bptt else 'detached (reference)'}"
        f"{', bf16 autocast' if gpu and args.amp else ', float32'}"
        f"{'' if gpu else ', default glibc heap' if args.default_heap else ', heap settings of scmrl-train'}\n"
    )
    mem = "peak GPU MiB" if gpu else "max RSS MiB"
    rows = []
    if not args.skip_micro:
        shape = "x".join(map(str, MICRO_SHAPE))
        micro_impls = [i for i in impls if i != "fused-apart"]  # one LIF layer has no pool to fuse
        for bptt in (False, True):
            r = {impl: _spawn("micro", impl, args, bptt) for impl in micro_impls}
            label = f"LIF fwd+bwd [{shape}], {'BPTT' if bptt else 'detached V'}"
            for impl in micro_impls:
                rows.append(
                    f"| {label} | {impl} | {r[impl]['ms']:.1f} ms (min {r[impl]['ms_min']:.1f}) | – "
                    f"| {r[impl]['peak_mib']:.0f} |"
                )
            rows.append(
                f"| | **fused speed-up** | **{r['loop']['ms'] / r['fused']['ms']:.2f}x** | "
                f"| {r['fused']['peak_mib'] / r['loop']['peak_mib']:.2f}x memory |"
            )
    if not args.skip_model:
        r = {impl: _spawn("model", impl, args, args.bptt) for impl in impls}
        label = f"S-CMRL C=256 128x128 T=4, batch {args.batch}, training step"
        for impl in impls:
            rows.append(
                f"| {label} | {impl} | {r[impl]['ms']:.0f} ms/step | {r[impl]['samples_s']:.1f} "
                f"| {r[impl]['peak_mib']:.0f} |"
            )
        rows.append(
            f"| | **fused speed-up** | **{r['loop']['ms'] / r['fused']['ms']:.2f}x** | "
            f"| {r['fused']['peak_mib'] / r['loop']['peak_mib']:.2f}x memory |"
        )
    print(f"| benchmark | LIF impl | time (median) | samples/s | {mem} |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
