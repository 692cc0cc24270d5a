"""A training epoch's data side (and, with --epoch, the whole epoch), ours against the authors' code
(github.com/Brain-Cog-Lab/S-CMRL), on the same real CREMA-D clips, same batch, same workers.

    python benchmarks/epoch_vs_reference.py --clips 240                               # ours only
    python benchmarks/epoch_vs_reference.py --clips 240 --reference /tmp/S-CMRL --ref-python /tmp/refenv/bin/python
    python benchmarks/epoch_vs_reference.py --clips 7442 --jobs 16 --device cuda --epoch \\
        --reference /tmp/S-CMRL --ref-python python3                                 # a GPU machine

Clips: --clips copies of the six genuine VP6 FLVs of ../shared/datasets/cremad/sample with their 16 kHz WAVs
under real CREMA-D clip names (benchmarks/prepare_cremad.py's copier; 7,442 = CREMA-D's size).

* ours: `avdata prepare cremad --jobs J` (timed), then what `scmrl-train` builds for those shards
  (`scmrl.train.loaders.make_run_data`: the shuffled training loader, its workers kept between epochs) and
  its batched augmentation (RandomResizedCrop, flip, normalisation, repeat over T; on the CPU on a CPU run,
  on the GPU on a GPU run); with --epoch also the training step (`scmrl.train.epoch.train_epoch`).
  The first epoch (workers starting) and a later one are reported, and without --epoch also the same
  loader without the augmentation ("loader only": what bounds the data side).
* theirs: the loader their `SNN/train_snn.py` builds for CREMA-D, `get_CREMAD_data` of their
  braincog/datasets/datasets.py imported from --reference and run by --ref-python (an environment with
  torch, torchvision, torchaudio, h5py, tonic and einops; without them their side is skipped, saying so):
  CREMADDataset (PIL JPEG + RandomResizedCrop(128), flip,
  ToTensor, Normalize; torchaudio load, resample to 22,050 Hz, STFT, log, PIL Resize((128, 128))) wrapped
  in tonic's DiskCachedDataset (3 copies of each sample, lzf HDF5), DataLoader with pin_memory and
  drop_last. Two changes, both needed to run it here: the workers are --workers (theirs is fixed at 8), and
  the sampler draws every training index (theirs hard-codes the full dataset's class counts). Then their
  loop's data part (repeat over T on the host, `.type(torch.FloatTensor)`, `.cuda()`); with --epoch also their
  step (AudioVisualSpikformer as benchmarks/train_step_vs_reference.py builds it, their loss, AdamW,
  `torch.cuda.synchronize()` each step). Two epochs: "cold" (empty cache: every sample computed and
  written) and "warm" (all 3 copies of every sample cached: every sample read from HDF5), which is what
  most of their 100 epochs are. Their on-disk layout (processed_dataset/{train,test}/{visual,audio}/<CLASS>/)
  is made with their `videoReader` (data/CREMAD/video_preprocessing.py, run from the checkout: one frame
  a second, OpenCV JPEG) and split_cremad.py's choice of one random frame per clip (restated; seeded).
  Their train folder holds exactly our train split's clips.

Each (side, workers) runs in a fresh process, sides alternating, --rounds times; figures are medians.
CPU seconds count the process and its DataLoader workers. On CUDA, the GPU's busy fraction is sampled with
`nvidia-smi` every 100 ms over the epoch. Time to train 100 epochs is extrapolated from the measured epochs:
ours first + 99 x later; theirs 3 x cold + 97 x warm (each sample is computed once per cached copy).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
COPIES = 3  # their DiskCachedDataset(num_copies=3)


def _bench_module(name: str):
    """A sibling benchmark script, imported by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- CPU time of a process and its workers

