"""Batched input transforms on the target device (torch ops only, no torchvision, no per-sample loops).

Static audio-visual data (batches from `scmrl.data.batching`: visual uint8 [B, base, base, 3], channels last,
or [B, T, base, base, 3] with one frame per time step; audio float32 [B, 1, S, S]):

* training: RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) drawn per sample as torchvision
  draws it (10 tries, then the centre-crop fallback), applied with one affine grid per sample and
  `grid_sample` (bilinear, 2x supersampled then averaged as a cheap anti-alias), random horizontal
  flip, ImageNet mean/std normalisation;
* evaluation: Resize(2S) + CenterCrop(S) + normalisation. The frames arrive as 2S x 2S squares
  (256 x 256 for S = 128), so this is exactly the centre S x S crop;
* inputs are repeated over T (direct encoding), time first: [T, B, C, H, W]. With one frame per step
  the same crop and flip are applied to all T frames of a clip.

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

Randomness comes only from the `torch.Generator` passed in (see :func:`make_generator`), so a run is
reproducible and independent of the global RNG.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "EVENT_MEAN", "EVENT_STD", "make_generator", "rrc_boxes",
    "random_resized_crop", "resize_center_crop", "center_crop", "normalize", "add_noise_snr", "add_noise_snr_batch",
    "measure_snr_db",
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


def _crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None,
                 antialias: bool = True) -> torch.Tensor:
    """Resize box (top, left, h, w) of each sample of x [B, C, H, W] to size x size (optionally mirrored)."""
    b, c, hgt, wid = x.shape
    boxes = boxes.to(x.device, torch.float32)
    top, left, h, w = boxes.unbind(1)
    sx = w / wid
    sy = h / hgt
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = 2 * (left + w / 2) / wid - 1
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = 2 * (top + h / 2) / hgt - 1
    out_side = 2 * size if antialias else size
    grid = F.affine_grid(theta, [b, c, out_side, out_side], align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, 2) if antialias else out


def random_resized_crop(x: torch.Tensor, size: int, gen: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True, antialias: bool = True, group: int = 1) -> torch.Tensor:
    """x float [N, C, H, W] -> [N, C, size, size]: a random area/aspect crop per sample, resized, and a
    horizontal flip with probability 1/2. `group=T`: consecutive runs of T rows share one crop/flip."""
    n = x.shape[0]
    b = n // group
    boxes = rrc_boxes(b, x.shape[-2], x.shape[-1], gen, scale, ratio)
    flips = _rand((b,), gen) < 0.5 if flip else None
    if group > 1:
        boxes = boxes.repeat_interleave(group, dim=0)
        flips = flips.repeat_interleave(group, dim=0) if flips is not None else None
    return _crop_resize(x, boxes, size, flips, antialias)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return x[..., y0:y0 + size, x0:x0 + size]


def resize_center_crop(x: torch.Tensor, size: int, resize: int | None = None) -> torch.Tensor:
    """Resize(resize) (short side; default 2 * size) + CenterCrop(size) of x [N, C, H, W]."""
    resize = resize or 2 * size
    h, w = x.shape[-2:]
    if min(h, w) != resize:
        r = resize / min(h, w)
        x = F.interpolate(x.float(), size=(round(h * r), round(w * r)), mode="bilinear", antialias=True,
                          align_corners=False)
    return center_crop(x, size)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel (dim -3); scalars for all channels."""
    if isinstance(mean, (int, float)):
        return (x - mean) / std
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


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
                  gen: torch.Generator, noise_snr: float | None = None,
                  antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B, 1, S, S] float, visual uint8 [B, H, W, 3] or [B, T, H, W, 3] -> [T, B, 1, S, S], [T, B, 3, S, S]."""
    per_step = visual.ndim == 5
    b = visual.shape[0]
    v = visual.permute(0, 1, 4, 2, 3).flatten(0, 1) if per_step else visual.permute(0, 3, 1, 2)
    v = v.float().div_(255.0)
    group = visual.shape[1] if per_step else 1
    if train:
        v = random_resized_crop(v, size, gen, antialias=antialias, group=group)
    else:
        v = resize_center_crop(v, size)
    v = normalize(v, IMAGENET_MEAN, IMAGENET_STD)
    if per_step:
        v = v.view(b, group, *v.shape[1:])
        if group != time_steps:
            raise ValueError(f"{group} frames per clip for {time_steps} time steps")
    if noise_snr is not None:
        v = add_noise_snr(v, noise_snr, gen)
    v = v.transpose(0, 1) if per_step else v.unsqueeze(0).expand(time_steps, *v.shape)
    a = audio.float().unsqueeze(0).expand(time_steps, *audio.shape)
    return a.contiguous(), v.contiguous()


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

    def __call__(self, audio: torch.Tensor, visual: torch.Tensor, train: bool,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        snr = self.snr_for(train)
        per_sample = snr if self.noise == "per-sample" else None
        if self.kind == "events":
            a, v = event_inputs(audio, visual, train, gen, per_sample)
        else:
            a, v = static_inputs(audio, visual, self.time_steps, self.image_size, train, gen, per_sample,
                                 self.antialias)
        if snr is not None and self.noise == "per-batch":
            v = add_noise_snr_batch(v, snr, gen)
        return a, v
