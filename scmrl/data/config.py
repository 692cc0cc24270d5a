"""What a shard stream delivers: the kind of data, sizes, time steps, seeding, training mode, retries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamConfig:
    kind: str  # static | events
    image_size: int = 128  # spectrogram side (static data); the model's input side
    base_size: int | None = None  # frame side handed to the device (default 2 * image_size = 256)
    time_steps: int = 4
    frames_per_step: bool = False
    seed: int = 42
    train: bool = False  # training: per-epoch frame choice, shuffled shard order, interleave and buffer
    shuffle_buffer: int | None = None  # samples, for the whole loader of a rank; None: default_shuffle_buffer
    # training with workers: batches drawn from one buffer over all workers (MixedBatches)? None: only for
    # shards not marked as written in random order (scmrl.data.batching.make_loader)
    mix_across_workers: bool | None = None
    interleave: int = 4  # training: shards a slot reads at once, samples drawn from them at random (1 for
    # shards marked as written in random order)
    retries: int = 4  # attempts after the first failure to open/read a shard
    backoff: float = 0.5  # seconds before the first retry, doubled each time (max 8 s)
    with_keys: bool = False
    spec_resize: str = "linear"  # linear | pil-bilinear (scmrl.data.spec_resize)
    # training's one frame per clip: drawn anew every epoch (per-epoch), or the clip's one seeded frame for
    # the whole run (per-clip, the authors' choice made once at preprocessing; the frame evaluation uses)
    train_frame: str = "per-epoch"

    @property
    def frame_side(self) -> int:
        return self.base_size or 2 * self.image_size
