"""Batched train/eval transforms on the device (no torchvision): RandomResizedCrop + flip + ImageNet
normalisation, the evaluation centre crop, event RandomCrop with padding, audio 8x8 -> 28x28, Gaussian
noise at a chosen SNR, and repetition over T (time-first [T, B, C, H, W])."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVENT_MEAN, EVENT_STD = 0.1307, 0.3081


def random_resized_crop(x: torch.Tensor, size: int, gen: torch.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """x float [B, C, H, W] -> [B, C, size, size]: a random area/aspect crop per sample, resized bilinearly."""
    b, dev = x.shape[0], x.device
    u = torch.rand(b, 4, generator=gen, device=gen.device).to(dev)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)  # fraction of the width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (u[:, 2] * 2 - 1) * (1 - w)  # centre in [-1 + w, 1 - w]
    cy = (u[:, 3] * 2 - 1) * (1 - h)
    sign = torch.ones(b, device=dev)
    if flip:
        fl = torch.rand(b, generator=gen, device=gen.device).to(dev) < 0.5
        sign = torch.where(fl, -sign, sign)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, (b, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return x[..., y0:y0 + size, x0:x0 + size]


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def add_noise_snr(x: torch.Tensor, snr_db: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise with power = signal power / 10^(snr/10), per sample."""
    dims = tuple(range(1, x.ndim))
    power = x.pow(2).mean(dim=dims, keepdim=True)
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device, x.dtype)
    return x + noise * torch.sqrt(power / (10 ** (snr_db / 10)))


def random_crop_pad(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """x [B, ..., H, W]: zero-pad by `pad` and take a random H x W window per sample."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen, device=gen.device).tolist()
    return torch.stack([padded[i, ..., oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offs)])


def static_batch(audio: torch.Tensor, visual: torch.Tensor, t: int, size: int, train: bool, gen: torch.Generator,
                 noise_snr: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B,1,S,S] float, visual uint8 [B,3,2S,2S] or [B,T,3,2S,2S] -> time-first model inputs."""
    per_step = visual.ndim == 5
    v = visual.float().div_(255)
    if per_step:
        b = v.shape[0]
        v = v.flatten(0, 1)
    v = random_resized_crop(v, size, gen) if train else center_crop(v, size)
    v = normalize(v, IMAGENET_MEAN, IMAGENET_STD)
    if noise_snr is not None:
        v = add_noise_snr(v, noise_snr, gen)
    if per_step:
        v = v.view(b, t, *v.shape[1:]).transpose(0, 1)
    else:
        v = v.unsqueeze(0).expand(t, *v.shape)
    a = audio.unsqueeze(0).expand(t, *audio.shape)
    return a.contiguous(), v.contiguous()


def event_batch(audio: torch.Tensor, visual: torch.Tensor, train: bool, gen: torch.Generator,
                noise_snr: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B,T,64], visual [B,T,2,28,28] counts -> time-first [T,B,1,28,28] and [T,B,2,28,28]."""
    b, t = audio.shape[:2]
    a = F.interpolate(audio.reshape(b * t, 1, 8, 8), size=(28, 28), mode="bilinear", align_corners=False)
    a = a.view(b, t, 1, 28, 28).transpose(0, 1)
    v = visual
    if train:
        v = random_crop_pad(v, 4, gen)
    v = (v - EVENT_MEAN) / EVENT_STD
    if noise_snr is not None:
        v = add_noise_snr(v, noise_snr, gen)
    return a.contiguous(), v.transpose(0, 1).contiguous()