def _tree_cpu() -> float:
    """User + system seconds of this process, its reaped children and its live descendants (DataLoader
    workers, kept alive between epochs on our side, joined after each epoch on theirs)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    times: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(d)] = int(fields[1])
        times[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    me, live = os.getpid(), 0.0
    for pid in times:
        p = parent.get(pid)
        while p and p != me:
            p = parent.get(p)
        if p == me and pid != me:
            live += times[pid]
    return total + live


class GpuBusy:
    """The GPU's utilisation (nvidia-smi, every 100 ms) averaged over a `with` block; None without it."""

    def __enter__(self) -> "GpuBusy":
        self.samples: list[float] = []
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"  # an index or a UUID
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100", "-i", gpu],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line) / 100)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    @property
    def busy(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def _faults() -> int:
    """Minor page faults of this process so far (copy-on-write after forking workers shows here)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _epoch_record(kind: str, samples: int, wall: float, cpu: float, busy: float | None, faults: int) -> dict:
    return {"kind": kind, "samples": samples, "seconds": wall, "cpu_s": cpu, "samples_per_s": samples / wall,
            "cpu_s_per_sample": cpu / max(1, samples), "gpu_busy": busy, "main_minor_faults": faults}


# ---------------------------------------------------------------- ours: scmrl-train's loader (+ step)

class _NoProgress:
    def add_task(self, *a, **k) -> int:
        return 0

    def advance(self, *a) -> None:
        pass

    def remove_task(self, *a) -> None:
        pass


def run_ours(args: argparse.Namespace) -> dict:
    """Epochs of what scmrl-train builds for --shards (batch, workers and device as given)."""
    import torch

    from avdata.shards.location import open_shards
    from scmrl.data.transforms import make_generator
    from scmrl.train.config import TrainConfig, model_config, resolve_protocol
    from scmrl.train.cpu_memory import keep_freed_memory
    from scmrl.train.distributed import init_distributed
    from scmrl.train.loaders import make_run_data

    torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    cfg, proto = resolve_protocol(TrainConfig(shards=args.shards, out=tempfile.gettempdir(), batch_size=args.batch,
                                              workers=args.workers, device=args.device, epochs=100))
    source = open_shards(cfg.shards, cfg.classes)
    mcfg = model_config(cfg, source)
    run = make_run_data(source, [], cfg, mcfg, proto, ctx)
    device = ctx.device
    step = None
    if args.epoch:
        from scmrl.model.models import build_model
        from scmrl.train.epoch import train_epoch
        from scmrl.train.optim import build_optimizer
        from scmrl.train.schedule import make_schedule, scaled_lr

        if device.type == "cpu":
            keep_freed_memory()
        else:
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        model = build_model(mcfg).to(device)
        peak = scaled_lr(cfg.batch_size, cfg.base_lr, proto.lr_rule)
        opt = build_optimizer(model, peak, cfg.weight_decay, proto.exclude_1d_decay)
        sched = make_schedule(proto.schedule, peak, cfg.epochs, cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr)

        def step(batches, epoch: int) -> int:
            steps = max(run.train_ds.batches_per_rank(cfg.batch_size, cfg.workers))
            row = train_epoch(model, opt, sched, batches, run.transform, mcfg, cfg, ctx, epoch, steps, steps,
                              _NoProgress())
            return row["train_samples"]

    out = []
    for epoch in range(args.epochs):
        run.train_ds.set_epoch(epoch)
        with GpuBusy() if device.type == "cuda" else _Null() as gpu:
            c0, t0, f0 = _tree_cpu(), time.perf_counter(), _faults()
            batches = iter(run.train_loader)
            if step is not None:
                seen = step(batches, epoch)
            else:
                gen, seen = make_generator(device, cfg.seed, "train", epoch, ctx.rank), 0
                for batch in batches:
                    audio, visual, labels = (t.to(device, non_blocking=True) for t in batch[:3])
                    a, v = run.transform(audio, visual, True, gen)
                    seen += labels.numel()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - t0, _tree_cpu() - c0
        del batches
        out.append(_epoch_record("first" if epoch == 0 else "later", seen, wall, cpu, gpu.busy, _faults() - f0))
    if step is None:  # what bounds the data side: the same loader without the batched augmentation
        run.train_ds.set_epoch(args.epochs)
        c0, t0, f0, seen = _tree_cpu(), time.perf_counter(), _faults(), 0
        for batch in run.train_loader:
            seen += batch[2].to(device, non_blocking=True).numel()
        out.append(_epoch_record("loader only", seen, time.perf_counter() - t0, _tree_cpu() - c0, None,
                                 _faults() - f0))
    shape = {"audio": list(a.shape), "visual": list(v.shape)} if step is None else None
    return {"epochs": out, "train_clips": source.num_samples("train"), "shapes": shape, "torch": torch.__version__}


class _Null:
    busy = None

    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc) -> None:
        pass


# ---------------------------------------------------------------- theirs: get_CREMAD_data (+ their step)

def _their_datasets_module(reference: Path, shims: Path):
    """Their braincog/datasets/datasets.py, with bare packages for braincog and stand-ins for the modules it
    imports but CREMA-D does not use (other datasets, timm's loaders, mixing augmentations)."""
    class Stub(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {"__init__": lambda self, *a, **k: None})

    sys.path[:0] = [str(shims), str(reference)]
    for name in ("braincog", "braincog.datasets"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(reference / name.replace(".", "/"))]
        sys.modules[name] = mod
    for name in ("braincog.datasets.NOmniglot", "braincog.datasets.NOmniglot.nomniglot_full",
                 "braincog.datasets.NOmniglot.nomniglot_nw_ks", "braincog.datasets.NOmniglot.nomniglot_pair",
                 "braincog.datasets.ESimagenet", "braincog.datasets.ESimagenet.ES_imagenet",
                 "braincog.datasets.ESimagenet.reconstructed_ES_imagenet", "braincog.datasets.CUB2002011",
                 "braincog.datasets.TinyImageNet", "braincog.datasets.StanfordDogs", "braincog.datasets.bullying10k",
                 "braincog.datasets.time_conut", "braincog.datasets.cut_mix", "braincog.datasets.rand_aug",
                 "braincog.datasets.utils"):
        sys.modules[name] = Stub(name)
    try:
        import tonic
    except ImportError:  # tonic installed without its event-camera dependencies: its cache module alone
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec("tonic")
        if spec is None:
            raise SystemExit("their datasets.py needs tonic (`pip install tonic h5py` in --ref-python's env)")
        tonic = types.ModuleType("tonic")
        tonic.__path__ = list(spec.submodule_search_locations)
        sys.modules["tonic"] = tonic
        from tonic import cached_dataset

        tonic.DiskCachedDataset = cached_dataset.DiskCachedDataset
    try:
        import librosa  # noqa: F401
    except ImportError:  # imported by datasets.py, unused by CREMADDataset
        sys.modules["librosa"] = Stub("librosa")
    import braincog.datasets.datasets as their  # type: ignore[import-not-found]

    return their


def write_shims(folder: Path) -> None:
    """Stand-ins for the timm names their code imports (train_step_vs_reference.py's) and for timm.data's
    loaders, which CREMA-D does not use; the real torchvision is used (their transforms)."""
    shims = _bench_module("train_step_vs_reference").SHIMS
    files = {k: v for k, v in shims.items() if k.startswith("timm/")}
    files["timm/data.py"] = "def __getattr__(name):\n    return type(name, (), {})\n"
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _their_loader(args: argparse.Namespace):
    """get_CREMAD_data's training loader, with --workers and every index (see the module docstring)."""
    import torch

    their = _their_datasets_module(Path(args.reference), Path(args.shims))
    their.DATA_DIR = args.theirs_root  # their cache paths are made from the module's DATA_DIR
    train, _, _, _ = their.get_CREMAD_data(args.batch, root=args.theirs_root, modality="audio-visual",
                                           args=argparse.Namespace(step=args.time_steps))
    ds = train.dataset
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch, sampler=torch.utils.data.sampler.SubsetRandomSampler(list(range(len(ds)))),
        pin_memory=args.device == "cuda", drop_last=True, num_workers=args.workers)
    return loader, ds


class _CacheFiller:
    """Index i -> every missing cached copy of their sample i written (a DataLoader runs it in parallel)."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> int:
        from tonic.cached_dataset import save_to_disk_cache

        for c in range(COPIES):
            path = os.path.join(self.ds.cache_path, f"{i}_{c}.hdf5")
            if not os.path.exists(path):
                save_to_disk_cache(*self.ds.dataset[i], file_path=path, compress=self.ds.compress)
        return i


def _fill_cache(ds) -> None:
    """Every copy of every sample in their cache, as after their first few epochs (untimed)."""
    import torch

    filler = torch.utils.data.DataLoader(_CacheFiller(ds), batch_size=None, num_workers=os.cpu_count() or 1)
    for _ in filler:
        pass


def run_theirs(args: argparse.Namespace) -> dict:
    import torch
    from einops import repeat

    torch.set_num_threads(args.threads)
    loader, ds = _their_loader(args)
    device = torch.device(args.device)
    step = None
    if args.epoch:
        args.theirs_amp, args.embed_dim, args.heads, args.size = False, 256, 16, 128
        net, opt, _, loss_fn = _bench_module("train_step_vs_reference").their_parts(args)

        def step(inputs, target):
            out = net(inputs)
            loss = loss_fn(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            loss.item()
    out = []
    for kind in ("cold", "warm"):
        if kind == "warm":
            _fill_cache(ds)
        with GpuBusy() if device.type == "cuda" else _Null() as gpu:
            c0, t0, f0, seen = _tree_cpu(), time.perf_counter(), _faults(), 0
            for inputs, target in loader:  # their train_one_epoch, up to the model
                inputs = [repeat(x, "b c w h -> b t c w h", t=args.time_steps) for x in inputs]
                if device.type == "cuda":
                    inputs, target = [x.type(torch.FloatTensor).cuda() for x in inputs], target.cuda()
                else:
                    inputs = [x.type(torch.FloatTensor) for x in inputs]
                if step is not None:
                    step(inputs, target)
                seen += target.numel()
            wall, cpu = time.perf_counter() - t0, _tree_cpu() - c0
        out.append(_epoch_record(kind, seen, wall, cpu, gpu.busy, _faults() - f0))
    shape = {"audio": list(inputs[0].shape), "visual": list(inputs[1].shape)}
    return {"epochs": out, "train_clips": len(ds), "shapes": shape, "torch": torch.__version__}


# ---------------------------------------------------------------- the clips, both layouts

def prepare_ours(raw: Path, shards: Path, jobs: int, ours: Path, extra: list[str] | None = None) -> float:
    """`avdata prepare cremad` of --ours on the raw clips (plus --prepare-args); its wall time."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "avdata.cli.avdata_app", "prepare", "cremad", "--raw", str(raw),
                          "--out", str(shards), "--jobs", str(jobs), *(extra or [])], env=_env(ours),
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"avdata prepare cremad failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return time.perf_counter() - t0


