"""A PNG contact sheet of a shards folder: one row per class, the first N samples of each class.

Each cell shows the sample's visual field and its audio field side by side, titled with the class name
and the sample key. Fields are drawn by kind, found from their shape and dtype (any recipe works):

- video frames [K,H,W,3] uint8 (frames.npy, or the K members frames.<i>.jpg): the middle frame; an image [H,W,3]: as is;
- DVS events [T,2,H,W] counts (channel 0 OFF, 1 ON): summed over T, ON minus OFF in red/blue;
- a spectrogram [F,T] float: an image with a colormap, low frequencies at the bottom;
- cochlea events [T,C] counts: channels up, time along, as an image.

Samples are chosen deterministically: the first N of each class in shard order, from the split asked
for, or else from train, then the other splits in manifest order, so that every class with a sample
anywhere is shown. The grid is as wide as the most samples a class shows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from avdata.atomic import atomic_open
from avdata.errors import AvdataError, FieldError
from avdata.pulled_splits import not_pulled, require_shards
from avdata.samples import iter_samples, label_of
from avdata.shards.location import open_location
from avdata.shards.manifest import Manifest
from avdata.shards.frames import JPEG_FRAMES, group_jpeg_frames, real_frame_count
from avdata.shards.jpeg import decode_jpeg
from avdata.shards.npy import decode_npy

CELL_W_IN = 1.7  # inches per panel (a cell is two panels)
ROW_H_IN = 1.9
HEADER_IN = 0.5
DPI = 100
#: Bounds on what is drawn, whatever a manifest claims (a 5,000-class sheet takes minutes and gigabytes).
MAX_SHEET_CLASSES = 64
MAX_PER_CLASS = 16

log = logging.getLogger("avdata.contact_sheet")

VISUAL_KINDS = ("frames", "image", "events_visual")
AUDIO_KINDS = ("spectrogram", "events_audio")


def field_kind(name: str, arr: np.ndarray) -> str:
    """How to draw an array field: frames, image, events_visual, spectrogram, events_audio or other."""
    stem = name[: -len(".npy")] if name.endswith(".npy") else name
    if arr.dtype.kind not in "biuf":
        return "other"
    if arr.ndim == 4 and arr.shape[1] == 2 and arr.shape[-1] not in (3, 4):
        return "events_visual"
    if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):
        return "frames"
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return "image"
    if arr.ndim == 2:
        if "spec" in stem or "mel" in stem:
            return "spectrogram"
        return "spectrogram" if arr.dtype.kind == "f" else "events_audio"
    return "other"


def pick_fields(arrays: dict[str, np.ndarray]) -> tuple[str | None, str | None]:
    """(visual field, audio field) of a sample: the first array field of each kind, by field order."""
    visual = audio = None
    for name, arr in arrays.items():
        kind = field_kind(name, arr)
        if visual is None and kind in VISUAL_KINDS:
            visual = name
        elif audio is None and kind in AUDIO_KINDS:
            audio = name
    return visual, audio


def _draw(ax, name: str, arr: np.ndarray) -> None:
    kind = field_kind(name, arr)
    if kind == "frames":
        img = arr[arr.shape[0] // 2]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", interpolation="nearest")
        else:
            ax.imshow(_as_rgb(img), interpolation="nearest")
        label = f"frame {arr.shape[0] // 2 + 1} of {arr.shape[0]}"
    elif kind == "image":
        ax.imshow(_as_rgb(arr), interpolation="nearest")
        label = "image"
    elif kind == "events_visual":
        summed = arr.astype(np.float64).sum(axis=0)
        diff = summed[1] - summed[0]  # ON minus OFF
        lim = float(np.abs(diff).max()) or 1.0
        ax.imshow(diff, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
        label = "DVS events, ON - OFF"
    elif kind == "spectrogram":
        spec = arr.astype(np.float64)
        finite = spec[np.isfinite(spec)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1,
                  interpolation="nearest")
        label = f"spectrogram {arr.shape[0]} x {arr.shape[1]}"
    elif kind == "events_audio":
        ax.imshow(arr.T.astype(np.float64), origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
        label = "cochlea events, ch x T"
    else:  # pragma: no cover - pick_fields only hands drawable kinds
        return
    ax.set_xlabel(label, fontsize=6, labelpad=1)


def _fit(text: str, chars: int) -> str:
    """The text cut to `chars` characters with an ellipsis, so a long class name or key stays in its cell."""
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _as_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img[..., :3]
    img = img[..., :3].astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def choose_samples(spec: str | Path, per_class: int, split: str | None = None
                   ) -> tuple[Manifest, str, list[list[tuple[str, dict[str, np.ndarray], str]]]]:
    """(manifest, splits drawn from, rows): rows[class] = [(key, {field: array}, split)], its first
    `per_class` samples of `split`, or (split None) of train and then the other splits in turn."""
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise AvdataError(f"--show must be 1 to {MAX_PER_CLASS} samples per class, not {per_class}")
    loc = open_location(spec)
    m = loc.manifest
    if not m.splits:
        raise AvdataError(f"{loc.shown}: the manifest lists no splits")
    if split is not None:
        m.split(split)  # an unknown split is named with the ones there are
        order = [split]
        require_shards(loc, order)  # not pulled, or a shard gone: named, not a bare OSError
    else:  # train first, then manifest order; not the splits a `pull --split` left out
        absent = not_pulled(loc)
        order = sorted((n for n in m.splits if n not in absent), key=lambda name: name != "train")
    classes = m.classes[:MAX_SHEET_CLASSES]  # a manifest may claim any number: draw a bounded sheet
    rows: list[list[tuple[str, dict[str, np.ndarray], str]]] = [[] for _ in classes]
    used: list[str] = []
    for name in order:
        counts = m.split(name).class_counts
        want = [min(per_class - len(r), int(counts.get(c, per_class))) for r, c in zip(rows, classes)]
        if sum(max(w, 0) for w in want) == 0:
            continue
        used.append(name)
        taken = [0] * len(classes)
        for _file, key, fields in iter_samples(loc, name):
            label = label_of(fields)
            if label is None or not 0 <= label < len(classes) or taken[label] >= want[label]:
                continue
            rows[label].append((key, _arrays(fields), name))
            taken[label] += 1
            if all(t >= w for t, w in zip(taken, want)):
                break
    return m, "+".join(used or order[:1]), rows


def _arrays(fields: dict[str, bytes]) -> dict[str, np.ndarray]:
    """The sample's npy fields and its JPEG frames as arrays, the frames cut to the clip's own (json
    num_frames: the K stored slots repeat a short clip's last frame); an undecodable field is drawn as missing."""
    arrays = {}
    for name, data in group_jpeg_frames(fields).items():
        if name.endswith(".npy") or name == JPEG_FRAMES:
            try:
                if name == JPEG_FRAMES:
                    arr = _middle_jpeg_frame(data[:_own_frames(fields.get("json"), len(data))])
                else:
                    arr = decode_npy(data)
                    if field_kind(name, arr) == "frames":
                        arr = arr[:_own_frames(fields.get("json"), arr.shape[0])]
            except Exception:  # an undecodable field is drawn as missing
                continue
            if arr.size:  # so is an empty one (no frame or pixel to draw)
                arrays[name] = arr
    return arrays


def _own_frames(meta_json: Any, stored: int) -> int:
    """The clip's own frames of the `stored` ones; all of them when its json cannot say (inspect's table
    reports that json; its frames are still drawn)."""
    try:
        return real_frame_count(meta_json, stored)
    except FieldError:
        return stored


def _middle_jpeg_frame(frames: list[bytes]) -> np.ndarray:
    """[K, H, W, 3] whose every frame is the middle one, the only one drawn: one decode, one frame held
    (a broadcast view), however many and large the frames are."""
    mid = decode_jpeg(frames[len(frames) // 2])
    return np.broadcast_to(mid, (len(frames), *mid.shape))


def contact_sheet(spec: str | Path, out_png: str | Path, per_class: int = 2, split: str | None = None) -> Path:
    """Write `draw_sheet`'s figure as a PNG (atomically, no timestamp: the same shards give the same bytes)."""
    fig = draw_sheet(spec, per_class, split)
    out_png = Path(out_png)
    with atomic_open(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None})
    return out_png


def draw_sheet(spec: str | Path, per_class: int = 2, split: str | None = None) -> Any:
    """The matplotlib Figure of the first `per_class` samples of each class of `split` (default: train, then
    the others).

    Rows are classes, columns samples; each cell shows the visual and the audio field side by side with
    the class name, split and key. The figure is (2 * S * 1.7) x (0.5 + 1.9 * classes) inches at 100 dpi,
    S the most samples any class shows (at most `per_class`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    manifest, split, rows = choose_samples(spec, per_class, split)
    classes = manifest.classes[:MAX_SHEET_CLASSES]
    shown = "" if len(manifest.classes) <= MAX_SHEET_CLASSES else (
        f" (the first {MAX_SHEET_CLASSES} of {len(manifest.classes):,} classes)")
    if shown:
        log.warning("contact sheet: drawing only the first %d of %d classes", MAX_SHEET_CLASSES,
                    len(manifest.classes))
    # as many cell pairs across as the fullest row shows: no blank columns when classes have fewer samples
    per_row = max([len(r) for r in rows] + [1])
    n_rows, n_cols = max(1, len(classes)), 2 * per_row
    # rounded: 0.5 + 3 * 1.9 is 6.1999..., which matplotlib before 3.11 truncated to 619 pixels, not 620
    width, height = round(n_cols * CELL_W_IN, 6), round(HEADER_IN + n_rows * ROW_H_IN, 6)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.04, top=1 - HEADER_IN / height,
                        wspace=0.15, hspace=0.55)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    per_pair = int(2 * CELL_W_IN * 0.9 * 72 / (0.62 * 7))  # characters of a 7 pt label across a cell's two panels
    across = per_pair * per_row * 7 // 8  # the 8 pt title spans every cell
    fig.suptitle(f"{_fit(manifest.dataset, across)}: up to {per_class} per class\n"
                 f"{_fit('from ' + split.replace('+', ', ') + shown, across)}",
                 fontsize=8, y=1 - 0.06 / height, va="top", parse_math=False)  # names from the manifest: text
    for r, cname in enumerate(classes):
        for c in range(per_row):
            ax_v, ax_a = axes[r][2 * c], axes[r][2 * c + 1]
            for ax in (ax_v, ax_a):
                ax.set_xticks([])
                ax.set_yticks([])
            if c >= len(rows[r]):
                for ax in (ax_v, ax_a):
                    ax.set_axis_off()
                if c == 0:
                    ax_v.text(0.0, 0.5, f"{_fit(f'{r}: {cname}', per_pair)}\n(no samples)", fontsize=7,
                              transform=ax_v.transAxes, va="center", parse_math=False)
                continue
            key, arrays, where = rows[r][c]
            visual, audio = pick_fields(arrays)
            for ax, name in ((ax_v, visual), (ax_a, audio)):
                if name is None:
                    ax.text(0.5, 0.5, "no field", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                else:
                    _draw(ax, name, arrays[name])
            # two short lines over the cell's pair of panels, so that they fit it even at --show 1
            ax_v.set_title(f"{_fit(f'{r}: {cname} ({where})', per_pair)}\n{_fit(key, per_pair)}", fontsize=7,
                           loc="left", pad=3, parse_math=False)
    return fig
