"""AVE (Audio-Visual Event dataset, Tian et al., ECCV 2018): 4,143 ten-second YouTube clips in 28 event
classes, as MP4 files (H.264 video and AAC audio in the same container) named `<VideoID>.mp4`.

Raw folder: the unpacked `AVE.zip` (the videos may sit in any sub-folder) with `trainSet.txt`,
`valSet.txt`, `testSet.txt` (the official splits, needed) and `Annotations.txt` anywhere in it (the
shallowest copy of each is used); or `AVE.zip` itself, or a folder holding it beside the lists, which is
then unpacked safely into the output's state folder first.

Each row of a split list becomes one sample: labels are the row's category, indexed in the sorted order of
the 28 real category names (`annotations.CATEGORIES`: Accordion 0, Acoustic guitar 1, ..., Violin,
fiddle 27). The key is the VideoID; a video listed under several categories (45 of the real ones) gives
one sample per category, keyed `<VideoID>-c<class index, 2 digits>`. Within a split, samples are written
in the engine's seeded random order (`--seed`), not the lists' order, which is grouped by category.

Frames: by default the first frame of each of the clip's ten seconds (the first frame at or after
0 s, 1 s, ..., 9 s from the first frame), as CREMA-D's reference keeps one frame per second; a frame at or
after 10 s (a 25 fps clip holds one at exactly 10.0 s) lies outside AVE's ten annotated one-second
segments and is not kept. `--frames K` keeps K evenly spaced frames of the whole clip instead. Every
sample stores the same number of frames (10, or K), a shorter clip repeating its last one (json
`num_frames`: how many are its own; `avdata.shards.frames`). Frames
come from `avdata.media.video.read_frames`, which decodes H.264 with B-frames from the start up to the last kept
frame (its key-frame shortcut is only taken for codecs without frame reordering).

Audio: the MP4's AAC track, decoded with PyAV (`audio_track`), mixed down, then `avdata.media.audio`'s
spectrogram presets (`--spectrogram reference|logmel`), the same as for CREMA-D's WAV files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avdata.option_fields import opt
from avdata.datasets.ave.annotations import ANNOTATIONS, CATEGORIES, SPLIT_FILES, TEXT_FILES, read_rows
from avdata.datasets.ave.audio_track import audio_track_features
from avdata.fetch.unpack import unpack_zip
from avdata.datasets.options import frame_format_option, jpeg_quality_option, spec_dtype_option, spectrogram_option
from avdata.datasets.recipe import (SCMRL_CITATION, CardInfo, ItemContext, Plan, Recipe, SkipSample, WorkItem,
                                    ModelDefaults, cls_bytes, sample_json, source_records)
from avdata.errors import AvdataError
from avdata.media.audio import SPEC_PRESETS, spectrogram_bins
from avdata.media.video import read_frames
from avdata.datasets.options import max_decoded_mb_option
from avdata.media.budget import mb_bytes
from avdata.shards.frames import frame_counts, frame_fields, frames_feature, spec_field, spec_feature

#: AVE clips are ten seconds long, annotated in ten one-second segments.
CLIP_SECONDS = 10
ZIP_NAME = "AVE.zip"

CITATION = """@inproceedings{tian2018ave,
  title={Audio-Visual Event Localization in Unconstrained Videos},
  author={Tian, Yapeng and Shi, Jing and Li, Bochen and Duan, Zhiyao and Xu, Chenliang},
  booktitle={European Conference on Computer Vision (ECCV)}, year={2018}
}"""


@dataclass
class AveOptions:
    """Options that shape the output (all recorded in the manifest); the flags of `avdata prepare ave`."""

    frames: int | None = opt(None, min=1, help="Store K evenly spaced frames per clip instead of the first "
                             "frame of each of its 10 seconds.")
    short_side: int = opt(256, min=16, help="Resize stored frames so the short side is this many pixels.")
    spectrogram: str = spectrogram_option()
    frame_format: str = frame_format_option()
    jpeg_quality: int = jpeg_quality_option()
    spec_dtype: str = spec_dtype_option()
    max_decoded_mb: int = max_decoded_mb_option()
    seed: int = opt(42, help="Seed of the random order each split's samples are written in (the splits "
                    "themselves are AVE's official lists; recorded in manifest.json).")


def wanted_member(name: str) -> bool:
    """Zip members to unpack: the videos and the text lists (not, e.g., macOS resource forks)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and "__MACOSX/" not in name and (
        base.lower().endswith(".mp4") or base in TEXT_FILES)