@functools.lru_cache(maxsize=1)
def _video_reader(reference: Path):
    """Their `videoReader` class from data/CREMAD/video_preprocessing.py (the module itself runs their whole
    preprocessing at import, from fixed paths: only the class is executed)."""
    import cv2

    src = (reference / "data" / "CREMAD" / "video_preprocessing.py").read_text()
    tree = ast.parse(src)
    tree.body = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "videoReader"]
    ns: dict = {"cv2": cv2}
    exec(compile(tree, "video_preprocessing.py", "exec"), ns)
    return ns["videoReader"]


def _layout_one(task: tuple[str, str, str, str, str]) -> None:
    """One clip of their layout: its frames at one a second (their videoReader), then one of them at
    random and the WAV copied into processed_dataset (split_cremad.py's step; seeded by the clip name)."""
    import shutil

    raw, root, reference, clip, split = task
    save = Path(root) / "Image-01-FPS" / clip
    save.mkdir(parents=True, exist_ok=True)
    _video_reader(Path(reference))(video_path=f"{raw}/VideoFlash/{clip}.flv",
                                   frame_kept_per_second=1).video2frame_update(frame_save_path=str(save))
    names = os.listdir(save)
    out, emotion = Path(root) / "CREMA-D" / "processed_dataset" / split, clip.split("_")[2]
    pick = random.Random(clip).randint(0, len(names) - 1)
    shutil.copy2(save / names[pick], out / "visual" / emotion / f"{clip}.jpg")
    shutil.copy2(Path(raw) / "AudioWAV" / f"{clip}.wav", out / "audio" / emotion / f"{clip}.wav")


