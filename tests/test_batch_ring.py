"""Batches handed from DataLoader workers through reused shared-memory slots (scmrl.data.batch_ring):
the same samples as without workers, batches the caller keeps are never overwritten, few slots are made,
an epoch left half-read does not block the next, and the shuffle buffer that fills while it yields."""

from __future__ import annotations

import random

import pytest
import torch

from avdata.shards.location import open_shards
from scmrl.data.batch_ring import FREE, SlotLoader
from scmrl.data.batching import FullBatches, _shuffle_buffer, make_loader
from scmrl.data.config import StreamConfig
from scmrl.data.synthetic import make_synthetic_av_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("ring") / "shards"
    return make_synthetic_av_shards(out, n_train=150, n_val=0, n_test=45, per_shard=20, frame_shape=(32, 40))


def _cfg(train: bool) -> StreamConfig:
    return StreamConfig(kind="static", image_size=16, seed=3, train=train, with_keys=True)


def _by_key(batches) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    return {k: (a[i].clone(), v[i].clone(), int(y[i])) for a, v, y, ks in batches for i, k in enumerate(ks)}


@pytest.mark.slow
def test_worker_batches_equal_in_process_samples_and_survive_later_batches(shards):
    src = open_shards(shards)
    ref = _by_key(make_loader(src, "test", _cfg(False), 8, workers=0)[0])
    loader, _ = make_loader(src, "test", _cfg(False), 8, workers=2)
    assert isinstance(loader.loader, SlotLoader)
    # two epochs, every batch kept: a slot written again must not change a batch handed out before
    kept = [b for _ in range(2) for b in loader]
    assert sum(len(b[2]) for b in kept) == 2 * 45
    for audio, visual, labels, keys in kept:
        assert visual.dtype == torch.uint8 and visual.shape[1:] == (32, 32, 3) and audio.shape[1:] == (1, 16, 16)
        for i, k in enumerate(keys):
            assert torch.equal(audio[i], ref[k][0]) and torch.equal(visual[i], ref[k][1]) and labels[i] == ref[k][2]
    # evaluation lets go of its slots between epochs (it runs now and then)
    assert not loader.loader.ring.keep and loader.loader.cache == {}
    assert (loader.loader.ring.state == FREE).all()  # every batch taken was given back
    # training keeps a handful of slots per worker, reused: not one per batch
    train, ds = make_loader(src, "train", _cfg(True), 8, workers=2)
    for epoch in range(2):
        ds.set_epoch(epoch)
        assert sum(len(b[2]) for b in train) == 144  # 18 batches
        assert 2 <= len(train.loader.cache) <= 2 * 3


@pytest.mark.slow
def test_training_batches_are_full_and_match_the_frames_chosen_in_process(shards):
    src = open_shards(shards)
    loader, ds = make_loader(src, "train", _cfg(True), 16, workers=2)
    assert isinstance(loader, FullBatches) and isinstance(loader.loader, SlotLoader)
    ds.set_epoch(1)
    got = _by_key(loader)
    assert len(got) > 150 - 16 and all(len(b[2]) == 16 for b in loader)  # full batches only
    # the same epoch read in process: the same frame and spectrogram for every key (the frame choice is
    # seeded by seed, epoch and key, not by who reads it)
    ref_loader, ref_ds = make_loader(src, "train", _cfg(True), 16, workers=0)
    ref_ds.set_epoch(1)
    ref = _by_key(ref_loader)
    for k in got.keys() & ref.keys():
        assert torch.equal(got[k][1], ref[k][1]) and torch.equal(got[k][0], ref[k][0])


def test_an_epoch_left_half_read_does_not_block_the_next(shards):
    loader, ds = make_loader(open_shards(shards), "train", _cfg(True), 8, workers=2)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i, _ in enumerate(loader):
            if i == 1:
                break  # slots left full in flight: the workers free theirs when the next epoch begins
    ds.set_epoch(3)
    assert sum(len(b[2]) for b in loader) == 144  # 150 samples, full batches of 8


def test_pinned_batches_are_copies(shards):
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs CUDA")
    loader, _ = make_loader(open_shards(shards), "test", _cfg(False), 8, workers=2, pin_memory=True)
    assert all(b[1].is_pinned() and b[2].is_pinned() for b in loader)


def test_shuffle_buffer_filling_while_yielding_starts_early_and_keeps_every_item():
    items = list(range(1000))
    out_full = list(_shuffle_buffer(iter(items), 200, random.Random(0)))
    consumed = []

    def counting():
        for x in items:
            consumed.append(x)
            yield x

    early = _shuffle_buffer(counting(), 200, random.Random(0), initial=16)
    first = next(early)
    assert len(consumed) == 18  # out after 16 held, one for every second arrival (the full buffer: 201)
    rest = [first, *early]
    assert sorted(rest) == items and sorted(out_full) == items  # nothing lost or repeated
    assert rest != items and rest != out_full  # shuffled, differently from the fill-first order
    assert list(_shuffle_buffer(iter(items), 200, random.Random(0), initial=500)) == out_full  # capped at size


@pytest.mark.slow
def test_workers_start_an_epoch_when_its_iterator_is_made(shards):
    """The trainer makes the next epoch's iterator before evaluating: by then the workers must already be
    filling slots with that epoch's batches, and the batches must be the epoch's own (same order as made
    at the moment they are asked for)."""
    import time

    from scmrl.data.batch_ring import FULL

    src = open_shards(shards)
    ref_loader, ref_ds = make_loader(src, "train", _cfg(True), 8, workers=2)
    ref_ds.set_epoch(1)
    ref = [b[3] for b in ref_loader]
    loader, ds = make_loader(src, "train", _cfg(True), 8, workers=2)
    ds.set_epoch(0)
    assert sum(len(b[2]) for b in loader) == 144
    ds.set_epoch(1)
    batches = iter(loader)  # nothing asked for yet
    state = loader.loader.ring.state
    deadline = time.monotonic() + 60
    while not (state == FULL).any(dim=1).all() and time.monotonic() < deadline:  # each worker; no fixed wait
        time.sleep(0.02)
    assert (state == FULL).any(dim=1).all(), "the workers did not start the epoch before its first batch was asked for"
    ds.set_epoch(2)  # what the trainer does after the epoch; too late to change the one already started
    assert [b[3] for b in batches] == ref