def scan_raw(raw: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({VideoID: relative path of <VideoID>.mp4}, {list name: relative path}) of a raw tree; where a
    name occurs more than once the shallowest copy wins (then the first in sorted order). Hidden folders
    (the `.avdata` state of an output folder, for one) are not searched. A symbolic link to a folder counts
    as a file (as CREMA-D's listing does): the video reader's check then skips its clip naming what is there,
    where it would be a "missing video"."""
    videos: dict[str, tuple[int, str]] = {}
    texts: dict[str, tuple[int, str]] = {}
    for folder, dirs, files in os.walk(raw):
        linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # never descended into
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
        rel_dir = Path(folder).relative_to(raw)
        depth = len(rel_dir.parts)
        for name in sorted(files + linked):
            rel = (rel_dir / name).as_posix()
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".mp4":
                table, key = videos, stem
            elif name in TEXT_FILES:
                table, key = texts, name
            else:
                continue
            if key not in table or (depth, rel) < table[key]:
                table[key] = (depth, rel)
    return {k: v[1] for k, v in videos.items()}, {k: v[1] for k, v in texts.items()}


def missing_lists_message(raw: Path, missing: list[str]) -> str:
    return (f"{raw}: AVE's split list(s) {', '.join(missing)} not found; they come with AVE.zip and are in the "
            "authors' repository (https://github.com/YapengTian/AVE-ECCV18, folder data/): put trainSet.txt, "
            "valSet.txt and testSet.txt in the raw folder (or fetch everything with `avdata download ave`)")


def frame_slots(options: AveOptions) -> int:
    """K, the frames every sample stores: --frames, else one per second of the ten-second clip."""
    return options.frames if options.frames is not None else CLIP_SECONDS


class AveRecipe(Recipe):
    name = "ave"
    classes = CATEGORIES
    options_type = AveOptions
    # Not in the paper: its CREMA-D settings (the same frame + spectrogram inputs), stated rather than implied
    model_defaults = ModelDefaults(embed_dim=256, tau_s=0.07, time_steps=4, image_size=128)
    summary = "AVE: MP4 video frames + a spectrogram of its AAC track per listed row, 28 event classes."
    raw_help = ("The folder AVE.zip unpacks to (videos in any sub-folder) with trainSet.txt, valSet.txt, "
                "testSet.txt (the official splits) and Annotations.txt; or AVE.zip itself, or a folder holding "
                "it beside the lists.")
    card = CardInfo(
        title="AVE audio-visual event shards (avdata)",
        description=(
            "AVE (Audio-Visual Event dataset): 4,143 annotated ten-second YouTube clips (4,097 distinct videos) "
            "of 28 event classes (musical instruments, vehicles, animals, speech and more), each with the one-"
            "second segments of its event annotated, in the official train/val/test split. Each sample holds "
            "video frames (one per second) and a log spectrogram of the clip's own audio track, prepared for "
            "audio-visual classification as in the balanced multimodal learning papers and S-CMRL (arXiv "
            "2502.12488)."
        ),
        license=("The AVE annotations are published by the authors for research use; the videos come from "
                 "YouTube and remain under their uploaders' terms. Check both before redistributing shards."),
        license_id="other",
        license_name="ave-research-use",
        license_link="https://github.com/YapengTian/AVE-ECCV18",
        homepage="https://github.com/YapengTian/AVE-ECCV18",
        citation=CITATION + "\n" + SCMRL_CITATION,
        tags=("audio-visual", "event-classification", "ave"),
    )

    def prepare_raw(self, raw: Path, workdir: Path, options: AveOptions) -> Path:
        """AVE.zip (or a folder holding it and no videos) -> its videos and lists unpacked into `workdir`."""
        if raw.is_file():
            zpath, lists_from = raw, raw.parent
        elif (raw / ZIP_NAME).is_file() and not scan_raw(raw)[0]:
            zpath, lists_from = raw / ZIP_NAME, raw
        else:
            return raw
        target = workdir / "ave"
        unpack_zip(zpath, target, keep=wanted_member)
        for name in TEXT_FILES:  # lists downloaded beside the zip take precedence over the zip's copies
            if (lists_from / name).is_file():
                shutil.copyfile(lists_from / name, target / name)
        return target

    def plan(self, raw: Path, options: AveOptions) -> Plan:
        if options.spectrogram not in SPEC_PRESETS:
            raise AvdataError(f"--spectrogram must be one of {', '.join(SPEC_PRESETS)}, got {options.spectrogram!r}")
        videos, texts = scan_raw(raw)
        missing = [name for name in SPLIT_FILES.values() if name not in texts]
        if missing:
            raise AvdataError(missing_lists_message(raw, missing))
        if not videos:
            raise AvdataError(f"{raw}: no <VideoID>.mp4 files found; pass the folder AVE.zip unpacks to, or the "
                              "zip itself (fetch it with `avdata download ave`, see its --help)")
        rows = {split: read_rows(raw / texts[name], texts[name]) for split, name in SPLIT_FILES.items()}
        listed: dict[str, int] = {}
        for split_rows in rows.values():
            for r in split_rows:
                listed[r.video_id] = listed.get(r.video_id, 0) + 1
        items, skipped, seen = [], [], set()
        for split, name in SPLIT_FILES.items():
            for r in rows[split]:
                key = r.video_id if listed[r.video_id] == 1 else f"{r.video_id}-c{r.label:02d}"
                where = f"{texts[name]}:{r.line}"
                if key in seen:
                    skipped.append({"key": key, "split": split, "path": where,
                                    "reason": "duplicate row: this video and category are listed already"})
                    continue
                seen.add(key)
                if r.video_id not in videos:
                    skipped.append({"key": key, "split": split, "path": f"{r.video_id}.mp4",
                                    "reason": "missing video: file not found in the raw folder"})
                    continue
                meta = {"video_id": r.video_id, "category": r.category, "quality": r.quality,
                        "event_start_s": r.start_s, "event_end_s": r.end_s, "list": where}
                items.append(WorkItem(key, split, r.label, {"video": videos[r.video_id], "list": texts[name]}, meta))
        items.sort(key=lambda it: (list(SPLIT_FILES).index(it.split), it.key))
        notes: dict[str, Any] = {"rows_listed": {s: len(r) for s, r in rows.items()}, "videos_found": len(videos),
                                 "lists": {name: texts[name] for name in TEXT_FILES if name in texts}}
        if ANNOTATIONS in texts:
            notes["annotation_rows"] = len(read_rows(raw / texts[ANNOTATIONS], texts[ANNOTATIONS]))
        return Plan(items, skipped, notes)

    def features(self, options: AveOptions) -> dict[str, dict[str, Any]]:
        frames = ("the first frame of each of the clip's 10 seconds (at or after 0, 1, ..., 9 s)"
                  if options.frames is None else f"{options.frames} evenly spaced frames of the clip")
        bins, rate = spectrogram_bins(options.spectrogram), SPEC_PRESETS[options.spectrogram]["sr"]
        return {
            "cls": {"dtype": "int", "shape": [], "meaning": "class index in sorted category order: "
                    + ", ".join(f"{c} {i}" for i, c in enumerate(CATEGORIES))},
            "json": {"dtype": "json", "shape": [], "meaning": "video id, label, category, split, quality, event "
                     "start and end (s), split list row, sources [{file, sha256}], num_frames, "
                     "frames_dropped, video and audio facts; the same fields in every sample"},
            **frames_feature(options.frame_format, options.jpeg_quality, [frame_slots(options), "H", "W", 3],
                             f"RGB video frames, {frames}, resized to short side {options.short_side}"),
            **spec_feature(options.spec_dtype, bins,
                           f"{options.spectrogram} log spectrogram of the MP4's AAC track (mixed down, "
                           f"resampled to {rate:,} Hz; see avdata.media.audio.SPEC_PRESETS)"),
        }

    @staticmethod
    def process(item: WorkItem, ctx: ItemContext) -> dict[str, bytes]:
        opts: AveOptions = ctx.options
        video = ctx.raw / item.sources["video"]
        mode = "per_second" if opts.frames is None else "even"
        budget = mb_bytes(opts.max_decoded_mb)
        frames, times, vinfo = read_frames(video, mode=mode, k=opts.frames, short_side=opts.short_side,
                                           max_bytes=budget)
        if opts.frames is None:
            inside = [i for i, t in enumerate(times) if t < CLIP_SECONDS - 1e-6]
            frames, times = frames[inside], [times[i] for i in inside]
        if frames.shape[0] == 0:
            raise SkipSample("video decoded to zero frames", item.sources["video"])
        slots = frame_slots(opts)
        spec, ainfo = audio_track_features(video, preset=opts.spectrogram, max_bytes=budget)
        if spec.shape[1] == 0:
            raise SkipSample("audio track too short for one spectrogram frame", item.sources["video"])
        meta = {
            "clip": item.key,
            **item.meta,
            "label": item.label,
            "label_name": item.meta["category"],
            "split": item.split,
            "sources": source_records(ctx.source_sha256),
            **frame_counts(frames.shape[0], slots),
            "video": {"codec": vinfo.codec, "width": vinfo.width, "height": vinfo.height, "fps": round(vinfo.fps, 4),
                      "duration_s": round(vinfo.duration_s, 4),
                      "frame_times_s": [round(t, 4) for t in times[:slots]]},
            "audio": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ainfo.items()},
        }
        return {
            "cls": cls_bytes(item.label),
            "json": sample_json(meta),
            **frame_fields(frames, opts.frame_format, opts.jpeg_quality, slots),
            **spec_field(spec, opts.spec_dtype),
        }


RECIPE = AveRecipe