def prepare_theirs(raw: Path, root: Path, reference: Path, clips: dict[str, str], jobs: int) -> float:
    """Their processed_dataset layout from the raw clips (`_layout_one` over --jobs processes); its wall time."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    for split in ("train", "test"):
        for mod in ("audio", "visual"):
            for c in CLASS_NAMES:
                (root / "CREMA-D" / "processed_dataset" / split / mod / c).mkdir(parents=True, exist_ok=True)
    tasks = [(str(raw), str(root), str(reference), clip, split) for clip, split in clips.items()]
    with mp.get_context("fork").Pool(jobs) as pool:
        list(pool.imap_unordered(_layout_one, tasks, chunksize=4))
    return time.perf_counter() - t0


def _missing_modules(python: str) -> list[str]:
    """The modules their data path needs that `python` cannot find."""
    code = ("import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))")
    res = subprocess.run([python, "-c", code, "torch", "torchvision", "torchaudio", "h5py", "tonic", "einops"],
                         capture_output=True, text=True, check=False)
    return res.stdout.split() if res.returncode == 0 else [f"anything ({res.stderr.strip()[-200:]})"]


def _env(tree: Path, *front: str) -> dict:
    path = os.pathsep.join([*front, str(tree), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "AVDATA_NO_PROGRESS": "1"}


def _spawn(side: str, args: argparse.Namespace, workers: int) -> dict:
    python = args.ref_python if side == "theirs" else sys.executable
    env = _env(Path(args.ours), *([args.shims] if side == "theirs" else []))
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [python, __file__, "--role", side, "--workers", str(workers), "--batch", str(args.batch),
           "--device", args.device, "--threads", str(args.threads), "--epochs", str(args.epochs),
           "--time-steps", str(args.time_steps), "--shards", str(args.shards), "--ours", str(args.ours)]
    if side == "theirs":
        cache = Path(args.theirs_root) / "CREMA-D" / "audio-visual"
        subprocess.run(["rm", "-rf", str(cache)], check=True)  # a cold cache for every theirs process
        cmd += ["--reference", args.reference, "--shims", args.shims, "--theirs-root", args.theirs_root]
    if args.epoch:
        cmd.append("--epoch")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{side} with {workers} workers failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], kind: str, key: str) -> float | None:
    vals = [e[key] for r in runs for e in r["epochs"] if e["kind"] == kind and e[key] is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: dict, args: argparse.Namespace, prep: dict) -> dict:
    """Medians per (side, workers, epoch kind), the ratios, and the 100-epoch extrapolation."""
    rows, ratios = [], {}
    for (side, w), rs in sorted(runs.items()):
        for kind in dict.fromkeys(e["kind"] for r in rs for e in r["epochs"]):
            rows.append({"side": side, "workers": w, "epoch": kind, "samples": rs[0]["epochs"][0]["samples"],
                         **{k: _median(rs, kind, k) for k in ("samples_per_s", "cpu_s_per_sample", "seconds",
                                                              "gpu_busy", "main_minor_faults")}})
    for w in args.workers:
        ours, theirs = runs.get(("ours", w)), runs.get(("theirs", w))
        if not (ours and theirs):
            continue
        o = _median(ours, "later", "samples_per_s")
        o100 = _median(ours, "first", "seconds") + 99 * _median(ours, "later", "seconds")
        t100 = COPIES * _median(theirs, "cold", "seconds") + (100 - COPIES) * _median(theirs, "warm", "seconds")
        ratios[w] = {"vs_cold": o / _median(theirs, "cold", "samples_per_s"),
                     "vs_warm": o / _median(theirs, "warm", "samples_per_s"),
                     "cpu_vs_cold": _median(theirs, "cold", "cpu_s_per_sample") / _median(ours, "later",
                                                                                          "cpu_s_per_sample"),
                     "cpu_vs_warm": _median(theirs, "warm", "cpu_s_per_sample") / _median(ours, "later",
                                                                                          "cpu_s_per_sample"),
                     "hours_100_epochs": {"ours": o100 / 3600, "theirs": t100 / 3600}, "speed_100_epochs": t100 / o100}
    return {"clips": args.clips, "batch": args.batch, "device": args.device, "epoch": args.epoch, "rows": rows,
            "ratios": ratios, "prepare_s": prep, "machine": _machine(args.device), "rounds": args.rounds,
            "load_avg": [args.load0, os.getloadavg()[0]], "ours_tree": args.ours, "ours_commit": _commit(args.ours),
            "torch": {k: rs[0]["torch"] for (k, _), rs in runs.items()},
            "train_clips": {k: rs[0]["train_clips"] for (k, _), rs in runs.items()},
            "shapes": {k: rs[0]["shapes"] for (k, _), rs in runs.items()}}


def _commit(tree: str) -> str | None:
    res = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() or None


def _machine(device: str) -> str:
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


def report(s: dict) -> None:
    what = "whole epoch" if s["epoch"] else "data side"
    print(f"\n{s['clips']} clips, batch {s['batch']}, {s['device']} ({what}), "
          f"{s['machine']}; ours at {s['ours_tree']} ({s['ours_commit']}); medians of {s['rounds']} rounds; "
          f"load average {s['load_avg'][0]:.2f} -> {s['load_avg'][1]:.2f}")
    print("prepare: " + ", ".join(f"{k} {v:.1f} s" for k, v in s["prepare_s"].items()))
    print("\n| side | workers | epoch | samples | samples/s | CPU ms/sample | epoch s | GPU busy |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in s["rows"]:
        busy = "-" if r["gpu_busy"] is None else f"{100 * r['gpu_busy']:.0f}%"
        print(f"| {r['side']} | {r['workers']} | {r['epoch']} | {r['samples']} | {r['samples_per_s']:.1f} | "
              f"{1000 * r['cpu_s_per_sample']:.1f} | {r['seconds']:.2f} | {busy} |")
    for w, r in s["ratios"].items():
        h = r["hours_100_epochs"]
        print(f"workers {w}: ours (later epoch) / theirs samples/s: {r['vs_cold']:.2f}x their cold epoch, "
              f"{r['vs_warm']:.2f}x their warm (cached) epoch; per CPU-second {r['cpu_vs_cold']:.2f}x / "
              f"{r['cpu_vs_warm']:.2f}x; 100 epochs (extrapolated) ours {60 * h['ours']:.1f} min, theirs "
              f"{60 * h['theirs']:.1f} min "
              f"({r['speed_100_epochs']:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=240, help="copies of the real sample's clips (7442: CREMA-D)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="our epochs per process (the first starts the workers)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="avdata prepare --jobs")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads per process")
    ap.add_argument("--time-steps", type=int, default=4)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--epoch", action="store_true", help="the whole epoch: the training step as well")
    ap.add_argument("--ours", default=str(ROOT), help="the tree whose avdata and scmrl are measured")
    ap.add_argument("--prepare-args", default="", help="more options of our `avdata prepare cremad`, e.g. "
                    "'--frame-format npy' (frames stored undecoded: no JPEG decode in the loader)")
    ap.add_argument("--reference", default=os.environ.get("SCMRL_REFERENCE"),
                    help="checkout of github.com/Brain-Cog-Lab/S-CMRL (default $SCMRL_REFERENCE; none: ours only)")
    ap.add_argument("--ref-python", default=os.environ.get("SCMRL_REFERENCE_PYTHON", sys.executable),
                    help="python of an environment with torchvision, torchaudio, h5py, tonic, einops")
    ap.add_argument("--work", help="keep the clips, shards and their layout here (default: a temporary folder)")
    ap.add_argument("--json", help="write the summary here")
    for hidden in ("--role", "--shards", "--shims", "--theirs-root"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        args.workers = args.workers[0]
        print(json.dumps((run_ours if args.role == "ours" else run_theirs)(args)))
        return
    args.load0 = os.getloadavg()[0]
    args.ours = str(Path(args.ours).resolve())
    sys.path.insert(0, args.ours)  # the clip split and the shards are --ours's
    with tempfile.TemporaryDirectory(prefix="epoch-vs-ref-") as tmp:
        work = Path(args.work or tmp)
        summary = measure(args, work)
    report(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


def measure(args: argparse.Namespace, work: Path) -> dict:
    from avdata.datasets.cremad.recipe import CremadOptions
    from avdata.datasets.registry import get_recipe

    raw, args.shards = work / "raw", str(work / "shards")
    _bench_module("prepare_cremad").make_real_raw(raw, args.clips)
    extra = args.prepare_args.split()
    prep = {" ".join(["avdata prepare cremad --jobs", str(args.jobs), *extra]):
            prepare_ours(raw, Path(args.shards), args.jobs, Path(args.ours), extra)}
    sides = ["ours"]
    missing = _missing_modules(args.ref_python) if args.reference else []
    if missing:  # e.g. gpu_checks.sh with SCMRL_REFERENCE set for the step benchmark only
        print(f"their side skipped: {args.ref_python} cannot import {', '.join(missing)} (--ref-python: an "
              "environment with torchvision, torchaudio, h5py, tonic and einops)", flush=True)
    if args.reference and not missing:
        ref = Path(args.reference)
        if not (ref / "braincog" / "datasets" / "datasets.py").is_file():
            raise SystemExit(f"{ref}: not a checkout of Brain-Cog-Lab/S-CMRL (no braincog/datasets/datasets.py)")
        plan = get_recipe("cremad").plan(raw, CremadOptions())  # our split of each clip: theirs trains on ours
        layout = {it.key: "train" if it.split == "train" else "test" for it in plan.items}
        args.theirs_root = str(work / "theirs")
        prep[f"their layout (videoReader + split_cremad), {args.jobs} processes"] = prepare_theirs(
            raw, Path(args.theirs_root), ref, layout, args.jobs)
        args.shims = str(work / "shims")
        write_shims(Path(args.shims))
        sides.append("theirs")
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for w in args.workers:
            for side in (sides if r % 2 == 0 else sides[::-1]):  # alternate which side runs first
                res = _spawn(side, args, w)
                runs.setdefault((side, w), []).append(res)
                print(f"round {r + 1} {side:6s} workers {w}: " + ", ".join(
                    f"{e['kind']} {e['samples_per_s']:.1f} samples/s ({1000 * e['cpu_s_per_sample']:.1f} CPU ms)"
                    for e in res["epochs"]), flush=True)
    return summarise(runs, args, prep)


if __name__ == "__main__":
    main()
