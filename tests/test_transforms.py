"""Device-side batched transforms and the per-rank/per-worker data split."""

from __future__ import annotations

import torch

from scmrl.data import ShardStream, StreamConfig, slot_batches
from scmrl.schedule import lr_at, scaled_lr
from scmrl.synthetic import make_synthetic_av_shards
from scmrl.transforms import (IMAGENET_MEAN, IMAGENET_STD, add_noise_snr, center_crop, event_batch,
                              random_resized_crop, static_batch)
from avdata.location import open_location


def test_eval_crop_is_the_center_crop_and_normalised():
    g = torch.Generator().manual_seed(0)
    visual = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    audio = torch.randn(3, 1, 32, 32)
    a, v = static_batch(audio, visual, t=4, size=32, train=False, gen=g)
    assert a.shape == (4, 3, 1, 32, 32) and v.shape == (4, 3, 3, 32, 32)
    by_hand = (visual[0, :, 16:48, 16:48].float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(v[2, 0], by_hand, atol=1e-6) and torch.equal(v[0], v[3])


def test_random_resized_crop_shapes_and_range():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 64, 64)
    y = random_resized_crop(x, 32, g)
    assert y.shape == (8, 3, 32, 32) and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y[0], y[1])
    # a full-area crop without flip is a plain resize
    full = random_resized_crop(x, 64, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(full, x, atol=1e-5)


def test_noise_has_the_requested_snr():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 64, 64) * 2
    y = add_noise_snr(x, 10.0, g)
    snr = 10 * torch.log10(x.pow(2).mean(dim=(1, 2, 3)) / (y - x).pow(2).mean(dim=(1, 2, 3)))
    assert torch.all((snr - 10).abs() < 0.5)


def test_event_batch():
    g = torch.Generator().manual_seed(3)
    audio = torch.rand(2, 5, 64)
    visual = torch.rand(2, 5, 2, 28, 28)
    a, v = event_batch(audio, visual, True, g)
    assert a.shape == (5, 2, 1, 28, 28) and v.shape == (5, 2, 2, 28, 28)
    _, v_eval = event_batch(audio, visual, False, g)
    assert torch.allclose(v_eval[1, 0], (visual[0, 1] - 0.1307) / 0.3081)


def test_schedule():
    assert scaled_lr(128) == 6.25e-4
    assert lr_at(0, 10, 100, 1e-3) == 1e-6
    assert abs(lr_at(50, 10, 100, 1e-3) - 1e-3) < 1e-12
    assert abs(lr_at(1000, 10, 100, 1e-3) - 1e-5) < 1e-12


def test_every_sample_once_across_ranks_and_workers(tmp_path):
    out = make_synthetic_av_shards(tmp_path / "s", 70, 0, 0, side=16, per_shard=16)
    loc = open_location(out)
    keys = []
    for rank in range(2):
        for worker in range(2):
            ds = ShardStream(loc, "train", StreamConfig(kind="static", image_size=16, shuffle_buffer=8), rank, 2)
            ds._slots = lambda r=rank, w=worker: (r * 2 + w, 4)
            ds.set_epoch(1)
            keys += [int(lbl) for *_, lbl in ds]
            assert sum(1 for _ in ds) in (17, 18)
    assert len(keys) == 70
    # frame choice is reproducible per (seed, epoch) and changes across epochs
    ds = ShardStream(loc, "train", StreamConfig(kind="static", image_size=16, shuffle_buffer=4))
    ds.set_epoch(0)
    first = [v for _, v, _ in ds]
    ds.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, [v for _, v, _ in ds]))
    assert slot_batches(70, 0, 2, 2, 8) == 4 and slot_batches(70, 1, 2, 2, 8) == 4
