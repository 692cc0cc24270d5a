"""Samples to tensors: one adapter per kind of data (what each holds: docs/reference.md §3), with the frame
choice and crop of the static kind. CPU work per sample is small on purpose; augmentation runs batched on
the device (`scmrl.data.transforms`).

* static (`frames.npy` uint8 [K, H, W, 3] or K `frames.<i>.jpg` members, `spec.npy` float32 or float16
  [F, T]): the frame is picked from a zero-copy view of the stored array, or only its JPEG is read and
  decoded (training: a random one of the clip's real frames, the json's ``num_frames`` of the K stored
  (the rest repeat the last one; older shards without it: all K), drawn anew every epoch from
  (seed, epoch, key), or with ``train_frame="per-clip"`` (`--protocol reference`) the clip's one frame, as
  evaluation uses it; evaluation: one fixed seeded frame per clip (seed, key); `frames_per_step`: one
  frame per time step, sorted random in training, evenly spaced in evaluation). The centre square of
  side = the frame's short side is cut and resized to `base_size` x `base_size` (default 256, the
  stored short side, so normally no resize happens; cv2 INTER_AREA when shrinking, INTER_LINEAR when
  enlarging). Choice documented: the reference applies RandomResizedCrop to the whole 256 x 341 frame;
  here training crops are drawn from its centre 256 x 256 square, which keeps batches fixed-size without
  padding. Evaluation is unchanged by this: Resize(256) + CenterCrop(128) lies inside that square.
  The spectrogram is resized as an image to `image_size` x `image_size` (128 x 128) with OpenCV's
  bilinear interpolation, or, with `spec_resize="pil-bilinear"` (`--protocol reference`), with
  Pillow's antialiased bilinear filter as the authors' loader does (`scmrl.data.spec_resize`).
  Shards come from strangers: frames that are not uint8 with no empty side, a spectrogram that is not a
  non-empty float [F, T] or holds NaN or infinities, and event counts that are not unsigned are a
  FieldError naming the field (the stream names the shard and sample), never other pixels or a NaN loss.
* events (`visual.npy` uint16 [T, 2, 28, 28], `audio.npy` uint16 [T, 64]): the stored bins as
  float32 (when the model's T divides the stored bins, adjacent bins are summed down to T).
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from avdata.errors import FieldError
from avdata.shards.frames import is_jpeg_frame, jpeg_frame_names, real_frame_count
from avdata.shards.jpeg import decode_jpeg
from avdata.shards.npy import MAX_NPY_HEADER, decode_npy_view, npy_header
from avdata.shards.reader import MemberSlice

from scmrl.data.config import StreamConfig
from avdata.rng import seeded_rng
from scmrl.data.spec_resize import resize_spectrogram

__all__ = ["ADAPTERS", "StaticAdapter", "EventAdapter", "frame_reader", "center_square", "choose_frames"]


def frame_reader(sample: dict[str, Any]) -> tuple[int, Callable[[int], np.ndarray]]:
    """(K, frame(i) -> [H, W, 3]) of a sample's stored frames, in either layout (`avdata.shards.frames`):
    ``frames.npy`` ([K, H, W, 3], or one [H, W, 3] frame) or K ``frames.<i>.jpg`` members, of which
    only the ones asked for are read (when left in the file) and decoded."""
    if "frames.npy" not in sample:
        names = jpeg_frame_names(sample)
        if not names:
            raise FieldError("no frames: neither a frames.npy member nor frames.<i>.jpg members")
        return len(names), lambda i: _jpeg_frame(sample[names[i]])
    return npy_frame_reader(sample["frames.npy"])


def _jpeg_frame(field: bytes | MemberSlice) -> np.ndarray:
    return decode_jpeg(field.read_array(0, field.size) if isinstance(field, MemberSlice) else field)


def _check_frames(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Stored frames are uint8 [H, W, 3] or [K, H, W, 3] with no empty side; anything else is refused
    before it is read (another dtype would reach the batch as other pixel values, an empty frame OpenCV's
    resize as an assertion)."""
    if len(shape) not in (3, 4) or shape[-1] != 3 or 0 in shape or dtype != np.uint8:
        raise FieldError(f"{name}: frames of shape {shape} and dtype {dtype}, not uint8 [K, H, W, 3] with K, H, W >= 1")


def _check_spec(spec: np.ndarray) -> None:
    """A spectrogram is a float [F, T] with both sides >= 1 (a stored one is float32 or float16)."""
    if spec.ndim != 2 or 0 in spec.shape or spec.dtype.kind != "f":
        raise FieldError(f"spec.npy of shape {spec.shape} and dtype {spec.dtype}, not float [F, T]")


def npy_frame_reader(field: bytes | MemberSlice) -> tuple[int, Callable[[int], np.ndarray]]:
    """`frame_reader` of a ``frames.npy`` field. For a member left in the file only the frames asked
    for are read (a third of the bytes for K=3)."""
    if isinstance(field, MemberSlice):
        head = field.read(0, min(field.size, MAX_NPY_HEADER))
        shape, fortran, dtype, offset = npy_header(head)
        _check_frames(tuple(shape), dtype, field.name)
        if not fortran and len(shape) == 4:
            step = int(np.prod(shape[1:])) * dtype.itemsize
            if offset + shape[0] * step != field.size:
                raise FieldError(f"{field.name}: {field.size} bytes do not hold an array of shape {shape}")
            return shape[0], lambda i: field.read_array(offset + i * step, step).view(dtype).reshape(shape[1:])
        field = field.read()
    frames = decode_npy_view(field)
    _check_frames(frames.shape, frames.dtype, "frames.npy")
    if frames.ndim == 3:
        frames = frames[None]
    return frames.shape[0], frames.__getitem__


