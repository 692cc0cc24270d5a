"""Data order: `avdata prepare` writes every split in seeded random order, and the trainer's batches mix classes
like a random permutation of the split, for each recipe's generated data, with 0, 2 and 4 DataLoader workers
and two ranks; also on shards sorted by class (what `prepare` wrote before, or shards from elsewhere).

Both checks compare a statistic with its distribution over random permutations of the same labels (computed
here with a fixed seed) and accept it within 5 standard deviations of that distribution's mean. Why 5: for a
truly random order the statistic is a sum/mean over many adjacent pairs or batches, close to normal, so a
fair shuffler fails with probability below 1e-6 per check (the checks are deterministic anyway: fixed
seeds); and the orders the tests are meant to catch fail the same check (asserted below for the class-sorted
order, as the tests' power: it lies 7 to 40 standard deviations away).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from avdata.shards.manifest import Manifest, SplitEntry
from tests.manifests import load_manifest
from avdata.prepare.engine import PrepareSettings, prepare
from avdata.datasets.registry import get_recipe
from avdata.datasets.cremad.recipe import CremadOptions, all_clips
from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions
from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions
from avdata.shards.tar import shard_name, write_shard
from avdata.datasets.cremad.synth import make_cremad_raw
from avdata.datasets.mnistdvs_ntidigits.synth import make_mnistdvs_raw, make_ntidigits_h5
from avdata.datasets.urbansound8k_av.synth import make_urbansound_raw
from avdata.shards.location import open_shards
from scmrl.data.batching import make_loader
from scmrl.data.config import StreamConfig
from scmrl.data.batching import FullBatches, MixedBatches

RECIPES = ["mnistdvs-ntidigits", "urbansound8k-av", "cremad"]
PER_SHARD = 16
SIGMAS = 5.0  # see the module docstring


def _make(recipe: str, root: Path) -> Path:
    raw, out = root / "raw", root / "shards"
    if recipe == "mnistdvs-ntidigits":  # 10 train samples per class
        make_mnistdvs_raw(raw, per_class=20, scales=(16,), n_events=500)
        make_ntidigits_h5(raw, per_class=4)
        opts = EventOptions(bins=4, per_class=20, val_fraction=0.0)
    elif recipe == "urbansound8k-av":  # 9 train samples per class
        make_urbansound_raw(raw, per_class=14, unpaired=0, image_size=(24, 16), seconds=0.2)
        opts = UrbanSoundOptions(short_side=16, val_fraction=0.0)
    else:  # 90 clips of the published train split, of many actors
        clips = random.Random(0).sample(sorted(c for c, s in all_clips().items() if s == "train"), 90)
        make_cremad_raw(raw, clips=clips, width=32, height=24, fps=4, duration_range=(1.0, 1.1))
        opts = CremadOptions(short_side=16, val_fraction=0.0)
    prepare(get_recipe(recipe), raw, out, opts, PrepareSettings(samples_per_shard=PER_SHARD, jobs=1, progress=False))
    shutil.rmtree(raw)
    return out


def _class_sorted_copy(src: Path, dst: Path) -> Path:
    """The same train samples rewritten sorted by class (then key), as `prepare` used to write them."""
    m = Manifest.load(src)
    urls = [str(src / s.file) for s in m.splits["train"].shards]
    samples = sorted(((int(s["cls"]), s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
                      for s in wds.WebDataset(urls, shardshuffle=False)), key=lambda t: t[:2])
    dst.mkdir(parents=True)
    shards = [write_shard(dst / shard_name("train", i // PER_SHARD),
                          [(key, fields) for _, key, fields in samples[i:i + PER_SHARD]])
              for i in range(0, len(samples), PER_SHARD)]
    m.splits = {"train": SplitEntry.of_shards(shards, m.splits["train"].class_counts)}
    m.save(dst)
    return dst


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    return {r: _make(r, tmp_path_factory.mktemp(r)) for r in RECIPES}


def _train_in_file_order(out: Path) -> list[dict]:
    m = load_manifest(out)
    urls = [str(out / s["file"]) for s in m["splits"]["train"]["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())


def _adjacent_same(values: list) -> int:
    return sum(a == b for a, b in zip(values, values[1:]))


def _null(values: list, stat, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    arr = np.array(values, dtype=object)
    draws = [stat(list(arr[rng.permutation(len(arr))])) for _ in range(n)]
    return float(np.mean(draws)), float(np.std(draws))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_train_shards_are_in_seeded_random_order(prepared, recipe):
    samples = _train_in_file_order(prepared[recipe])
    assert len(samples) == {"mnistdvs-ntidigits": 100, "urbansound8k-av": 90, "cremad": 90}[recipe]
    assert load_manifest(prepared[recipe])["options"]["seed"] == 42  # the order's seed is recorded
    groups = {"class": [int(s["cls"]) for s in samples]}
    if recipe == "cremad":  # the recipe lists clips actor by actor
        groups["actor"] = [s["json"]["actor"] for s in samples]
    for what, values in groups.items():
        mean, sd = _null(values, _adjacent_same)
        observed = _adjacent_same(values)
        assert abs(observed - mean) <= SIGMAS * sd, (what, observed, mean, sd)
        sorted_order = _adjacent_same(sorted(values))  # the test's power: the old listing order fails it
        assert sorted_order - mean > SIGMAS * sd, (what, sorted_order, mean, sd)


def _batch_stats(batches: list[list[int]]) -> tuple[float, float]:
    """Mean over batches of the largest class's share, and of the number of distinct classes."""
    top = [max(Counter(b).values()) / len(b) for b in batches]
    distinct = [len(set(b)) for b in batches]
    return float(np.mean(top)), float(np.mean(distinct))


