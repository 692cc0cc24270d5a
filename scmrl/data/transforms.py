"""Batched input transforms on the target device (torch ops only, no torchvision).

Static audio-visual data (batches from `scmrl.data.batching`: visual uint8 [B, base, base, 3], channels last,
or [B, T, base, base, 3] with one frame per time step; audio float32 [B, 1, S, S]):

* training: RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) drawn per sample as torchvision
  draws it (10 tries, then the centre-crop fallback): each sample's integer box is cut and resized to
  S x S with ``F.interpolate(bilinear, antialias=True)``, which is torchvision's ``resized_crop`` on
  tensors and follows Pillow's anti-aliased bilinear filter (the authors' PIL pipeline); on the CPU it
  runs on the uint8 pixels (PyTorch's vectorised uint8 kernel, rounding to uint8 as Pillow does), on
  other devices on float pixels, rounded back to uint8, so the two agree within 1/255. Then a random
  horizontal flip and ImageNet mean/std normalisation, fused into the one uint8 -> float pass;
* evaluation: Resize(2S) + CenterCrop(S) + normalisation. The frames arrive as 2S x 2S squares
  (256 x 256 for S = 128), so this is exactly the centre S x S crop;
* inputs are repeated over T (direct encoding), time first: [T, B, C, H, W], as an expanded view (stride
  0 over T, no copy): the model's patch embedding then runs its first stage once per image
  (`scmrl.model.embedding`). With one frame per step the same crop and flip are applied to all T frames
  of a clip (a dense tensor).

Why a loop over the samples: the boxes differ in size, and one uint8 interpolate per box makes the whole
CPU transform cost about 0.2-0.3 ms per sample, against 4-12 ms for the batched grid_sample at twice
the output size that it replaced (on float pixels of the whole frame; an inexact anti-alias, up to 16
grey levels off Pillow's, against 1 here); BENCHMARKS.md ("aug-speed") has the figures. On the CPU the
transform runs in one intra-op thread (:func:`_one_thread` says why). :func:`random_resized_crop` draws
the boxes and flips as before (from the generator given, boxes then flips); the pixel values differ by
the resampling (and uint8 rounding), and the trainer's crops by their generator (below).

Event data (visual float32 counts [B, T, 2, 28, 28], audio [B, T, 64]):

* visual: training RandomCrop(28, padding 4) (zero padding, one offset per sample for all its bins),
  then Normalize(0.1307, 0.3081); one bin per time step;
* audio: each bin's 64 channels viewed as 8 x 8 and upsampled to 28 x 28 (bilinear), [T, B, 1, 28, 28].

Optional Gaussian noise on the visual input at a given SNR in dB, per sample, added to the normalised
input the network sees: noise power = signal power / 10^(snr/10), signal power = mean of x^2 over
the sample (static data: before the repetition over T, so every step sees the same noisy image).
``noise="per-batch"`` is the authors' version instead (``--protocol reference``): the signal power is
the mean of x^2 over the whole batch, and the noise is drawn after the repetition over T, so each time
step gets its own.

Randomness comes only from the `torch.Generator`s passed in (see :func:`make_generator`), so a run is
reproducible and independent of the global RNG. The trainer (`scmrl.train.epoch`) draws the static crops
and flips from a CPU generator of their own, (seed, "train-crops", epoch, rank), on every device: the
same crops on CPU and CUDA, and no device sync per batch.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "EVENT_MEAN", "EVENT_STD", "make_generator", "rrc_boxes",
    "random_resized_crop", "resized_crops", "resize_center_crop", "center_crop", "normalize", "normalize_uint8",
    "add_noise_snr", "add_noise_snr_batch", "measure_snr_db",
    "random_crop_pad", "upsample_event_audio", "static_inputs", "event_inputs", "BatchTransform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVENT_MEAN, EVENT_STD = 0.1307, 0.3081


def make_generator(device: torch.device | str, *parts: object) -> torch.Generator:
    """A generator on `device` seeded from the parts (e.g. seed, epoch, rank)."""
    seed = zlib.crc32("\x1f".join(str(p) for p in parts).encode())
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def _rand(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def rrc_boxes(b: int, height: int, width: int, gen: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
              tries: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, for B samples at once: [B, 4] float (top, left, h, w)."""
    area = float(height * width)
    u = _rand((b, tries, 4), gen)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = torch.exp(logr)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    top = torch.floor(u[..., 2] * (height - h + 1))
    left = torch.floor(u[..., 3] * (width - w + 1))
    first = torch.argmax(ok.float(), dim=1)  # first valid try (0 when none is valid)
    pick = lambda t: t.gather(1, first[:, None]).squeeze(1)  # noqa: E731
    box = torch.stack([pick(top), pick(left), pick(h), pick(w)], dim=1)
    # fallback (no valid try): the whole image clamped to the ratio range, centred
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fh, fw = height, round(height * max(ratio))
    else:
        fw, fh = width, height
    fb = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=box.dtype, device=box.device)
    return torch.where(ok.any(dim=1, keepdim=True), box, fb.expand_as(box))