def center_square(img: np.ndarray, side: int) -> np.ndarray:
    """The centre square of side = short side, resized to side x side (INTER_AREA down, LINEAR up).

    Where no resize is needed it is a view of `img`: the batch collation copies it once, into shared
    memory; a second copy here costs the data workers about a fifth of their speed (BENCHMARKS.md)."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = img[y0:y0 + s, x0:x0 + s]
    if s == side:
        return sq
    return cv2.resize(np.ascontiguousarray(sq), (side, side),
                      interpolation=cv2.INTER_AREA if s > side else cv2.INTER_LINEAR)


def choose_frames(k: int, key: str, seed: int, epoch: int, train: bool, per_step: int | None) -> list[int]:
    """Indices of the stored frames to use for one clip.

    One frame: training draws from (seed, epoch, key), so a new frame every epoch, reproducible;
    evaluation uses one fixed frame per clip (seed, key). `per_step=T`: T frames, sorted random draws
    (without replacement when K >= T) in training, evenly spaced in evaluation."""
    rng = seeded_rng(seed, epoch if train else "eval", key)
    if per_step is None:
        return [rng.randrange(k)]
    if not train:
        return [min(k - 1, int((i + 0.5) * k / per_step)) for i in range(per_step)]
    if k >= per_step:
        return sorted(rng.sample(range(k), per_step))
    return sorted(rng.randrange(k) for _ in range(per_step))


class StaticAdapter:
    """frames + spec.npy -> (spectrogram [1, S, S] float32, frame [side, side, 3] or [T, side, side, 3] uint8)."""

    @staticmethod
    def lazy(name: str) -> bool:
        """Members read on demand (local shards): the stored frames, of which one (or T) is used."""
        return name.endswith(".frames.npy") or is_jpeg_frame(name)

    @staticmethod
    def decode(sample: dict[str, Any], key: str, cfg: StreamConfig, epoch: int) -> tuple[Tensor, Tensor]:
        stored, frame = frame_reader(sample)
        meta = sample.get("json")
        count = real_frame_count(meta.read() if isinstance(meta, MemberSlice) else meta, stored)
        per_step = cfg.time_steps if cfg.frames_per_step else None
        fresh = cfg.train and (per_step is not None or cfg.train_frame == "per-epoch")  # else the clip's one frame
        idx = choose_frames(count, key, cfg.seed, epoch, fresh, per_step)
        side = cfg.frame_side
        if per_step is None:
            visual = center_square(frame(idx[0]), side)  # [side, side, 3]
            if not visual.flags.writeable:  # a view of the shard's bytes (streamed, not local)
                visual = visual.copy()
        else:
            visual = np.stack([center_square(frame(i), side) for i in idx])  # [T, side, side, 3]
        spec = decode_npy_view(sample["spec.npy"])
        _check_spec(spec)
        s = cfg.image_size
        spec = resize_spectrogram(spec, s, cfg.spec_resize)
        if not np.isfinite(spec).all():  # one such sample turns the loss, and then every weight, into NaN
            raise FieldError("spec.npy holds NaN or infinite values")
        return torch.from_numpy(spec)[None], torch.from_numpy(visual)


class EventAdapter:
    """visual.npy + audio.npy -> (audio [T, 64], visual [T, 2, 28, 28]) float32, bins summed down to T."""

    @staticmethod
    def lazy(name: str) -> bool:
        return False

    @staticmethod
    def decode(sample: dict[str, Any], key: str, cfg: StreamConfig, epoch: int) -> tuple[Tensor, Tensor]:
        visual, audio = decode_npy_view(sample["visual.npy"]), decode_npy_view(sample["audio.npy"])
        t = cfg.time_steps
        if visual.shape[1:] != (2, 28, 28) or audio.shape[1:] != (64,) or len(visual) != len(audio) or \
                not visual.size or len(visual) % t:
            raise FieldError(f"visual.npy {visual.shape} and audio.npy {audio.shape} are not [bins, 2, 28, 28] and "
                             f"[bins, 64] with bins a multiple of T={t}")
        if visual.dtype.kind != "u" or audio.dtype.kind != "u":  # counts: a float could be NaN, an int negative
            raise FieldError(f"visual.npy ({visual.dtype}) and audio.npy ({audio.dtype}) are not event counts "
                             "(unsigned integers; stored as uint16)")
        visual, audio = visual.astype(np.float32), audio.astype(np.float32)
        if visual.shape[0] != t:
            g = visual.shape[0] // t
            visual = visual.reshape(t, g, *visual.shape[1:]).sum(1)
            audio = audio.reshape(t, g, *audio.shape[1:]).sum(1)
        return torch.from_numpy(audio), torch.from_numpy(visual)


#: The adapter of each kind of data (`avdata.shards.manifest.data_kind`).
ADAPTERS: dict[str, type[StaticAdapter] | type[EventAdapter]] = {"static": StaticAdapter, "events": EventAdapter}
