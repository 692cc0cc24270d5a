"""Where a training step of the reference S-CMRL configuration spends its time (torch.profiler table).

    python benchmarks/profile_step.py --device cuda --batch 128 [--lif loop]
    python benchmarks/profile_step.py --device cpu --batch 8 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from scmrl.model.config import ModelConfig  # noqa: E402
from scmrl.train.evaluate import autocast_for  # noqa: E402
from scmrl.model.losses import compute_loss  # noqa: E402
from scmrl.model.models import build_model  # noqa: E402
from scmrl.train.cpu_memory import keep_freed_memory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lif", default="fused", choices=("fused", "loop"))
    ap.add_argument("--no-amp", dest="amp", action="store_false")
    ap.add_argument("--rows", type=int, default=35)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        keep_freed_memory()  # as scmrl-train on CPU
    cfg = ModelConfig(num_classes=6, lif=args.lif)
    net = build_model(cfg).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    t = cfg.time_steps
    audio = torch.randn(1, args.batch, 1, 128, 128, device=dev).expand(t, -1, -1, -1, -1)
    visual = torch.randn(1, args.batch, 3, 128, 128, device=dev).expand(t, -1, -1, -1, -1)
    labels = torch.arange(args.batch, device=dev) % cfg.num_classes

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_for(dev, args.amp):
            loss, _ = compute_loss(cfg, net(audio, visual), labels)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