def _uint8_kernel(x: torch.Tensor) -> bool:
    """Whether x is resized as uint8: PyTorch has a vectorised uint8 antialiased bilinear kernel on the CPU
    only (on CUDA the pixels go through float, rounded back to uint8 once per batch)."""
    return x.dtype == torch.uint8 and x.device.type == "cpu"


def _resampled(x: torch.Tensor) -> torch.Tensor:
    """x in the dtype it is resampled in (`_uint8_kernel`)."""
    return x.float() if x.dtype == torch.uint8 and not _uint8_kernel(x) else x


def _as_input(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`out`, resampled from `_resampled(x)`, back in x's dtype (float rounded to uint8 as Pillow rounds)."""
    return out.round_().clamp_(0, 255).to(torch.uint8) if out.dtype != x.dtype else out


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on the CPU for the static transform: its per-sample ops are small, each would
    open a parallel region, and on busy cores every region waits for a descheduled thread (2 threads on
    2 shared cores: 2-20x slower per sample than 1, BENCHMARKS.md "aug-speed"). The count is restored
    after (the model's step keeps its threads); switching costs well under a microsecond."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """x [N, C, h, w] -> [N, C, *size], bilinear (align_corners False), in x's dtype."""
    out = F.interpolate(_resampled(x), size=size, mode="bilinear", antialias=antialias, align_corners=False)
    return _as_input(out, x)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int, flips: torch.Tensor | None,
                  antialias: bool = True, group: int = 1) -> torch.Tensor:
    """Box (top, left, h, w; integers) of each sample of x [N, C, H, W] (uint8 or float, any strides)
    resized to size x size, mirrored where `flips`; torchvision's ``resized_crop`` (+ ``hflip``) per
    sample. `group=T`: box i applies to rows i*T .. i*T+T-1. Output in x's dtype, contiguous.

    Per sample: an interpolate and a copy into the output (two or three kernel launches on CUDA, where
    the batch is made float once and the result rounded back to uint8 once)."""
    n, c = x.shape[:2]
    work = _resampled(x)
    out = torch.empty(n, c, size, size, dtype=work.dtype, device=x.device)
    # the boxes go to the host once (drawn by a CPU generator they need no device sync)
    rows = boxes.to("cpu", torch.int64).tolist()
    mirror = flips.tolist() if flips is not None else [False] * len(rows)
    for i, ((top, left, h, w), flip) in enumerate(zip(rows, mirror)):
        r = F.interpolate(work[i * group:(i + 1) * group, :, top:top + h, left:left + w], size=(size, size),
                          mode="bilinear", antialias=antialias, align_corners=False)
        out[i * group:(i + 1) * group] = r.flip(-1) if flip else r
    return _as_input(out, x)


def random_resized_crop(x: torch.Tensor, size: int, gen: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True, antialias: bool = True, group: int = 1) -> torch.Tensor:
    """x [N, C, H, W] (uint8 or float) -> [N, C, size, size] in x's dtype: a random area/aspect crop per
    sample, resized, and a horizontal flip with probability 1/2. `group=T`: consecutive runs of T rows
    share one crop/flip. The draws come from `gen` (on its device): boxes, then flips."""
    b = x.shape[0] // group
    boxes = rrc_boxes(b, x.shape[-2], x.shape[-1], gen, scale, ratio)
    flips = _rand((b,), gen) < 0.5 if flip else None
    return resized_crops(x, boxes, size, flips, antialias, group)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return x[..., y0:y0 + size, x0:x0 + size]


def resize_center_crop(x: torch.Tensor, size: int, resize: int | None = None) -> torch.Tensor:
    """Resize(resize) (short side; default 2 * size) + CenterCrop(size) of x [N, C, H, W], in x's dtype."""
    resize = resize or 2 * size
    h, w = x.shape[-2:]
    if min(h, w) != resize:
        r = resize / min(h, w)
        x = _resize(x, (round(h * r), round(w * r)))
    return center_crop(x, size)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel (dim -3); scalars for all channels."""
    if isinstance(mean, (int, float)):
        return (x - mean) / std
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def normalize_uint8(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 pixels [..., C, H, W] -> float32 (x / 255 - mean) / std per channel, in one multiply-add pass
    after the conversion (x * 1/(255 std) - mean/std)."""
    scale = torch.tensor([1 / (255 * s) for s in std], device=x.device).view(-1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(-1, 1, 1)
    return x.float().mul_(scale).add_(shift)


def add_noise_snr(x: torch.Tensor, snr_db: float, gen: torch.Generator) -> torch.Tensor:
    """x + Gaussian noise whose power is each sample's signal power / 10^(snr_db / 10) (dim 0 = samples)."""
    dims = tuple(range(1, x.ndim))
    power = x.float().pow(2).mean(dim=dims, keepdim=True)
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device, torch.float32)
    return (x.float() + noise * torch.sqrt(power / 10 ** (snr_db / 10))).to(x.dtype)


def add_noise_snr_batch(x: torch.Tensor, snr_db: float, gen: torch.Generator) -> torch.Tensor:
    """x + Gaussian noise of power mean(x^2 over the whole tensor) / 10^(snr_db / 10), independent in every
    element (x time-first [T, B, ...]: fresh noise at every time step), as the authors' training adds it."""
    power = x.float().pow(2).mean()
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device, torch.float32)
    return (x.float() + noise * torch.sqrt(power / 10 ** (snr_db / 10))).to(x.dtype)


def measure_snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Per-sample SNR in dB of `noisy` against `clean` (dim 0 = samples)."""
    dims = tuple(range(1, clean.ndim))
    p_signal = clean.float().pow(2).mean(dim=dims)
    p_noise = (noisy.float() - clean.float()).pow(2).mean(dim=dims)
    return 10 * torch.log10(p_signal / p_noise)


def random_crop_pad(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """x [B, ..., H, W]: zero-pad by `pad` and cut a random H x W window per sample (same for all of
    its leading dims), i.e. RandomCrop(H, padding=pad), vectorised with one gather."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen, device=gen.device).to(x.device)
    rows = offs[:, 0, None] + torch.arange(h, device=x.device)  # [B, h]
    cols = offs[:, 1, None] + torch.arange(w, device=x.device)  # [B, w]
    inner = padded.shape[1:-2]
    flat = padded.reshape(b, -1, h + 2 * pad, w + 2 * pad)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = flat.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # [B, h, w, M]
    return out.permute(0, 3, 1, 2).reshape(b, *inner, h, w)


def upsample_event_audio(audio: torch.Tensor, size: int = 28, mode: str = "bilinear") -> torch.Tensor:
    """[B, T, 64] cochlea counts -> [T, B, 1, size, size]: each bin's 64 channels viewed as 8 x 8."""
    b, t, c = audio.shape
    side = int(round(math.sqrt(c)))
    if side * side != c:
        raise ValueError(f"event audio has {c} channels; expected a square number (64)")
    x = audio.float().reshape(b * t, 1, side, side)
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    x = F.interpolate(x, size=(size, size), mode=mode, **kw)
    return x.view(b, t, 1, size, size).transpose(0, 1)


def static_inputs(audio: torch.Tensor, visual: torch.Tensor, time_steps: int, size: int, train: bool,
                  gen: torch.Generator, noise_snr: float | None = None, antialias: bool = True,
                  crop_gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B, 1, S, S] float, visual uint8 [B, H, W, 3] or [B, T, H, W, 3] -> [T, B, 1, S, S], [T, B, 3, S, S]
    (expanded over T unless one frame per step). Crops and flips are drawn from `crop_gen` (default
    `gen`; a CPU generator spares a CUDA run a device sync per batch), the noise from `gen`."""
    with _one_thread(visual.device):
        per_step = visual.ndim == 5
        b = visual.shape[0]
        # channels-first views of the channels-last pixels: the crops read them in place, as uint8
        v = visual.permute(0, 1, 4, 2, 3).flatten(0, 1) if per_step else visual.permute(0, 3, 1, 2)
        group = visual.shape[1] if per_step else 1
        if per_step and group != time_steps:
            raise ValueError(f"{group} frames per clip for {time_steps} time steps")
        if train:
            v = random_resized_crop(v, size, crop_gen or gen, antialias=antialias, group=group)
        else:
            v = resize_center_crop(v, size)
        v = normalize_uint8(v, IMAGENET_MEAN, IMAGENET_STD) if v.dtype == torch.uint8 else \
            normalize(v.div(255.0), IMAGENET_MEAN, IMAGENET_STD)
        if per_step:
            v = v.view(b, group, *v.shape[1:])
        if noise_snr is not None:
            v = add_noise_snr(v, noise_snr, gen)
        v = v.transpose(0, 1).contiguous() if per_step else v.unsqueeze(0).expand(time_steps, *v.shape)
        a = audio.float().unsqueeze(0).expand(time_steps, *audio.shape)
        return a, v


def event_inputs(audio: torch.Tensor, visual: torch.Tensor, train: bool, gen: torch.Generator,
                 noise_snr: float | None = None, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B, T, 64], visual [B, T, 2, H, W] counts -> [T, B, 1, H, W], [T, B, 2, H, W]."""
    v = visual.float()
    if train and pad:
        v = random_crop_pad(v, pad, gen)
    v = normalize(v, EVENT_MEAN, EVENT_STD)
    if noise_snr is not None:
        v = add_noise_snr(v, noise_snr, gen)
    a = upsample_event_audio(audio, visual.shape[-1])
    return a.contiguous(), v.transpose(0, 1).contiguous()


@dataclass
class BatchTransform:
    """Turns a loader batch (already on the device) into the model's time-first inputs."""

    kind: str  # static | events
    time_steps: int
    image_size: int = 128
    noise_snr: float | None = None
    noise_on: str = "eval"  # train | eval | both
    antialias: bool = True
    noise: str = "per-sample"  # per-sample | per-batch (the authors': batch power, fresh at every time step)

    def __post_init__(self) -> None:
        if self.noise_on not in ("train", "eval", "both"):
            raise ValueError(f"noise_on must be train, eval or both, got {self.noise_on!r}")
        if self.noise not in ("per-sample", "per-batch"):
            raise ValueError(f"noise must be per-sample or per-batch, got {self.noise!r}")
        if self.kind not in ("static", "events"):
            raise ValueError(f"kind must be static or events, got {self.kind!r}")

    def snr_for(self, train: bool) -> float | None:
        if self.noise_snr is None:
            return None
        return self.noise_snr if self.noise_on in ("both", "train" if train else "eval") else None

    def __call__(self, audio: torch.Tensor, visual: torch.Tensor, train: bool, gen: torch.Generator,
                 crop_gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`gen` on the batch's device draws the noise (and the event crops); `crop_gen` (default `gen`)
        the static crops and flips: see :func:`static_inputs`."""
        snr = self.snr_for(train)
        per_sample = snr if self.noise == "per-sample" else None
        if self.kind == "events":
            a, v = event_inputs(audio, visual, train, gen, per_sample)
        else:
            a, v = static_inputs(audio, visual, self.time_steps, self.image_size, train, gen, per_sample,
                                 self.antialias, crop_gen)
        if snr is not None and self.noise == "per-batch":
            v = add_noise_snr_batch(v, snr, gen)
        return a, v