def _epoch_labels(out: Path, workers: int, world: int, batch: int, buffer: int | None, epoch: int = 1):
    src = open_shards(out)
    kind = src.kind
    per_rank = []
    for rank in range(world):
        cfg = StreamConfig(kind=kind, image_size=8, base_size=16, time_steps=4, seed=3, train=True,
                           shuffle_buffer=buffer, with_keys=True)
        loader, ds = make_loader(src, "train", cfg, batch, workers, rank, world)
        ds.set_epoch(epoch)
        per_rank.append([(b[2].tolist(), b[3]) for b in loader])
    return src, per_rank


@pytest.mark.slow
# 4 workers on purpose (the order must not depend on the count), more than a 2-core CI machine suggests
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("layout", ["prepared", "class-sorted"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_batches_mix_classes_like_a_random_permutation(prepared, recipe, layout, tmp_path):
    out = prepared[recipe] if layout == "prepared" else _class_sorted_copy(prepared[recipe], tmp_path / "sorted")
    batch = 12
    # a buffer of a third of the split: the interleaved reading and the one buffer over all workers do the
    # mixing, not a buffer holding the whole split
    n = open_shards(out).num_samples("train")
    for workers, world in [(0, 1), (2, 1), (4, 1), (2, 2)]:
        src, per_rank = _epoch_labels(out, workers, world, batch, buffer=n // 3)
        keys = [k for rank in per_rank for _, ks in rank for k in ks]
        assert len(keys) == len(set(keys)) and len(keys) > n - world * batch  # each sample at most once
        for rank in per_rank:
            batches = [labels for labels, _ in rank]
            assert batches and all(len(b) == batch for b in batches)
            labels = [x for b in batches for x in b]

            def stats(seq: list) -> tuple[float, float]:
                return _batch_stats([seq[i:i + batch] for i in range(0, len(seq), batch)])

            rng = np.random.default_rng(1)
            draws = np.array([stats(list(rng.permutation(labels))) for _ in range(1000)])
            mean, sd = draws.mean(0), draws.std(0)
            observed = np.array(stats(labels))
            assert np.all(np.abs(observed - mean) <= SIGMAS * sd), (workers, world, observed, mean, sd)
            # the test's power: batches of the class-sorted order are far outside
            assert np.any(np.abs(np.array(stats(sorted(labels))) - mean) > SIGMAS * sd)


@pytest.mark.slow
def test_batch_order_is_reproducible_and_new_each_epoch(prepared):
    out = prepared["mnistdvs-ntidigits"]
    _, a = _epoch_labels(out, 2, 1, 12, None, epoch=1)
    _, b = _epoch_labels(out, 2, 1, 12, None, epoch=1)
    _, c = _epoch_labels(out, 2, 1, 12, None, epoch=2)
    assert a == b and a != c
    for run in (a, c):  # 8 batches of 12 of the 100 samples, each at most once; which 4 are left over varies
        keys = [k for _, ks in run[0] for k in ks]
        assert len(keys) == len(set(keys)) == 96


@pytest.mark.slow
def test_workers_batch_alone_only_shards_written_shuffled(prepared, tmp_path):
    """Shards whose manifest marks them as written in random order are batched in each worker (its own
    buffer, no copy in the main process); others, with workers, through one buffer over all workers."""
    out = prepared["mnistdvs-ntidigits"]
    sorted_ = _class_sorted_copy(out, tmp_path / "sorted")
    assert load_manifest(out)["splits"]["train"]["order"] == "shuffled"
    assert "order" not in load_manifest(sorted_)["splits"]["train"]

    def loader(shards: Path, workers: int, across: bool | None = None):
        cfg = StreamConfig(kind="events", time_steps=4, train=True, mix_across_workers=across)
        return make_loader(open_shards(shards), "train", cfg, 12, workers)[0]

    assert isinstance(loader(out, 2), FullBatches) and isinstance(loader(sorted_, 2), MixedBatches)
    assert isinstance(loader(sorted_, 0), FullBatches)  # one stream: its buffer is the rank's
    assert isinstance(loader(out, 2, across=True), MixedBatches)
    assert isinstance(loader(sorted_, 2, across=False), FullBatches)
    # the cross-worker path is reproducible too, and new each epoch
    _, a = _epoch_labels(sorted_, 2, 1, 12, None, epoch=1)
    _, b = _epoch_labels(sorted_, 2, 1, 12, None, epoch=1)
    _, c = _epoch_labels(sorted_, 2, 1, 12, None, epoch=2)
    assert a == b and a != c
