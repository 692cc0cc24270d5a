"""The shard stream: every sample exactly once per epoch across ranks and workers, full training batches,
per-epoch seeded frame choice, the CPU-side resizing, and the ways to name shards."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from avdata.errors import AvdataError
from avdata.shards.manifest import Manifest, SplitEntry
from avdata.datasets.recipe import cls_bytes, sample_json
from avdata.shards.npy import encode_npy
from avdata.shards.tar import shard_name, write_shard
from avdata.shards.location import open_shards
from avdata.shards.npy import decode_npy_view
from scmrl.data.batching import make_loader
from scmrl.data.decode import choose_frames
from scmrl.data.partition import slot_plan
from scmrl.data.config import StreamConfig
from scmrl.data.stream import ShardStream
from scmrl.data.synthetic import make_synthetic_av_shards


def _frame_shards(out: Path, n: int, per_shard: int, frames: int = 5, side: int = 64) -> Path:
    """Static shards whose frame k is filled with the value 10 * (k + 1): the picked frame can be read back."""
    rng = np.random.default_rng(0)
    m = Manifest("frames-test", ["a", "b"], {"cls": {}, "json": {}, "frames.npy": {}, "spec.npy": {}})
    shards = []
    for j in range(0, n, per_shard):
        samples = []
        for i in range(j, min(n, j + per_shard)):
            img = np.stack([np.full((side, side + 20, 3), 10 * (k + 1), np.uint8) for k in range(frames)])
            spec = rng.normal(size=(40, 17 + i % 5)).astype(np.float32)
            samples.append((f"clip{i:04d}", {"cls": cls_bytes(i % 2), "json": sample_json({"i": i}),
                                             "frames.npy": encode_npy(img), "spec.npy": encode_npy(spec)}))
        shards.append(write_shard(out / shard_name("train", j // per_shard), samples))
    m.splits["train"] = SplitEntry.of_shards(shards, {"a": (n + 1) // 2, "b": n // 2})
    m.save(out)
    return out


def _keys(src, split: str, world: int, workers: int, epoch: int, train: bool) -> list[list[str]]:
    per_slot = []
    for rank in range(world):
        cfg = StreamConfig(kind="static", image_size=16, seed=7, train=train, shuffle_buffer=16, with_keys=True)
        ds = ShardStream(src, split, cfg, rank, world)
        ds.set_epoch(epoch)
        for w in range(workers):
            keys = [s[3] for s in ds.iter_slot(w, workers)]
            assert len(keys) == ds.slot_samples(rank, w, workers)
            per_slot.append(keys)
    return per_slot


@pytest.mark.slow
@pytest.mark.parametrize("n_shards", [7, 3, 1])  # shard level / ranks by shard, workers by sample / sample level
@pytest.mark.parametrize("train", [True, False])
def test_every_sample_exactly_once_across_2_ranks_x_2_workers(tmp_path, n_shards, train):
    n = 7 * 9 + 4
    out = make_synthetic_av_shards(tmp_path / "s", n, 0, 0, frame_shape=(32, 40), per_shard=-(-n // n_shards))
    src = open_shards(out)
    assert len(src.shards("train")) == n_shards
    slots = _keys(src, "train", 2, 2, epoch=3, train=train)
    union = [k for s in slots for k in s]
    assert len(union) == n and set(union) == {f"train_{i:06d}" for i in range(n)}
    assert all(len(s) > 0 for s in slots)
    if train:  # another epoch: the same set; a different order when there are shards to shuffle and
        # interleave (with one shard the batches are mixed by the shuffle buffers of make_loader alone)
        again = _keys(src, "train", 2, 2, epoch=4, train=True)
        assert sorted(k for s in again for k in s) == sorted(union) and (again != slots or n_shards == 1)


def test_slot_plan_regimes():
    counts = [10] * 8
    assert slot_plan(counts, 1, 2, 1, 2) == ([3, 7], 1, 0)  # rank 1 takes 1::2, its worker 1 takes every 2nd
    assert slot_plan(counts[:3], 0, 2, 1, 2) == ([0, 2], 2, 1)  # workers split a rank's shards by sample
    assert slot_plan(counts[:1], 1, 2, 0, 2) == ([0], 4, 2)  # every slot reads all, keeps every 4th


def test_what_dealing_the_split_to_processes_changes_is_said(tmp_path):
    """Whole shards go to each process: 5 shards over 2 processes make 3 : 2 (6 and 4 batches of 16), so 2 of
    the 6 steps train on one process's batch alone; 16 processes at batch 128 drop a third of CREMA-D's split;
    and --batch-size is per process. One process at the recipe's drop-last says nothing."""
    from scmrl.train.loaders import share_warnings

    src = open_shards(make_synthetic_av_shards(tmp_path / "s", 160, 0, 0, per_shard=32))
    ds = ShardStream(src, "train", StreamConfig(kind="static", train=True), 0, world=2)
    shares = sorted(ds.rank_samples(r, workers=2) for r in range(2))
    assert shares == [64, 96]
    uneven, global_batch = share_warnings(shares, 16, batch_given=False)
    assert "unequal shares of the train split (64 to 96 samples" in uneven and "in 2 of the 6 steps" in uneven
    assert "smaller than 32" in uneven and "--samples-per-shard" in uneven
    assert global_batch.startswith("global batch 32: --batch-size is per process (16 x 2 processes)")
    assert "pass --batch-size 64" in global_batch
    dropped, = share_warnings([6016 // 16] * 16, 128, batch_given=True)
    assert dropped.startswith("each epoch trains on 4,096 of the 6,016 training samples") and "(32% of" in dropped
    assert share_warnings([36], 8, batch_given=False) == [] and share_warnings([6016], 128, False) == []
    assert share_warnings([1030, 1024], 128, batch_given=True) == []


@pytest.mark.slow
def test_a_real_dataloader_with_two_workers_and_full_batches(tmp_path):
    out = make_synthetic_av_shards(tmp_path / "s", 150, 0, 37, frame_shape=(32, 40), per_shard=20)
    src = open_shards(out)
    seen = Counter()
    for rank in range(2):
        cfg = StreamConfig(kind="static", image_size=16, seed=1, train=True, shuffle_buffer=32, with_keys=True)
        loader, ds = make_loader(src, "train", cfg, batch_size=16, workers=2, rank=rank, world=2)
        ds.set_epoch(0)
        batches = list(loader)
        assert all(len(b[2]) == 16 for b in batches)  # only full batches in training
        assert len(batches) == ds.batches_per_rank(16, 2)[rank] == ds.rank_samples(rank, 2) // 16
        audio, visual, labels, keys = batches[0]
        assert audio.shape == (16, 1, 16, 16) and audio.dtype == torch.float32
        assert visual.shape == (16, 32, 32, 3) and visual.dtype == torch.uint8 and labels.dtype == torch.long
        seen.update(k for b in batches for k in b[3])
    assert max(seen.values()) == 1 and len(seen) > 150 - 2 * 16  # each rank drops < one batch
    # evaluation: no drop, every sample once over ranks and workers
    eval_keys = Counter()
    for rank in range(2):
        loader, _ = make_loader(src, "test", StreamConfig(kind="static", image_size=16, with_keys=True), 8,
                                workers=2, rank=rank, world=2)
        eval_keys.update(k for b in loader for k in b[3])
    assert len(eval_keys) == 37 and max(eval_keys.values()) == 1


def test_frame_choice_is_seeded_per_epoch_and_fixed_in_evaluation(tmp_path):
    src = open_shards(_frame_shards(tmp_path / "f", 40, 10))

    def picked(epoch: int, train: bool, seed: int = 42, per_step: bool = False,
               frame: str = "per-epoch") -> dict[str, list[int]]:
        cfg = StreamConfig(kind="static", image_size=32, seed=seed, train=train, shuffle_buffer=8, with_keys=True,
                           frames_per_step=per_step, time_steps=3, train_frame=frame)
        ds = ShardStream(src, "train", cfg)
        ds.set_epoch(epoch)
        out = {}
        for audio, visual, label, key in ds.iter_slot():
            assert visual.shape == ((3, 64, 64, 3) if per_step else (64, 64, 3))  # centre square, 2 * 32
            assert audio.shape == (1, 32, 32)
            vals = visual.reshape(visual.shape[0], -1)[:, 0] if per_step else visual.reshape(1, -1)[:, 0]
            out[key] = [int(v) // 10 - 1 for v in vals]
        return out

    e0, e0b, e1 = picked(0, True), picked(0, True), picked(1, True)
    assert e0 == e0b  # reproducible
    assert sum(e0[k] != e1[k] for k in e0) > 20  # a new draw every epoch
    assert len({f for v in e0.values() for f in v}) == 5  # every stored frame gets used
    assert picked(0, True, seed=1) != e0
    assert picked(0, False) == picked(5, False)  # evaluation: one fixed frame per clip
    # --protocol reference: training shows each clip's one frame every epoch, as the authors' preprocessing
    # chose it once; the frame evaluation shows
    assert picked(0, True, frame="per-clip") == picked(3, True, frame="per-clip") == picked(0, False)
    steps = picked(2, True, per_step=True)
    assert all(v == sorted(v) and len(set(v)) == 3 for v in steps.values())
    assert set(map(tuple, picked(0, False, per_step=True).values())) == {(0, 2, 4)}  # evenly spaced
    assert choose_frames(1, "k", 0, 3, True, None) == [0]


def test_frames_of_another_size_are_centre_cropped_and_resized(tmp_path):
    src = open_shards(_frame_shards(tmp_path / "f", 4, 4, frames=1, side=100))
    cfg = StreamConfig(kind="static", image_size=32, train=False)
    audio, visual, label = next(iter(ShardStream(src, "train", cfg).iter_slot()))
    assert visual.shape == (64, 64, 3) and int(visual[0, 0, 0]) == 10
    assert decode_npy_view(encode_npy(np.arange(6).reshape(2, 3))).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_event_samples_keep_their_bins(tmp_path):
    out = make_synthetic_av_shards(tmp_path / "e", 8, 0, 0, kind="events", bins=4)
    src = open_shards(out)
    audio, visual, label = next(iter(ShardStream(src, "train", StreamConfig(kind="events", time_steps=4)).iter_slot()))
    assert audio.shape == (4, 64) and visual.shape == (4, 2, 28, 28) and visual.dtype == torch.float32
    a2, v2, _ = next(iter(ShardStream(src, "train", StreamConfig(kind="events", time_steps=2)).iter_slot()))
    assert torch.equal(v2, visual.view(2, 2, 2, 28, 28).sum(1)) and torch.equal(a2, audio.view(2, 2, 64).sum(1))
    with pytest.raises(AvdataError, match="divide"):
        ShardStream(src, "train", StreamConfig(kind="events", time_steps=3))


def test_shards_named_as_tar_files(tmp_path):
    out = make_synthetic_av_shards(tmp_path / "s", 40, 0, 20, frame_shape=(32, 40), per_shard=16)
    tars = sorted(str(p) for p in out.glob("*.tar"))
    src = open_shards(",".join(tars))  # manifest beside them
    assert src.num_samples("train") == 40 and src.num_samples("test") == 20 and src.classes[0] == "v0a0"
    assert open_shards(str(out / "train-*.tar")).splits == ["train"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for t in tars:
        shutil.copy(t, bare)
    with pytest.raises(AvdataError, match="class names"):
        open_shards(str(bare / "*.tar"))
    src = open_shards(str(bare / "*.tar"), classes=["v0a0", "v0a1", "v1a0", "v1a1"])
    assert src.kind == "static" and src.num_samples("train") == 40 and src.num_samples("test") == 20
    ds = ShardStream(src, "test", StreamConfig(kind="static", image_size=16, with_keys=True))
    assert len(list(ds.iter_slot())) == 20
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(tars[0], odd / "x.tar")
    with pytest.raises(AvdataError, match="split"):
        open_shards([str(odd / "x.tar")], classes=["a"])


def test_a_stream_cut_mid_shard_is_reopened_without_repeating_samples(tmp_path):
    from tests.httpserver import serve_dir

    out = make_synthetic_av_shards(tmp_path / "s", 48, 0, 0, frame_shape=(32, 40), per_shard=24)
    size = (out / "train-000000.tar").stat().st_size
    with serve_dir(out, drop_after=size // 2, only="train-*.tar") as url:  # first request of each shard breaks
        src = open_shards(url)
        cfg = StreamConfig(kind="static", image_size=16, with_keys=True, retries=2, backoff=0.01)
        keys = [s[3] for s in ShardStream(src, "train", cfg).iter_slot()]
        assert len(url.requests_for("/train-000000.tar")) == 2
    assert sorted(keys) == [f"train_{i:06d}" for i in range(48)]


def test_a_shard_replaced_by_another_version_mid_run_stops_the_run(tmp_path):
    """The manifest is read once, when a run starts; a push or prepare of another version into the same place
    then replaced a shard (another seed: other samples, the same count), and the later epochs trained on it
    silently. A shard whose size is not the manifest's is refused at once, over http and on disk."""
    from scmrl.data.failures import ShardReadError
    from tests.httpserver import serve_dir

    out = make_synthetic_av_shards(tmp_path / "s", 48, 0, 0, frame_shape=(32, 40), per_shard=24)
    cfg = StreamConfig(kind="static", image_size=16, with_keys=True, retries=3, backoff=0.01)
    with serve_dir(out) as url:
        remote, local = open_shards(url), open_shards(out)
        assert len(list(ShardStream(remote, "train", cfg).iter_slot())) == 48
        other = make_synthetic_av_shards(tmp_path / "o", 48, 0, 0, frame_shape=(32, 48), per_shard=24, seed=5)
        shutil.copy(other / "train-000001.tar", out / "train-000001.tar")
        for src, shown in ((remote, f"{url}/train-000001.tar"), (local, str(out / "train-000001.tar"))):
            with pytest.raises(ShardReadError, match=rf"shard {shown} holds [\d,]+ bytes, not the [\d,]+ its "
                                                     r"manifest \(read when the run started\) gives"):
                list(ShardStream(src, "train", cfg).iter_slot())
        assert len(url.requests_for("/train-000001.tar")) == 2  # read once per stream: never retried


def test_a_shard_replaced_at_the_same_size_mid_run_stops_the_run(tmp_path):
    """The size check misses another version of the same size (fixed-size frames, another seed): the trainer
    pins each local shard's file when the run starts, and a shard that is another file since is hashed and
    refused unless it holds the manifest's bytes (a touched file or an identical copy reads on)."""
    import os

    from scmrl.data.failures import ShardReadError

    import tarfile

    out = make_synthetic_av_shards(tmp_path / "s", 48, 0, 0, frame_shape=(32, 40), per_shard=24)
    shard = out / "train-000001.tar"
    with tarfile.open(shard) as tar:  # another version of the same size: one pixel of the last member changed
        last = tar.getmembers()[-1]
    other = bytearray(shard.read_bytes())
    other[last.offset_data + last.size - 1] ^= 0xFF
    cfg = StreamConfig(kind="static", image_size=16, with_keys=True, retries=3, backoff=0.01)
    src = open_shards(out)
    src.pin(["train"])
    first = [s[3] for s in ShardStream(src, "train", cfg).iter_slot()]
    assert len(first) == 48

    os.utime(shard, ns=(1, 1))  # touched: another mtime, the same bytes
    copy = out / "train-000000.tar.new"  # and renamed over: another file, the same bytes
    shutil.copy(out / "train-000000.tar", copy)
    os.replace(copy, out / "train-000000.tar")
    assert [s[3] for s in ShardStream(src, "train", cfg).iter_slot()] == first

    shard.write_bytes(bytes(other))  # rewritten in place at the same size
    with pytest.raises(ShardReadError, match=rf"shard {shard} was replaced since the run started"):
        list(ShardStream(src, "train", cfg).iter_slot())
    assert open_shards(out).pinned == {}  # only a run's own location pins (remote ones never)


def test_npy_header_fast_path_matches_numpy() -> None:
    import io

    import numpy as np

    from avdata.shards.npy import _NPY_HEADER_RE, decode_npy_view, npy_header as _npy_header

    arrays = [np.zeros((3, 256, 341, 3), np.uint8), np.arange(12, dtype=">f4").reshape(3, 4), np.float64(3.5),
              np.zeros((5,), np.int16), np.asfortranarray(np.ones((2, 3))), np.zeros((0, 4), np.float32)]
    for arr in arrays:
        buf = io.BytesIO()
        np.save(buf, arr)
        data = buf.getvalue()
        bio = io.BytesIO(data)
        np.lib.format.read_magic(bio)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(bio)
        assert _NPY_HEADER_RE.match(data) is not None  # numpy's own header takes the fast path
        assert _npy_header(data) == (shape, fortran, dtype, bio.tell())
        back = decode_npy_view(data)
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
