"""The fast static augmentation (per-sample box + antialiased bilinear resize, fused flip/normalise, inputs
expanded over T) against reference computations, and the choices that keep runs reproducible. No timing
here: the speed is measured in benchmarks/augment.py (BENCHMARKS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scmrl.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, BatchTransform, make_generator, normalize,
                                   normalize_uint8, random_resized_crop, resized_crops, rrc_boxes, static_inputs)
from scmrl.train.loaders import default_workers

BOXES = [(0, 0, 256, 256), (10, 30, 200, 150), (100, 50, 72, 90), (5, 7, 128, 128), (3, 3, 90, 200)]


def _image() -> np.ndarray:
    """A 256 x 256 RGB test frame with detail at several scales (aliasing shows when it is not filtered)."""
    yy, xx = np.mgrid[0:256, 0:256]
    smooth = np.stack([128 + 100 * np.sin(xx / 9.0), 128 + 100 * np.cos(yy / 13.0), (xx + yy) / 2], -1)
    noise = np.random.RandomState(0).randint(-20, 20, (256, 256, 3))
    return (smooth + noise).clip(0, 255).astype(np.uint8)


def test_crop_is_torchvisions_resized_crop_and_pils_bilinear_within_one_level():
    img = _image()
    x = torch.from_numpy(img)[None].permute(0, 3, 1, 2)  # channels-last strides, as the loader's batches
    batch = x.expand(len(BOXES), -1, -1, -1)
    ours = resized_crops(batch, torch.tensor(BOXES), 128, None)
    assert ours.shape == (5, 3, 128, 128) and ours.dtype == torch.uint8 and ours.is_contiguous()
    for i, (top, left, h, w) in enumerate(BOXES):
        # torchvision's tensor path: crop, then F.interpolate(bilinear, antialias) on float, rounded
        ref = F.interpolate(x[:, :, top:top + h, left:left + w].float(), size=(128, 128), mode="bilinear",
                            antialias=True, align_corners=False)[0].round()
        assert (ours[i].float() - ref).abs().max() <= 1
        # the authors' path: torchvision's PIL crop, then Pillow's bilinear resize (antialiased)
        pil = np.asarray(Image.fromarray(img[top:top + h, left:left + w]).resize((128, 128), Image.Resampling.BILINEAR))
        diff = np.abs(ours[i].permute(1, 2, 0).numpy().astype(int) - pil.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.3, (BOXES[i], diff.max(), diff.mean())
    # a box of the output size is copied as it is
    assert torch.equal(ours[3], x[0, :, 5:133, 7:135])


def test_float_input_gives_the_float_resize_and_flip_mirrors_exactly():
    x = torch.rand(2, 3, 64, 48)
    boxes = torch.tensor([(4, 2, 40, 30), (0, 0, 64, 48)])
    plain = resized_crops(x, boxes, 32, torch.tensor([False, False]))
    mirrored = resized_crops(x, boxes, 32, torch.tensor([True, False]))
    assert plain.dtype == torch.float32
    ref = F.interpolate(x[:1, :, 4:44, 2:32], size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(plain[0], ref[0])
    assert torch.equal(mirrored[0], plain[0].flip(-1)) and torch.equal(mirrored[1], plain[1])


def test_uint8_normalisation_matches_the_float_formula():
    x = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    fused = normalize_uint8(x, IMAGENET_MEAN, IMAGENET_STD)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, normalize(x.float() / 255, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-6)
    assert fused[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229, abs=1e-6)


def test_boxes_and_flips_are_drawn_as_before_boxes_then_flips():
    """The random draws did not change: a seed gives the crops and flips it gave with the grid_sample path."""
    x = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    out = random_resized_crop(x, 32, make_generator("cpu", 9))
    g = make_generator("cpu", 9)
    boxes = rrc_boxes(6, 64, 64, g)
    flips = torch.rand((6,), generator=g) < 0.5
    assert torch.equal(out, resized_crops(x, boxes, 32, flips))


def test_same_seed_same_batch_and_the_crop_generator_is_the_only_source_of_crops():
    visual = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)
    audio = torch.randn(8, 1, 32, 32)
    tf = BatchTransform("static", 4, 32)
    a1, v1 = tf(audio, visual, True, make_generator("cpu", 1, "train", 0, 0))
    a2, v2 = tf(audio, visual, True, make_generator("cpu", 1, "train", 0, 0))
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    # crops from crop_gen, whatever `gen` is (CUDA runs pass a host generator: the same crops as on CPU)
    _, v3 = tf(audio, visual, True, make_generator("cpu", 77), crop_gen=make_generator("cpu", 1, "train", 0, 0))
    assert torch.equal(v3, v1)
    _, v4 = tf(audio, visual, True, make_generator("cpu", 1, "train", 1, 0))  # another epoch: other crops
    assert not torch.equal(v4, v1)


def test_static_inputs_are_expanded_over_t_not_copied():
    g = make_generator("cpu", 3)
    visual = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    audio = torch.randn(4, 1, 32, 32)
    for train in (True, False):
        a, v = static_inputs(audio, visual, 4, 32, train, g)
        assert a.shape == (4, 4, 1, 32, 32) and v.shape == (4, 4, 3, 32, 32)
        assert a.dtype == v.dtype == torch.float32
        # stride 0 over T: the model's patch embedding runs its first stage once (scmrl.model.embedding)
        assert a.stride(0) == 0 and v.stride(0) == 0 and torch.equal(a[2], audio)
    # with noise per sample the noisy image is the same at every step, still expanded
    _, vn = static_inputs(audio, visual, 4, 32, True, g, noise_snr=5.0)
    assert vn.stride(0) == 0
    # one frame per step: a dense tensor, the same crop for all of a clip's frames
    frames = torch.randint(0, 256, (2, 1, 64, 64, 3), dtype=torch.uint8).expand(2, 3, 64, 64, 3).contiguous()
    _, vs = static_inputs(torch.randn(2, 1, 32, 32), frames, 3, 32, True, g)
    assert vs.shape == (3, 2, 3, 32, 32) and vs.is_contiguous() and torch.equal(vs[0], vs[2])


@pytest.mark.parametrize(("cpus", "processes", "cuda", "want"), [
    (2, 1, False, 2), (16, 1, False, 4), (1, 1, False, 1),  # CPU training: the model's threads share the cores
    (16, 1, True, 8), (4, 1, True, 3), (1, 1, True, 1),  # CUDA: one core for the feeding process, at most 8
    (16, 8, True, 1), (64, 4, True, 8), (16, 2, False, 4),  # per local process (torchrun)
])
def test_default_workers_from_the_cores(cpus: int, processes: int, cuda: bool, want: int):
    assert default_workers(cpus, processes, cuda) == want


def test_the_float_route_for_devices_without_a_uint8_kernel_agrees_within_one_level(monkeypatch):
    """CUDA has no uint8 antialiased kernel: there the pixels go through float (checked here on the CPU)."""
    import scmrl.data.transforms as tr

    x = torch.from_numpy(_image())[None].permute(0, 3, 1, 2).expand(len(BOXES), -1, -1, -1)
    flips = torch.tensor([True, False, True, False, True])
    native = resized_crops(x, torch.tensor(BOXES), 128, flips)
    monkeypatch.setattr(tr, "_uint8_kernel", lambda _x: False)
    via_float = resized_crops(x, torch.tensor(BOXES), 128, flips)
    assert via_float.dtype == torch.uint8
    assert (via_float.int() - native.int()).abs().max() <= 1
    resized = tr.resize_center_crop(x[:1], 32, resize=100)  # eval's Resize + CenterCrop, through float too
    assert resized.dtype == torch.uint8 and resized.shape == (1, 3, 32, 32)


def test_the_cpu_transform_gives_back_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        static_inputs(torch.randn(2, 1, 32, 32), torch.zeros(2, 64, 64, 3, dtype=torch.uint8), 2, 32, True,
                      make_generator("cpu", 0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
