"""Device-side batched transforms (RandomResizedCrop, eval centre crop, noise at an SNR, event crop and
audio upsampling) and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from scmrl.train.schedule import WarmupCosine, lr_at, scaled_lr
from scmrl.data.transforms import (EVENT_MEAN, EVENT_STD, IMAGENET_MEAN, IMAGENET_STD, BatchTransform, add_noise_snr,
                              event_inputs, make_generator, measure_snr_db, random_crop_pad, random_resized_crop,
                              rrc_boxes, static_inputs, upsample_event_audio)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_random_resized_crop_boxes_follow_torchvision_ranges():
    g = make_generator("cpu", 0)
    boxes = rrc_boxes(4000, 256, 256, g)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 256).all() and (left + w <= 256).all()
    area = h * w / 256**2
    assert area.min() >= 0.07 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= 0.74 and ratio.max() <= 1.35
    assert 0.45 < area.mean() < 0.6  # uniform area in (0.08, 1), with some tries rejected at large areas
    # positions spread over the whole image
    assert left.float().std() > 20 and top.float().std() > 20


def test_random_resized_crop_shape_range_and_identity():
    g = make_generator("cpu", 1)
    x = torch.rand(8, 3, 64, 64)
    y = random_resized_crop(x, 32, g)
    assert y.shape == (8, 3, 32, 32) and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y[0], y[1])
    # a full-image crop at the same size is the image itself, or its mirror
    full = random_resized_crop(x, 64, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), antialias=False)
    for i in range(8):
        assert torch.allclose(full[i], x[i], atol=1e-5) or torch.allclose(full[i], x[i].flip(-1), atol=1e-5)
    flipped = sum(torch.allclose(full[i], x[i].flip(-1), atol=1e-5) for i in range(8))
    assert 0 < flipped < 8
    # a crop of a constant image is that constant
    c = random_resized_crop(torch.full((4, 3, 64, 64), 0.25), 32, g)
    assert torch.allclose(c, torch.full_like(c, 0.25), atol=1e-6)


def test_static_training_inputs_time_first_and_normalised():
    g = make_generator("cpu", 2)
    visual = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    audio = torch.randn(5, 1, 32, 32)
    a, v = static_inputs(audio, visual, 4, 32, True, g)
    assert a.shape == (4, 5, 1, 32, 32) and v.shape == (4, 5, 3, 32, 32)
    assert torch.equal(v[0], v[3]) and torch.equal(a[1], audio)  # repeated over T
    lo, hi = _norm(torch.zeros(3, 1, 1)), _norm(torch.ones(3, 1, 1))
    assert (v >= lo - 1e-5).all() and (v <= hi + 1e-5).all()


def test_eval_crop_equals_the_centre_crop_by_hand():
    g = make_generator("cpu", 3)
    visual = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    audio = torch.randn(3, 1, 32, 32)
    a, v = static_inputs(audio, visual, 2, 32, False, g)
    assert v.shape == (2, 3, 3, 32, 32)
    for i in range(3):
        by_hand = _norm(visual[i, 16:48, 16:48].permute(2, 0, 1).float() / 255)
        assert torch.allclose(v[1, i], by_hand, atol=1e-6)
    # frames of another size are resized to 2S (short side) first: Resize(64) + CenterCrop(32)
    big = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8)
    _, vb = static_inputs(torch.randn(2, 1, 32, 32), big, 1, 32, False, g)
    assert vb.shape == (1, 2, 3, 32, 32)


def test_one_frame_per_step_shares_the_crop_across_steps():
    g = make_generator("cpu", 4)
    frame = torch.randint(0, 256, (2, 1, 64, 64, 3), dtype=torch.uint8)
    visual = frame.expand(2, 3, 64, 64, 3).contiguous()  # the same frame at 3 steps
    _, v = static_inputs(torch.randn(2, 1, 32, 32), visual, 3, 32, True, g)
    assert v.shape == (3, 2, 3, 32, 32)
    assert torch.allclose(v[0], v[1]) and torch.allclose(v[0], v[2])


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_has_the_requested_snr_per_sample(snr):
    g = make_generator("cpu", 5)
    x = torch.randn(6, 3, 64, 64) * torch.tensor([0.1, 0.5, 1, 2, 5, 10]).view(6, 1, 1, 1) + 0.3
    y = add_noise_snr(x, snr, g)
    measured = measure_snr_db(x, y)
    assert torch.all((measured - snr).abs() < 0.5), measured


def test_noise_on_the_output_of_the_pipeline():
    g = make_generator("cpu", 6)
    visual = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    audio = torch.randn(4, 1, 32, 32)
    clean = BatchTransform("static", 2, 32)(audio, visual, False, g)[1]
    noisy_t = BatchTransform("static", 2, 32, noise_snr=5.0, noise_on="eval")
    noisy = noisy_t(audio, visual, False, g)[1]
    measured = measure_snr_db(clean[0], noisy[0])
    assert torch.all((measured - 5.0).abs() < 0.5), measured
    assert noisy_t.snr_for(True) is None and noisy_t.snr_for(False) == 5.0
    assert BatchTransform("static", 2, 32, noise_snr=5.0, noise_on="both").snr_for(True) == 5.0


def test_event_random_crop_pads_with_zeros_and_shifts_every_bin_alike():
    g = make_generator("cpu", 7)
    x = torch.rand(64, 3, 2, 28, 28) + 1.0  # strictly positive: padding shows as zeros
    y = random_crop_pad(x, 4, g)
    assert y.shape == x.shape
    offsets = set()
    for i in range(64):
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        found = [(oy, ox) for oy in range(9) for ox in range(9)
                 if torch.equal(padded[..., oy:oy + 28, ox:ox + 28], y[i])]
        assert len(found) == 1  # one window for all bins and polarities of the sample
        offsets.add(found[0])
    assert len(offsets) > 20  # offsets vary across samples
    assert (y == 0).any()


def test_event_inputs_and_audio_upsampling():
    g = make_generator("cpu", 8)
    audio = torch.rand(2, 5, 64)
    visual = torch.rand(2, 5, 2, 28, 28)
    a, v = event_inputs(audio, visual, True, g)
    assert a.shape == (5, 2, 1, 28, 28) and v.shape == (5, 2, 2, 28, 28)
    _, v_eval = event_inputs(audio, visual, False, g)
    assert torch.allclose(v_eval[1, 0], (visual[0, 1] - EVENT_MEAN) / EVENT_STD)  # no crop in evaluation
    up = upsample_event_audio(torch.full((3, 4, 64), 2.0))
    assert up.shape == (4, 3, 1, 28, 28) and torch.allclose(up, torch.full_like(up, 2.0))
    # channel c of the 64 lands in cell (c // 8, c % 8) of the 8 x 8 view
    one = torch.zeros(1, 1, 64)
    one[0, 0, 63] = 1.0
    u = upsample_event_audio(one)[0, 0, 0]
    assert u[-1, -1] == u.max() and u[0, 0] == 0


def test_schedule_key_points():
    assert scaled_lr(128) == pytest.approx(6.25e-4)
    s = WarmupCosine(peak=6.25e-4, epochs=100, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5)
    assert s.lr(0) == pytest.approx(1e-6)
    assert s.lr(2.5) == pytest.approx(1e-6 + (6.25e-4 - 1e-6) / 2)
    assert s.lr(5) == pytest.approx(6.25e-4)
    assert s.lr(52.5) == pytest.approx((6.25e-4 + 1e-5) / 2)
    assert s.lr(100) == pytest.approx(1e-5) and s.lr(150) == pytest.approx(1e-5)
    mid = 5 + 95 * 0.25
    assert s.lr(mid) == pytest.approx(1e-5 + (6.25e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at_step(4, 26, 52) == pytest.approx(s.lr(4.5))
    lrs = [s.lr(e / 10) for e in range(1001)]
    peak_at = lrs.index(max(lrs))
    assert peak_at == 50 and all(a <= b for a, b in zip(lrs[:50], lrs[1:51]))
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))
    assert lr_at(520, 52, 100, 6.25e-4) == pytest.approx(s.lr(10))
