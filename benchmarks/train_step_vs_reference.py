"""One S-CMRL training step, ours against the authors' code (github.com/Brain-Cog-Lab/S-CMRL), same machine.

    git clone https://github.com/Brain-Cog-Lab/S-CMRL /tmp/S-CMRL     # outside this repository
    pip install einops                                               # their code needs it (throwaway venv)
    python benchmarks/train_step_vs_reference.py --reference /tmp/S-CMRL
    python benchmarks/train_step_vs_reference.py --reference /tmp/S-CMRL --device cuda --batch 128  # a GPU

CREMA-D configuration (C 256, 16 heads, T 4, 128x128 spectrogram and RGB frame, 6 classes), batch 8,
2 threads, float32, forward + loss + backward + AdamW on both sides:

* ours: what `scmrl-train` builds by default on CPU (`model_config` of the default `TrainConfig` for CREMA-D
  shards, `build_optimizer`, `compute_loss`, the heap settings of `scmrl.train.cpu_memory`, static inputs
  expanded over T as the trainer's transform gives them), plus any `--ours-option` (stated in the output);
* theirs: `AudioVisualSpikformer` imported from `--reference` as their `train_snn.py` builds it for CREMA-D
  (Add interaction, cross-attention, SpatialTemporal, alpha 1.5, alignment loss at temperature 0.07), inputs
  repeated over T with einops as their loop does, label-smoothed CE (0.1) + their class-contrastive loss
  (restated here), AdamW without decay on biases and 1-d parameters (timm's factory).

Their code imports a few timm / torchvision names it does not use for this model; small stand-ins for them
are written to a temporary folder (nothing of theirs, timm's or torchvision's is copied). Each model runs in
fresh subprocesses (peak RSS, `ru_maxrss`, is per model), alternating ours / theirs over `--rounds`;
figures are medians of samples/s over the timed steps after `--warmup` steps. `--check` first runs both
models with the same weights (theirs mapped by `scmrl.train.convert`) on one batch and compares the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Stand-ins for the names their spikformer.py / braincog import from timm and torchvision (none is used by
# AudioVisualSpikformer's forward pass except trunc_normal_, which is torch's own).
SHIMS = {
    "timm/__init__.py": "",
    "timm/models/__init__.py": "",
    "timm/models/layers.py": (
        "import torch\nfrom torch import nn\n"
        "def to_2tuple(x):\n    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)\n"
        "trunc_normal_ = nn.init.trunc_normal_\n"
        "class DropPath(nn.Identity):\n    def __init__(self, *args, **kwargs):\n        super().__init__()\n"),
    "timm/models/registry.py": "def register_model(fn):\n    return fn\n",
    "timm/models/vision_transformer.py": "def _cfg(**kwargs):\n    return dict(kwargs)\n",
    "torchvision/__init__.py": "from . import transforms, ops, utils\n",
    "torchvision/transforms.py": "",
    "torchvision/utils.py": "",
    "torchvision/ops.py": "class DeformConv2d:\n    def __init__(self, *args, **kwargs):\n"
                          "        raise NotImplementedError('stand-in')\n",
}
CLASSES = 6
TAU_S = 0.07


def write_shims(folder: Path) -> None:
    for rel, text in SHIMS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _import_reference(reference: Path, shims: Path):
    """Their AudioVisualSpikformer; braincog's package __init__ files (which import its datasets and
    utilities) are bypassed by registering bare packages for the folders the model needs."""
    import types

    sys.path[:0] = [str(shims), str(reference)]
    for name in ("braincog", "braincog.base", "braincog.model_zoo"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(reference / name.replace(".", "/"))]
        sys.modules[name] = mod
    from braincog.model_zoo.spikformer import AudioVisualSpikformer  # type: ignore[import-not-found]

    return AudioVisualSpikformer


def their_parts(args: argparse.Namespace):
    """Their network (train mode, on args.device), AdamW, the precision context and their loss
    (benchmarks/epoch_vs_reference.py runs them in their own training loop)."""
    import torch
    import torch.nn.functional as F

    from scmrl.train.optim import build_optimizer

    import contextlib

    net_cls = _import_reference(Path(args.reference), Path(args.shims))
    torch.manual_seed(0)
    net = net_cls(step=args.time_steps, num_classes=CLASSES, in_channels=3, embed_dims=args.embed_dim,
                  num_heads=args.heads, img_size_h=args.size, img_size_w=args.size, interaction="Add",
                  cross_attn=True, attn_method="SpatialTemporal", alpha=1.5, contrastive=True).train()
    net = net.to(args.device)
    opt = build_optimizer(net, 1e-3, 1e-4, exclude_1d=True)
    # their training script runs float32 unless given --amp; --theirs-amp runs them under bf16 autocast
    precision = (torch.autocast("cuda", dtype=torch.bfloat16) if args.theirs_amp and args.device == "cuda"
                 else contextlib.nullcontext())

    def loss_fn(out, labels):
        logits, fa, fv = out
        ce = F.cross_entropy(logits, labels, label_smoothing=0.1)
        # their class_contrastive_loss: features [T, B, C] averaged over T, same-class pairs positive
        fa, fv = fa.mean(0), fv.mean(0)
        pos = (labels.unsqueeze(0) == labels.unsqueeze(-1)).float()
        score = fa @ fv.t() / TAU_S
        return ce - torch.mean(torch.mean(F.log_softmax(score, dim=-1) * pos, dim=-1))

    return net, opt, precision, loss_fn


def _theirs(args: argparse.Namespace):
    from einops import repeat

    net, opt, precision, loss_fn = their_parts(args)

    def prepare(audio, visual):  # [B, C, H, W] -> their [B, T, C, H, W] (materialised, as their loop)
        return [repeat(x, "b c w h -> b t c w h", t=args.time_steps).float() for x in (audio, visual)]

    def step_loss(a, v, y):
        with precision:
            return loss_fn(net(prepare(a, v)), y)

    return net, opt, step_loss


def ours_config(args: argparse.Namespace):
    """ModelConfig and TrainConfig as `scmrl-train` resolves them for CREMA-D shards, with --ours-option."""
    from avdata.shards.manifest import Manifest
    from scmrl.train.config import TrainConfig, model_config, resolve_protocol

    opts = dict(kv.split("=", 1) for kv in args.ours_option)
    cfg = TrainConfig(shards="-", out=tempfile.gettempdir(), batch_size=args.batch, **_typed(opts))
    cfg, proto = resolve_protocol(cfg)
    manifest = Manifest(dataset="cremad", classes=[f"c{i}" for i in range(CLASSES)],
                        features={"frames.npy": {}, "spec.npy": {}})
    mcfg = model_config(cfg, manifest)
    mcfg.embed_dim, mcfg.heads, mcfg.time_steps = args.embed_dim, args.heads, args.time_steps
    mcfg.audio_size = mcfg.visual_size = args.size
    return cfg, proto, mcfg


def _typed(opts: dict[str, str]) -> dict:
    import dataclasses

    from scmrl.train.config import TrainConfig

    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for k, v in opts.items():
        k = k.replace("-", "_")
        t = str(types[k])
        out[k] = (v.lower() in ("1", "true", "yes")) if t.startswith("bool") else (
            int(v) if t.startswith("int") else float(v) if t.startswith("float") else v)
    return out


def _ours(args: argparse.Namespace):
    import torch

    from scmrl.model.losses import compute_loss
    from scmrl.model.models import build_model
    from scmrl.train.cpu_memory import keep_freed_memory
    from scmrl.train.optim import build_optimizer

    cfg, proto, mcfg = ours_config(args)
    if args.device == "cpu":  # as scmrl.train.loop does on CPU
        keep_freed_memory()
        if getattr(cfg, "compile", False):  # (a checkout from before the option has no such field)
            from scmrl.model import lif_compiled

            lif_compiled.enable(True)
    from scmrl.train.evaluate import autocast_for

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_model(mcfg).train().to(device)
    opt = build_optimizer(net, 1e-3, cfg.weight_decay, proto.exclude_1d_decay)
    t = mcfg.time_steps

    def step_loss(a, v, y):
        a, v = (x.unsqueeze(0).expand(t, *x.shape) for x in (a, v))  # as scmrl.data.transforms.static_inputs
        with autocast_for(device, cfg.amp):  # bf16 on CUDA by default, as scmrl-train; float32 on CPU
            return compute_loss(mcfg, net(a, v), y)[0]

    return net, opt, step_loss


def worker(args: argparse.Namespace) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    net, opt, step_loss = (_ours if args.worker == "ours" else _theirs)(args)
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(args.batch, 1, args.size, args.size, generator=g).to(args.device)
    visual = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(args.device)
    labels = (torch.arange(args.batch) % CLASSES).to(args.device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: torch, model, data
    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = step_loss(audio, visual, labels)
        loss.backward()
        opt.step()
        float(loss.detach())
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    return {"samples_per_s": args.batch / statistics.median(times), "ms": 1000 * statistics.median(times),
            "cpu_ms": 1000 * statistics.median(cpu), "max_rss_mib": rss, "base_rss_mib": base, "max_gpu_mib": gpu}


def check(args: argparse.Namespace) -> dict:
    """Same weights and batch through both models (ours with the authors' temporal layout): the two losses."""
    import torch

    from scmrl.train.convert import convert_state_dict
    from scmrl.model.losses import compute_loss
    from scmrl.model.models import build_model

    torch.set_num_threads(args.threads)
    args.device, args.theirs_amp = "cpu", False  # the same numbers are checked in float32 on the CPU
    net, _, their_loss = _theirs(args)
    _, _, mcfg = ours_config(args)
    mcfg.attention = "spatiotemporal-reference"  # their block's layout (scmrl.train.convert's default)
    ours = build_model(mcfg).train()
    ours.load_state_dict(convert_state_dict(net.state_dict(), mcfg))
    g = torch.Generator().manual_seed(2)
    a, v = torch.randn(args.batch, 1, args.size, args.size, generator=g), torch.randn(args.batch, 3, args.size,
                                                                                      args.size, generator=g)
    y = torch.arange(args.batch) % CLASSES
    t = mcfg.time_steps
    mine = compute_loss(mcfg, ours(a.expand(t, *a.shape), v.expand(t, *v.shape)), y)[0]
    return {"ours": float(mine.detach()), "theirs": float(their_loss(a, v, y).detach())}


def _spawn(role: str, args: argparse.Namespace, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--reference", args.reference, "--shims", args.shims, "--role", role,
           *extra, *[f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                     ("batch", "threads", "size", "embed_dim", "heads", "time_steps", "steps", "warmup", "device")],
           *(["--theirs-amp"] if args.theirs_amp else []), *[f"--ours-option={o}" for o in args.ours_option]]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{role} {' '.join(extra)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="checkout of github.com/Brain-Cog-Lab/S-CMRL")
    ap.add_argument("--rounds", type=int, default=3, help="fresh process pairs, ours then theirs")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--time-steps", type=int, default=4)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="cuda: ours as scmrl-train runs there (bf16 autocast, Triton kernels where they build), "
                         "theirs in float32 as their script runs by default; the memory compared is the GPU's peak")
    ap.add_argument("--theirs-amp", action="store_true", help="run their model under bf16 autocast too (CUDA)")
    ap.add_argument("--ours-option", action="append", default=[], metavar="FIELD=VALUE",
                    help="a scmrl-train option for our side, e.g. compile=true (repeatable)")
    ap.add_argument("--check", action="store_true", help="first compare both losses on one batch, same weights")
    ap.add_argument("--role", choices=("ours", "theirs", "check"), help=argparse.SUPPRESS)
    ap.add_argument("--shims", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.worker = args.role
    if args.role == "check":
        print(json.dumps(check(args)))
        return
    if args.role:
        print(json.dumps(worker(args)))
        return
    load = os.getloadavg()
    ref = Path(args.reference)
    if not (ref / "braincog" / "model_zoo" / "spikformer.py").is_file():
        raise SystemExit(f"{ref}: not a checkout of Brain-Cog-Lab/S-CMRL (no braincog/model_zoo/spikformer.py)")
    import importlib.util

    if importlib.util.find_spec("einops") is None:
        raise SystemExit("their code imports einops: `pip install einops` (in a throwaway environment) first")
    with tempfile.TemporaryDirectory(prefix="scmrl-ref-shims-") as tmp:
        args.shims = tmp
        write_shims(Path(tmp))
        if args.check:
            c = _spawn("check", args, [])
            print(f"same weights, one batch: loss ours {c['ours']:.6f}, theirs {c['theirs']:.6f} "
                  f"(|diff| {abs(c['ours'] - c['theirs']):.2e})")
        runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
        for r in range(args.rounds):
            for role in ("ours", "theirs"):
                runs[role].append(_spawn(role, args, []))
                res = runs[role][-1]
                print(f"round {r + 1} {role:6s}: {res['samples_per_s']:6.2f} samples/s ({res['ms']:.0f} ms/step, "
                      f"{res['cpu_ms']:.0f} CPU-ms), max RSS {res['max_rss_mib']:.0f} MiB (before the first step "
                      f"{res['base_rss_mib']:.0f})", flush=True)
    # on CUDA the memory compared is the GPU's peak (torch.cuda.max_memory_allocated)
    mem_key = "max_gpu_mib" if args.device == "cuda" else "max_rss_mib"
    med = {k: {m: statistics.median(x[src] for x in v) for m, src in
               (("samples_per_s", "samples_per_s"), ("cpu_ms", "cpu_ms"), ("max_rss_mib", mem_key))}
           for k, v in runs.items()}
    speed = med["ours"]["samples_per_s"] / med["theirs"]["samples_per_s"]
    per_cpu = med["theirs"]["cpu_ms"] / med["ours"]["cpu_ms"]
    mem = med["ours"]["max_rss_mib"] / med["theirs"]["max_rss_mib"]
    import torch

    opts = ", ".join(args.ours_option) or "scmrl-train defaults"
    print(f"\nours ({opts}): {med['ours']['samples_per_s']:.2f} samples/s, {med['ours']['max_rss_mib']:.0f} MiB; "
          f"theirs: {med['theirs']['samples_per_s']:.2f} samples/s, {med['theirs']['max_rss_mib']:.0f} MiB")
    print(f"load average (1 min) {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    what = "peak GPU memory" if args.device == "cuda" else "peak RSS"
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"device: {where}; speed ours/theirs {speed:.2f}x (per CPU-second {per_cpu:.2f}x), {what} ours/theirs "
          f"{mem:.2f}x" + ("; theirs under bf16 autocast" if args.theirs_amp else ""))
    col = "GPU peak" if args.device == "cuda" else "RSS"
    dev = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    print(f"\n| torch | device | threads | batch | ours samples/s | theirs samples/s | speed | ours {col} MiB | "
          f"theirs {col} MiB | {col} ratio |\n|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {torch.__version__} | {dev} | "
          f"{args.threads} | {args.batch} | {med['ours']['samples_per_s']:.2f} | {med['theirs']['samples_per_s']:.2f} "
          f"| **{speed:.2f}x** | {med['ours']['max_rss_mib']:.0f} | {med['theirs']['max_rss_mib']:.0f} | "
          f"**{mem:.2f}x** |")


if __name__ == "__main__":
    main()
